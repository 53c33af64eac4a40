"""Before/after: the same prompts through two models, side by side.

`compare_batch` runs the run's validation rows (exactly as training rendered
them, from the run's `data/eval.jsonl`) or a prompt file through two targets,
one model loaded at a time so that two large models never share the GPU, and
writes `report.jsonl` + `report.md` (prompt, reference, output A, output B).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunewiz.core.chat import ChatSession, GenerationSettings, unload
from tunewiz.core.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Item:
    prompt: str  # what the user asked, shown in the report
    reference: str | None = None  # the dataset's answer, if known
    input_ids: list[int] | None = None  # the prompt exactly as training rendered it
    system: str | None = None


@dataclass
class Row:
    prompt: str
    reference: str | None
    output_a: str
    output_b: str
    tokens_a: int = 0
    tokens_b: int = 0
    extra: dict = field(default_factory=dict)


def load_prompt_file(path: str | Path) -> list[Item]:
    """Prompts (with a reference answer when the row has one) from any file the data loader
    reads; the one reader is `tunewiz.core.eval.prompts.load_prompts`, which reports every bad row."""
    from tunewiz.core.eval.prompts import load_prompts

    items = []
    for it in load_prompts(path):
        msgs = it.messages or []
        system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else None
        items.append(Item(it.prompt, it.reference, system=system))
    return items


def validation_items(run_dir: Path, tokenizer: Any, split: str = "eval") -> list[Item]:
    """The run's validation rows (or `split="train"`: its training rows): prompt = tokens
    before the first trained token, reference = that answer."""
    path = Path(run_dir) / "data" / f"{split}.jsonl"
    if not path.is_file():
        raise UserError(
            f"this run has no {'validation' if split == 'eval' else 'training'} rows saved",
            where=str(path),
            hint="pass --prompts FILE (any data file; .txt: one prompt per line), or train with "
            "data.validation_split (e.g. 0.1) or data.validation_file to keep validation rows",
        )
    items = []
    for ids, labels in _eval_rows(path):
        first = next((i for i, lab in enumerate(labels) if lab != -100), None)
        if first is None:
            continue  # nothing trained in this row (text task rows have no prompt)
        end = next((i for i in range(first, len(labels)) if labels[i] == -100), len(labels))
        prompt_ids = ids[:first]
        items.append(
            Item(
                prompt=_last_user_turn(
                    tokenizer.decode(prompt_ids, skip_special_tokens=False), tokenizer
                ),
                reference=tokenizer.decode(ids[first:end], skip_special_tokens=True).strip(),
                input_ids=prompt_ids,
            )
        )
    return items


def _eval_rows(path: Path) -> Iterator[tuple[list[int], list[int]]]:
    """(input_ids, labels) of each row of a run's data/eval.jsonl; a damaged line is a
    UserError naming it (the folder is another process's output, maybe cut short)."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
                ids, labels = row["input_ids"], row["labels"]
                ok = all(type(x) is int for x in [*ids, *labels]) and len(ids) == len(labels)
            except (ValueError, RecursionError, TypeError, KeyError):
                ok = False
            if not ok:
                raise UserError(
                    "damaged validation row: not the input_ids/labels tunewiz wrote",
                    where=f"{path}:{lineno}",
                    hint="pass --prompts FILE to compare on your own prompts instead",
                )
            yield ids, labels


def _last_user_turn(rendered: str, tokenizer: Any) -> str:
    """The readable part of a rendered prompt: its last user turn when the template marks one."""
    for marker in (
        "<|im_start|>user\n",
        "<|start_header_id|>user<|end_header_id|>\n\n",
        "<start_of_turn>user\n",
    ):
        if marker in rendered:
            rendered = rendered.rsplit(marker, 1)[1]
            break
    for special in tokenizer.all_special_tokens + ["<|im_start|>", "<|im_end|>"]:
        rendered = rendered.replace(special, "")
    return rendered.strip().removesuffix("assistant").strip()


def generate_all(
    session: ChatSession,
    items: list[Item],
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[str, int]]:
    """One fresh conversation per item (no history leaks between prompts)."""
    out = []
    for n, item in enumerate(items):
        session.reset()
        session.set_system(item.system)
        reply = (
            session.complete_ids(item.input_ids) if item.input_ids else session.reply(item.prompt)
        )
        out.append((reply.text.strip(), reply.tokens))
        if progress:
            progress(n + 1, len(items))
    session.reset()
    return out


def compare_batch(
    run: str,
    *,
    checkpoint: str | None = None,
    against: str = "base",
    prompts_file: str | Path | None = None,
    out_dir: str | Path | None = None,
    settings: GenerationSettings | None = None,
    limit: int | None = None,
    runs_dir: str | Path = "runs",
    device: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    trust_remote_code: bool = False,
) -> tuple[Path, list[Row]]:
    """Run the validation rows (or a prompt file) through the run's checkpoint (A) and `against` (B).

    Decoding is greedy unless `settings` say otherwise, so the two columns differ
    only by the weights. Returns the report folder and the rows.
    """
    from tunewiz.core.loading import load_for_chat
    from tunewiz.core.models import find_run

    run_dir = find_run(run, runs_dir)
    if run_dir is None:
        raise UserError(
            f"no run named {run!r}", where=str(runs_dir), hint="see `tunewiz runs` for the runs"
        )
    settings = settings or GenerationSettings(greedy=True)
    loaded_a = load_for_chat(
        str(run_dir), checkpoint, device=device, trust_remote_code=trust_remote_code
    )
    label_a = loaded_a.label
    if prompts_file:
        items = load_prompt_file(prompts_file)
    else:
        items = validation_items(run_dir, loaded_a.tokenizer)
    if limit:
        items = items[:limit]
    if not items:
        raise UserError("no prompts to compare", where=str(prompts_file or run_dir))

    def step(label: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: progress(label, done, total)) if progress else None

    outputs_a = generate_all(ChatSession(loaded_a, settings=settings), items, step(label_a))
    unload(loaded_a)
    loaded_b = load_for_chat(
        str(run_dir), against, device=device, trust_remote_code=trust_remote_code
    )
    label_b = loaded_b.label
    outputs_b = generate_all(ChatSession(loaded_b, settings=settings), items, step(label_b))
    unload(loaded_b)

    rows = [
        Row(item.prompt, item.reference, a, b, ta, tb)
        for item, (a, ta), (b, tb) in zip(items, outputs_a, outputs_b, strict=True)
    ]
    out = (
        Path(out_dir)
        if out_dir
        else run_dir / "compare" / f"{Path(label_a).name.split()[-1]}-vs-{against}"
    )
    write_report(out, rows, label_a, label_b, settings)
    return out, rows


def write_report(
    out: Path, rows: list[Row], label_a: str, label_b: str, settings: GenerationSettings
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "report.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            record = asdict(row)
            record.pop("extra")
            record.update(model_a=label_a, model_b=label_b)
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    exact_a = sum(1 for r in rows if r.reference is not None and r.output_a == r.reference.strip())
    exact_b = sum(1 for r in rows if r.reference is not None and r.output_b == r.reference.strip())
    with_ref = sum(1 for r in rows if r.reference is not None)
    lines = [
        f"# Comparison: {label_a} (A) vs {label_b} (B)",
        "",
        f"{len(rows)} prompts; decoding: "
        + (
            "greedy"
            if settings.greedy or settings.temperature == 0
            else f"sampled, seed {settings.seed}"
        )
        + f", max {settings.max_new_tokens} new tokens.",
    ]
    if with_ref:
        lines.append(
            f"Exact match with the reference: A {exact_a}/{with_ref}, B {exact_b}/{with_ref}."
        )
    for n, row in enumerate(rows, 1):
        lines += ["", f"## {n}", "", "**Prompt**", "", _quote(row.prompt)]
        if row.reference is not None:
            lines += ["", "**Reference**", "", _quote(row.reference)]
        lines += ["", f"**A: {label_a}**", "", _quote(row.output_a)]
        lines += ["", f"**B: {label_b}**", "", _quote(row.output_b)]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _quote(text: str) -> str:
    """Markdown blockquote; model text is kept literal (no markdown rendering surprises in tables)."""
    return "\n".join("> " + line for line in (text or "(empty)").splitlines()) or "> (empty)"
