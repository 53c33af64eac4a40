"""Making more training rows: each question rephrased by a model, plus the reverse question.

`augment` reads a dataset the way training does, asks the model for `variants`
rephrasings of each row's question (one temperature each, cycling through
`temperatures`) and one reverse question (asking from the answer's side: "Who
founded X?" -> "What did Y found?"); the answer is kept. New rows are written in
the input's own format, each with `augmented_from` naming its source row, after
the same validation as training. Empty generations and duplicates are dropped and
counted. Rows are generated in batches; an interrupted run resumes: finished
source rows are listed in `<out>.done` and skipped, a half-written one is redone.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunewiz.core.config import DataConfig
from tunewiz.core.data.formats import detect_format, normalize
from tunewiz.core.data.load import resolve_sources
from tunewiz.core.data.pipeline import _read_ahead, _records
from tunewiz.core.errors import UserError

REPHRASE = (
    "Rewrite this question with different words, keeping exactly its meaning. "
    "Reply with the new question only.\n\nQuestion: {q}"
)
REVERSE = (
    "Here is a question and its answer.\nQuestion: {q}\nAnswer: {a}\n\n"
    "Write the reverse question: one that asks about the same fact from the answer's side. "
    "Reply with the question only."
)


@dataclass
class AugmentReport:
    rows_read: int = 0
    rows_skipped_done: int = 0  # finished by an earlier, interrupted run
    written: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # empty / duplicate / invalid
    seen: set = field(default_factory=set, repr=False)  # (source, question) already written


def augment(
    data: str,
    generate: Callable[[list[str], float], list[str]],
    out: str | Path,
    *,
    variants: int = 3,
    temperatures: tuple[float, ...] = (0.3, 0.7, 1.0),
    reverse: bool = True,
    batch_size: int = 8,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> AugmentReport:
    """Write new rows to `out` (JSON Lines); `generate(prompts, temperature)` returns one text each."""
    rows, fmt, mapping = _read(data, limit)
    out = Path(out)
    done = _resume(out)
    report = AugmentReport(rows_read=len(rows), rows_skipped_done=len(done & {w for w, *_ in rows}))
    todo = [r for r in rows if r[0] not in done]
    with open(out, "a", encoding="utf-8") as fh, open(_done_file(out), "a") as done_fh:
        for start in range(0, len(todo), batch_size):
            if cancel is not None and cancel.is_set():
                break
            batch = todo[start : start + batch_size]
            for (where, row, _q, _a), new in zip(batch, _variants(batch, generate, variants,
                                                  temperatures, reverse), strict=True):  # fmt: skip
                for kind, question in new:
                    made = _new_row(row, fmt, mapping, question, where, kind, report)
                    if made is not None:
                        fh.write(json.dumps(made, ensure_ascii=False) + "\n")
                        report.written += 1
                fh.flush()
                done_fh.write(where + "\n")
                done_fh.flush()
            if progress is not None:
                progress(min(start + batch_size, len(todo)), len(todo))
    return report


def _read(data: str, limit: int | None):
    """(where, raw row, question, answer) for every usable row; rows without both are skipped."""
    cfg = DataConfig(data=data)
    sources = resolve_sources(cfg.data)
    head, rest = _read_ahead(_records(sources, cfg.text_split))
    sample = [r[2] for r in head if r[2] is not None]
    if not sample:
        raise UserError("no readable row", where=data)
    fmt, mapping, _ = detect_format(sample, {})
    if fmt in ("text", "preference", "kto"):
        raise UserError(f"augment rephrases questions; {fmt} data has none to rephrase", where=data)
    rows = []
    for si, loc, row, _problem in [*head, *rest]:
        if row is None:
            continue
        norm, issues, _ = normalize(row, fmt, mapping)
        if norm is None or issues:
            continue
        msgs = norm["messages"]
        rows.append((sources[si].where(loc), row, msgs[-2]["content"], msgs[-1]["content"]))
        if limit is not None and len(rows) >= limit:
            break
    return rows, fmt, mapping


def _variants(batch, generate, variants: int, temperatures, reverse: bool) -> list[list]:
    """Per source row: [(kind, generated question), ...], one generate() call per kind."""
    out: list[list] = [[] for _ in batch]
    for v in range(variants):
        texts = generate(
            [REPHRASE.format(q=q) for _w, _r, q, _a in batch], temperatures[v % len(temperatures)]
        )
        for i, text in enumerate(texts):
            out[i].append((f"rephrase-{v}", text))
    if reverse:
        texts = generate([REVERSE.format(q=q, a=a) for _w, _r, q, a in batch], temperatures[0])
        for i, text in enumerate(texts):
            out[i].append(("reverse", text))
    return out


def _new_row(row: dict, fmt: str, mapping: dict, question: str, where: str, kind: str, report):
    """The source row with its question replaced, or None (counted) when it cannot be used."""
    question = _clean(question)
    if not question:
        return _drop(report, "empty")
    norm, _, _ = normalize(row, fmt, mapping)
    assert norm is not None  # _read kept only usable rows
    if question.lower() == norm["messages"][-2]["content"].strip().lower():
        return _drop(report, "duplicate")
    new = copy.deepcopy(row)
    _set_question(new, fmt, mapping, question)
    checked, issues, _ = normalize(new, fmt, mapping)
    if checked is None or issues:
        return _drop(report, "invalid")
    key = (where, question.lower())
    if key in report.seen:
        return _drop(report, "duplicate")
    report.seen.add(key)
    new["augmented_from"], new["augmentation"] = where, kind
    return new


def _drop(report: AugmentReport, why: str) -> None:
    report.dropped[why] = report.dropped.get(why, 0) + 1
    return None


def _clean(text: str) -> str:
    text = text.strip().splitlines()[0].strip() if text.strip() else ""
    for prefix in ("Question:", "Rephrased question:", "Reverse question:"):
        if text.lower().startswith(prefix.lower()):
            text = text[len(prefix) :].strip()
    return text.strip('"').strip()


def _set_question(row: dict, fmt: str, mapping: dict, question: str) -> None:
    if fmt == "alpaca":
        row[mapping.get("instruction", "instruction")] = question
        row.pop(mapping.get("input", "input"), None)  # the question now says it all
    elif fmt == "prompt_completion":
        row[mapping["prompt"]] = question
    else:  # openai / sharegpt: the last user turn
        turns = row[mapping.get("messages", "messages") if fmt == "openai" else "conversations"]
        user = [t for t in turns if str(t.get("role", t.get("from"))).lower() in ("user", "human")]
        user[-1]["content" if "content" in user[-1] else "value"] = question


def _done_file(out: Path) -> Path:
    return out.with_name(out.name + ".done")


def _resume(out: Path) -> set[str]:
    """Finished source rows; rows of a source that was cut short are removed (it is redone)."""
    done_path = _done_file(out)
    done = set(done_path.read_text().split("\n")) - {""} if done_path.is_file() else set()
    if out.is_file():
        lines = out.read_text(encoding="utf-8").splitlines()
        kept = [ln for ln in lines if ln.strip() and json.loads(ln).get("augmented_from") in done]
        out.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
    return done


def model_generator(model_name: str, *, max_new_tokens: int = 64, seed: int = 0):
    """generate(prompts, temperature) with a local/bundled model, batched with left padding."""
    import torch

    from tunewiz.core.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(model_name)
    tokenizer.padding_side = "left"
    model = load_causal_lm(model_name, device="cpu" if not torch.cuda.is_available() else "cuda")
    torch.manual_seed(seed)

    def generate(prompts: list[str], temperature: float) -> list[str]:
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(model.device)
        with torch.no_grad():
            ids = model.generate(
                **enc,
                do_sample=temperature > 0,
                temperature=max(temperature, 1e-3),
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        return tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    return generate
