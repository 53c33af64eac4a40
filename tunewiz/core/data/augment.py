"""Making more training rows: each question rephrased by a model, plus the reverse question.

A model taught "A is B" often cannot answer "what is B?": the same fact asked in
other words, and from the answer's side, is what teaches it both ways.

`augment` reads a dataset the way training does, asks the model for `variants`
rephrasings of each row's question (one temperature each, cycling through
`temperatures`) and one reverse question (asking from the answer's side: "Who
founded X?" -> "What did Y found?"); the answer is kept. New rows are written in
the input's own format, each with `augmented_from` naming its source row, after
the same validation as training. Empty generations, duplicates and answers given
where a question was asked for are dropped and counted. Rows are generated in batches; an interrupted run resumes: finished
source rows are listed in `<out>.done` and skipped, a half-written one is redone.

The wizard reviews before it writes: `preview` generates the same variants for
the first rows and returns them; `write_augmented` writes the originals and the
variants the user kept to a new file. Both go through `_generated`, the one
place variants are made.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewiz.core.config import DataConfig
from tunewiz.core.data.formats import detect_format, normalize
from tunewiz.core.data.load import resolve_sources
from tunewiz.core.data.pipeline import (
    AUGMENTED_FROM,
    CancelFlag,
    DataCancelled,
    _read_ahead,
    _records,
)
from tunewiz.core.errors import UserError

REPHRASE = (
    "Rewrite this question with different words, keeping exactly its meaning. "
    "Do not answer it.\n\nQuestion: {q}"
)
REVERSE = (
    "Question: {q}\nAnswer: {a}\n\nWrite the reverse question: one that asks about the same "
    "fact from the answer's side. Reply with the question only."
)
# Worked examples given as earlier turns of the chat: without them the bundled 135M model
# answered the question instead of rephrasing it (every time, on the sample); with them it
# rephrases. (question, rephrased) and (question, answer, reverse question).
REPHRASE_SHOTS = (
    ("Who wrote Hamlet?", "Which author wrote Hamlet?"),
    ("How tall is Mount Fuji?", "What is the height of Mount Fuji?"),
)
REVERSE_SHOTS = (
    ("What is the capital of France?", "The capital of France is Paris.",
     "Paris is the capital of which country?"),
    ("Who wrote Hamlet?", "Shakespeare wrote Hamlet.", "Which play did Shakespeare write?"),
)  # fmt: skip
SUFFIX = ".augmented"  # `facts.jsonl` -> `facts.augmented.jsonl`
WHY = (
    'A model taught "A is B" often cannot answer "what is B?": rephrased and reversed '
    "questions teach each fact more than one way."
)
#: One line of help per option, for the command's flags and the wizard's fields alike.
OPTION_HELP = {
    "variants": "How many rephrasings of each question to write (3 is a good start).",
    "temperatures": "Sampling temperature per rephrasing, cycled: low stays close, high varies more.",
    "model": "The model that writes the rephrasings (default: the bundled one, offline).",
    "reverse": "Also ask each fact from the answer's side (the reverse question).",
    "rows": "How many rows to rephrase now, to review before anything is written.",
}

Chat = list[dict[str, str]]  # [{"role": "user", "content": ...}, ...]
#: generate(chats, temperature) -> the model's next reply to each chat.
Generate = Callable[[list[Chat], float], list[str]]
Progress = Callable[[int, int], object]


class AugmentCancelled(DataCancelled):
    """The caller set the cancel event while variants were being generated (a DataCancelled,
    so a screen catches one exception for any cancelled data work)."""


@dataclass
class AugmentReport:
    rows_read: int = 0
    rows_skipped_done: int = 0  # finished by an earlier, interrupted run
    written: int = 0
    dropped: dict[str, int] = field(
        default_factory=dict
    )  # empty / duplicate / not a question / invalid
    # (source, question) already made: a second identical variant is a duplicate
    seen: set[tuple[str, str]] = field(default_factory=set, repr=False)


@dataclass(frozen=True)
class Variant:
    """One generated question, made into a row of the input's format that names its source."""

    source: str  # where the original row is, e.g. `facts.jsonl:3`
    kind: str  # rephrase-0, rephrase-1, ... or reverse
    temperature: float
    question: str
    row: dict[str, Any]


@dataclass(frozen=True)
class Original:
    """A source row and the variants made from it (dropped ones are only counted)."""

    where: str
    row: dict[str, Any]
    question: str
    answer: str
    variants: list[Variant]


@dataclass(frozen=True)
class Preview:
    """What the wizard shows for review: the first rows with their variants, nothing written."""

    originals: list[Original]
    report: AugmentReport


@dataclass(frozen=True)
class Written:
    path: Path
    originals: int  # rows copied from the input as they were
    variants: int
    unreadable: int  # input records that were not rows (bad JSON...): not copied


@dataclass(frozen=True)
class _Source:
    where: str
    row: dict[str, Any]
    question: str
    answer: str


@dataclass(frozen=True)
class _Read:
    rows: list[_Source]
    fmt: str
    mapping: dict[str, str]


def augment(
    data: str | DataConfig,
    generate: Generate,
    out: str | Path,
    *,
    variants: int = 3,
    temperatures: tuple[float, ...] = (0.3, 0.7, 1.0),
    reverse: bool = True,
    batch_size: int = 8,
    limit: int | None = None,
    progress: Progress | None = None,
    cancel: CancelFlag | None = None,
) -> AugmentReport:
    """Write new rows to `out` (JSON Lines); `generate(chats, temperature)` replies to each.

    A cancelled run stops after the batch it is in; what was finished stays (resumable)."""
    read = _read(_config(data), limit)
    out = Path(out)
    done = _resume(out)
    report = AugmentReport(
        rows_read=len(read.rows), rows_skipped_done=len({r.where for r in read.rows} & done)
    )
    todo = [r for r in read.rows if r.where not in done]
    made = _generated(todo, read, generate, variants, temperatures, reverse, batch_size, report, cancel)  # fmt: skip
    with open(out, "a", encoding="utf-8") as fh, open(_done_file(out), "a") as done_fh:
        try:
            for finished, originals in made:
                for original in originals:
                    for variant in original.variants:
                        fh.write(json.dumps(variant.row, ensure_ascii=False) + "\n")
                        report.written += 1
                    fh.flush()
                    done_fh.write(original.where + "\n")
                    done_fh.flush()
                if progress is not None:
                    progress(finished, len(todo))
        except AugmentCancelled:
            pass  # finished source rows are listed as done: the next run resumes after them
    return report


def preview(
    data: str | DataConfig,
    generate: Generate,
    *,
    rows: int,
    variants: int = 3,
    temperatures: tuple[float, ...] = (0.3, 0.7, 1.0),
    reverse: bool = True,
    batch_size: int = 8,
    progress: Progress | None = None,
    cancel: CancelFlag | None = None,
) -> Preview:
    """The variants of the first `rows` usable rows, for review; writes nothing.

    Raises AugmentCancelled when `cancel` is set before the last batch is done."""
    read = _read(_config(data), rows)
    report = AugmentReport(rows_read=len(read.rows))
    originals: list[Original] = []
    made = _generated(read.rows, read, generate, variants, temperatures, reverse, batch_size, report, cancel)  # fmt: skip
    for finished, batch in made:
        originals += batch
        report.written += sum(len(o.variants) for o in batch)
        if progress is not None:
            progress(finished, len(read.rows))
    return Preview(originals=originals, report=report)


def check_augmentable(data: str | DataConfig) -> None:
    """UserError when the data has no question to rephrase (text, preference data) or no
    usable row: said before a model is loaded for it."""
    if not _read(_config(data), 1).rows:
        raise UserError("no usable row with a question and an answer", where=_config(data).data)


def augmented_path(data: str, data_dir: Path) -> Path:
    """A new file for the input and its variants: `<stem>.augmented.jsonl` beside a local
    file (never the file itself, never one that exists), else in `data_dir` (the sample,
    a folder, a hub dataset, or a folder the user cannot write to)."""
    path = Path(data).expanduser()
    if data.strip() == "sample" and not path.exists():
        from tunewiz.core.data import SAMPLE_DATASET

        path = SAMPLE_DATASET
    name = path.name if path.is_file() else data.strip().replace("/", "_") or "data"
    stem = name.split(".")[0] or "data"
    beside = path.is_file() and os.access(path.parent, os.W_OK) and not _shipped(path)
    folder = path.parent if beside else data_dir
    candidate, n = folder / f"{stem}{SUFFIX}.jsonl", 1
    while candidate.exists():
        n += 1
        candidate = folder / f"{stem}{SUFFIX}-{n}.jsonl"
    return candidate


def made_from_sample(data: str, data_dir: Path) -> bool:
    """True for a file `augmented_path` wrote for the bundled sample: its questions are still
    about the sample's island, so the sample's held-out questions still measure learning."""
    from tunewiz.core.data import SAMPLE_DATASET

    path = Path(data).expanduser()
    stem = SAMPLE_DATASET.name.split(".")[0]
    return path.parent == data_dir and path.name.startswith(stem + SUFFIX)


def write_augmented(data: str | DataConfig, chosen: list[Variant], out: Path) -> Written:
    """Write every row of the input as it is, each followed by its `chosen` variants, to `out`
    (JSON Lines). Refuses an existing `out`: the user's files are never overwritten. The file
    appears whole or not at all (written beside it, then renamed)."""
    cfg = _config(data)
    if out.exists():
        raise UserError("the file exists; augmented rows go to a new file", where=str(out))
    by_source: dict[str, list[Variant]] = {}
    for v in chosen:
        by_source.setdefault(v.source, []).append(v)
    sources = resolve_sources(cfg.data, hub_config=cfg.data_config_name, hub_split=cfg.data_split)
    originals = variants = unreadable = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    try:
        with open(part, "w", encoding="utf-8") as fh:
            for si, loc, row, _problem in _records(sources, cfg.text_split):
                if row is None:
                    unreadable += 1
                    continue
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                originals += 1
                for v in by_source.pop(sources[si].where(loc), []):
                    fh.write(json.dumps(v.row, ensure_ascii=False) + "\n")
                    variants += 1
        if by_source:  # the input changed since the preview: its rows are no longer there
            raise UserError(
                f"the data changed since the variants were made ({next(iter(by_source))} moved)",
                where=cfg.data,
                hint="make the variants again",
            )
        part.replace(out)
    finally:
        part.unlink(missing_ok=True)
    return Written(path=out, originals=originals, variants=variants, unreadable=unreadable)


def _config(data: str | DataConfig) -> DataConfig:
    return data if isinstance(data, DataConfig) else DataConfig(data=data)


def _shipped(path: Path) -> bool:
    """The bundled sample: its folder belongs to the installed package, not the user."""
    from tunewiz.core.paths import profiles_dir

    return profiles_dir().resolve() in path.resolve().parents


def _read(cfg: DataConfig, limit: int | None) -> _Read:
    """Every usable row with its question and answer; rows without both are skipped."""
    sources = resolve_sources(cfg.data, hub_config=cfg.data_config_name, hub_split=cfg.data_split)
    head, rest = _read_ahead(_records(sources, cfg.text_split))
    sample = [r[2] for r in head if r[2] is not None]
    if not sample:
        raise UserError("no readable row", where=cfg.data)
    fmt, mapping, _ = detect_format(sample, cfg.columns, cfg.format)
    if fmt in ("text", "preference", "kto"):
        raise UserError(
            f"augment rephrases questions; {fmt} data has none to rephrase", where=cfg.data
        )
    rows: list[_Source] = []
    for si, loc, row, _problem in [*head, *rest]:
        if row is None:
            continue
        norm, issues, _ = normalize(row, fmt, mapping)
        if norm is None or issues:
            continue
        msgs = norm["messages"]
        where = sources[si].where(loc)
        rows.append(_Source(where, row, msgs[-2]["content"], msgs[-1]["content"]))
        if limit is not None and len(rows) >= limit:
            break
    return _Read(rows, fmt, mapping)


def _generated(
    todo: list[_Source],
    read: _Read,
    generate: Generate,
    variants: int,
    temperatures: tuple[float, ...],
    reverse: bool,
    batch_size: int,
    report: AugmentReport,
    cancel: CancelFlag | None,
) -> Iterator[tuple[int, list[Original]]]:
    """(source rows finished so far, this batch's originals with their usable variants)."""
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        made = _variants(batch, generate, variants, temperatures, reverse, cancel)
        originals = []
        for src, new in zip(batch, made, strict=True):
            kept = []
            for kind, temperature, text in new:
                row = _new_row(src, read, text, kind, report)
                if row is not None:
                    kept.append(Variant(src.where, kind, temperature, row[1], row[0]))
            originals.append(Original(src.where, src.row, src.question, src.answer, kept))
        yield start + len(batch), originals


def _variants(
    batch: list[_Source],
    generate: Generate,
    variants: int,
    temperatures: tuple[float, ...],
    reverse: bool,
    cancel: CancelFlag | None,
) -> list[list[tuple[str, float, str]]]:
    """Per source row: [(kind, temperature, generated text), ...], one generate() call per kind.

    The cancel flag is read before each call: one call on a CPU can take many seconds."""
    calls: list[tuple[str, float, list[Chat]]] = [
        (f"rephrase-{v}", temperatures[v % len(temperatures)], [rephrase_chat(s.question) for s in batch])
        for v in range(variants)
    ]  # fmt: skip
    if reverse:
        chats = [reverse_chat(s.question, s.answer) for s in batch]
        calls.append(("reverse", temperatures[0], chats))
    out: list[list[tuple[str, float, str]]] = [[] for _ in batch]
    for kind, temperature, chats in calls:
        if cancel is not None and cancel.is_set():
            raise AugmentCancelled()
        for i, text in enumerate(generate(chats, temperature)):
            out[i].append((kind, temperature, text))
    return out


def rephrase_chat(question: str) -> Chat:
    """The chat that asks for a rephrasing of `question`, after the worked examples."""
    shots = [(REPHRASE.format(q=q), r) for q, r in REPHRASE_SHOTS]
    return _chat(shots, REPHRASE.format(q=question))


def reverse_chat(question: str, answer: str) -> Chat:
    """The chat that asks for the reverse question of a question and its answer."""
    shots = [(REVERSE.format(q=q, a=a), r) for q, a, r in REVERSE_SHOTS]
    return _chat(shots, REVERSE.format(q=question, a=answer))


def _chat(shots: list[tuple[str, str]], ask: str) -> Chat:
    turns: Chat = []
    for user, assistant in shots:
        turns += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return [*turns, {"role": "user", "content": ask}]


def _new_row(
    src: _Source, read: _Read, text: str, kind: str, report: AugmentReport
) -> tuple[dict[str, Any], str] | None:
    """(the source row with its question replaced, the question), or None (counted) when the
    generated text cannot be used."""
    question = _clean(text)
    if not question:
        _drop(report, "empty")
        return None
    if question.lower() == src.question.strip().lower():
        _drop(report, "duplicate")
        return None
    if src.question.rstrip().endswith("?") and not question.endswith("?"):
        # A small model often answers instead of rephrasing: that row would teach a made-up
        # statement followed by the answer.
        _drop(report, "not a question")
        return None
    new = copy.deepcopy(src.row)
    _set_question(new, read.fmt, read.mapping, question)
    checked, issues, _ = normalize(new, read.fmt, read.mapping)
    if checked is None or issues:
        _drop(report, "invalid")
        return None
    key = (src.where, question.lower())
    if key in report.seen:
        _drop(report, "duplicate")
        return None
    report.seen.add(key)
    new[AUGMENTED_FROM], new["augmentation"] = src.where, kind
    return new, question


def _drop(report: AugmentReport, why: str) -> None:
    report.dropped[why] = report.dropped.get(why, 0) + 1


def _clean(text: str) -> str:
    text = text.strip().splitlines()[0].strip() if text.strip() else ""
    for prefix in ("Question:", "Rephrased question:", "Reverse question:"):
        if text.lower().startswith(prefix.lower()):
            text = text[len(prefix) :].strip()
    return text.strip('"').strip()


def _set_question(row: dict[str, Any], fmt: str, mapping: dict[str, str], question: str) -> None:
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
        kept = [ln for ln in lines if ln.strip() and json.loads(ln).get(AUGMENTED_FROM) in done]
        out.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
    return done


def model_generator(model_name: str, *, max_new_tokens: int = 64, seed: int = 0) -> Generate:
    """generate(chats, temperature) with a local/bundled model, batched with left padding."""
    import torch

    from tunewiz.core.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(model_name)
    tokenizer.padding_side = "left"
    model = load_causal_lm(model_name, device="cpu" if not torch.cuda.is_available() else "cuda")
    torch.manual_seed(seed)

    def generate(chats: list[Chat], temperature: float) -> list[str]:
        texts = [
            tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            for chat in chats
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
                # only the first line is used (`_clean`): stop there, not at max_new_tokens
                stop_strings=["\n"],
                tokenizer=tokenizer,
            )
        texts_out: list[str] = tokenizer.batch_decode(
            ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
        )
        return texts_out

    return generate
