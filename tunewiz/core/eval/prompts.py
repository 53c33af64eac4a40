"""What to evaluate on: a prompts file in any format the data loader reads, or a run's rows.

A file row may carry a reference answer (any training format: Alpaca, prompt/response,
OpenAI messages, ShareGPT, ...) or be a prompt alone (`{"prompt": ...}`, or a line of
a .txt file). Every bad row is reported with its place, all at once, like `tunewiz data
inspect`. A run's own rows come as the token ids training used (`tunewiz.core.compare`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewiz.core.config import SAMPLE_HELDOUT_NAME
from tunewiz.core.data.formats import detect_format, normalize
from tunewiz.core.data.load import Source, read_source, resolve_sources
from tunewiz.core.data.report import Problem
from tunewiz.core.errors import UserError

PROMPT_KEYS = ("prompt", "instruction", "question")
REFERENCE_KEYS = ("reference", "response", "output", "answer", "completion", "chosen")
CHAT_KEYS = ("messages", "conversations")
MAX_SHOWN = 30  # problems listed in the message; all are counted


@dataclass
class EvalItem:
    prompt: str  # the last user turn, as shown to people
    reference: str | None = None
    messages: list[dict] | None = None  # the conversation before the answer (system included)
    input_ids: list[int] | None = None  # the prompt exactly as training rendered it
    split: str = "heldout"  # heldout | train
    where: str = ""  # file:line, or the run's data file and row
    extra: dict = field(default_factory=dict)


class PromptFileError(UserError):
    """A prompts file with bad rows; `problems` holds every one with its place."""

    def __init__(self, path: str, problems: list[Problem]):
        shown = "\n".join(f"  {p.where}: {p.message}" for p in problems[:MAX_SHOWN])
        more = f"\n  ... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
        super().__init__(
            f"{len(problems)} bad row{'s' if len(problems) != 1 else ''} in the prompts file:\n"
            + shown
            + more,
            where=path,
            hint="fix or remove these rows; `tunewiz data inspect FILE` checks the whole file",
        )
        self.problems = problems


def _simple_row(row: dict) -> EvalItem | None:
    """A row with a prompt and either no answer or a `reference` (a column only eval files
    have; the data loader does not know it), else None: the data loader reads the rest."""
    answers = [k for k in REFERENCE_KEYS + CHAT_KEYS if k in row]
    if answers not in ([], ["reference"]):
        return None
    prompt = next(
        (row[k] for k in PROMPT_KEYS if isinstance(row.get(k), str) and row[k].strip()), None
    )
    if prompt is None:
        return None
    if isinstance(row.get("input"), str) and row["input"].strip():
        prompt = f"{prompt}\n\n{row['input']}"
    reference = row.get("reference")
    return EvalItem(prompt, reference if isinstance(reference, str) else None)


def _from_messages(msgs: list[dict], where: str) -> EvalItem:
    """Prompt = everything before the last assistant turn; reference = that turn."""
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    context = msgs[:last]
    user = next(m["content"] for m in reversed(context) if m["role"] == "user")
    return EvalItem(user, msgs[last]["content"], context, where=where)


def load_prompts(path: str | Path) -> list[EvalItem]:
    """Every row of the file as an EvalItem; PromptFileError listing every bad row."""
    text = str(path)
    if not Path(text).expanduser().exists() and text not in ("sample", SAMPLE_HELDOUT_NAME):
        raise UserError("prompts file not found", where=text)
    items: list[EvalItem] = []
    problems: list[Problem] = []
    # rows with answers, parsed once their format is known, then put back in file order
    pending: list[tuple[Source, int, dict, int]] = []
    for src in resolve_sources(text):
        for loc, row, problem in read_source(src, text_split="paragraph"):
            order = len(items) + len(pending)
            if problem is not None or row is None:
                problems.append(problem or Problem(src.where(loc), "unreadable", "unreadable row"))
            elif src.kind == "txt":  # one prompt per line
                lines = [ln.strip() for ln in str(row["text"]).splitlines() if ln.strip()]
                items += [EvalItem(ln, where=src.where(loc)) for ln in lines]
            elif (item := _simple_row(row)) is not None:
                item.where = src.where(loc)
                items.append(item)
            else:
                pending.append((src, loc, row, order))
    for order, item in _with_answers(pending, problems):
        items.insert(order, item)
    if problems:
        raise PromptFileError(text, problems)
    if not items:
        raise UserError("the prompts file has no prompts", where=text)
    return items


def _with_answers(pending: list, problems: list[Problem]) -> list[tuple[int, EvalItem]]:
    """(position in the file's order, item) for rows read through the data loader's formats."""
    if not pending:
        return []
    try:
        fmt, mapping, _ = detect_format([row for _, _, row, _ in pending[:200]], {})
    except UserError as exc:
        src, loc, _, _ = pending[0]
        problems.append(Problem(src.where(loc), "unknown_format", exc.message))
        return []
    items: list[tuple[int, EvalItem]] = []
    for src, loc, row, order in pending:
        norm, issues, _ = normalize(row, fmt, mapping)
        for fld, kind, message in issues:
            problems.append(Problem(src.where(loc, fld), kind, message))
        if norm is None:
            continue
        if "messages" not in norm:
            problems.append(Problem(src.where(loc), "no_prompt", "plain text has no prompt"))
            continue
        items.append((order, _from_messages(norm["messages"], src.where(loc))))
    return items


def run_items(run_dir: Path, tokenizer: Any, split: str) -> list[EvalItem]:
    """A run's validation (`heldout`) or training (`train`) rows, as training rendered them."""
    from tunewiz.core.compare import validation_items

    name = "eval" if split == "heldout" else "train"
    rows = validation_items(run_dir, tokenizer, name)
    return [
        EvalItem(
            r.prompt,
            r.reference,
            input_ids=r.input_ids,
            split=split,
            where=f"{run_dir.name}/data/{name}.jsonl:{n}",
        )
        for n, r in enumerate(rows, 1)
    ]


def sample(items: list[EvalItem], n: int, seed: int = 0) -> list[EvalItem]:
    """`n` items picked with a fixed seed (the same sample every time), in file order."""
    if n <= 0 or n >= len(items):
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]
