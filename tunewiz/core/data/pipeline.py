"""From what the user named to checked, tokenized, labelled examples.

`inspect_data` reads everything once and reports; `prepare` does the same and
returns the examples training uses. Both stream the rows: without a tokenizer
memory stays flat except ~20 bytes per usable row (for finding duplicates).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import logging
import signal
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from tunewiz.core.config import DataConfig
from tunewiz.core.data.formats import (
    FORMAT_NAMES,
    TOOL_PARTS,
    detect_format,
    normalize,
    suggest_task,
)
from tunewiz.core.data.load import Source, read_source, resolve_sources
from tunewiz.core.data.report import WARNING_KINDS, DataReport, Problem
from tunewiz.core.data.stats import pack, packed_count, split, token_stats
from tunewiz.core.data.template import (
    TOOL_TEMPLATE_FAMILIES,
    TemplateError,
    chat_template_for,
    gap_tokens,
    render,
    template_supports_tools,
    tokenize_rendered,
)
from tunewiz.core.errors import UserError

log = logging.getLogger(__name__)

BATCH = 2048  # rows per tokenizer call (and per progress report)
SAMPLE_ROWS = 200  # rows read ahead to detect the format
PREVIEW_ROWS = 3

TASK_HELP = {
    "instruction": "Teach the model to answer: each row is one prompt and the response you want.",
    "chat": "Teach the model to hold conversations: each row is a multi-turn chat, optionally with a system prompt.",
    "text": "Continue pre-training on plain text (your domain's documents); no prompts or answers.",
}
TASK_FORMATS: dict[str, tuple[str, ...]] = {
    "instruction": ("alpaca", "prompt_completion", "preference"),
    "chat": ("openai", "sharegpt", "alpaca", "prompt_completion", "preference"),
    "text": ("text",),
}


class CancelFlag(Protocol):
    """What `cancel` must answer: a threading.Event, or the worker's stop check."""

    def is_set(self) -> bool: ...


class DataCancelled(Exception):
    """The caller set the cancel event while the data was being read."""


@dataclass
class PreparedData:
    """What training needs: examples `{"input_ids", "labels"[, "position_ids"]}` and the template used."""

    train: list[dict]
    eval: list[dict] | None
    report: DataReport
    chat_template: str
    packed: bool = False
    eval_report: DataReport | None = None


def packing_enabled(cfg: DataConfig) -> bool:
    return cfg.packing == "true" or (cfg.packing == "auto" and cfg.task == "text")


def check_task_reads(task: str, fmt: str) -> None:
    """UserError when the task cannot train on data of this format."""
    if fmt != "unknown" and fmt not in TASK_FORMATS.get(task, ()):
        raise UserError(
            f"the {task} task does not read {FORMAT_NAMES.get(fmt, fmt)} data",
            where="data.task",
            hint=f"this data fits the {suggest_task(fmt)} task (--task {suggest_task(fmt)}); "
            f"{task} reads: {', '.join(TASK_FORMATS[task])}",
        )


def detect(cfg: DataConfig) -> tuple[str, str, list[str]]:
    """(format, suggested task, evidence) from the first rows, without reading everything."""
    sources = resolve_sources(cfg.data, hub_config=cfg.data_config_name, hub_split=cfg.data_split)
    head, _ = _read_ahead(_records(sources, cfg.text_split))
    sample = [r[2] for r in head if r[2] is not None]
    if not sample:
        raise UserError(_empty_message(head, sources), where=cfg.data)
    fmt, _, evidence = detect_format(sample, cfg.columns, cfg.format)
    return fmt, suggest_task(fmt), evidence


def rows_hint(cfg: DataConfig) -> int | None:
    """How many rows the data holds, when that is cheap to know (for progress); None otherwise.

    Uncompressed JSON Lines count their lines, Parquet files read their footer;
    other kinds are only known once read.
    """
    try:
        sources = resolve_sources(
            cfg.data, hub_config=cfg.data_config_name, hub_split=cfg.data_split
        )
    except UserError:
        return None
    total = 0
    for src in sources:
        if src.path is None or src.compression:
            return None
        if src.kind == "jsonl":
            total += _count_lines(src.path)
        elif src.kind == "parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(src.path).metadata.num_rows
        else:
            return None
    return total


def _count_lines(path) -> int:
    n, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def inspect_data(
    cfg: DataConfig,
    tokenizer=None,
    *,
    cancel: CancelFlag | None = None,
    progress: Callable[[int], None] | None = None,
    batch_size: int = 4,
    objective: str = "sft",
) -> DataReport:
    """Read and check every row; token statistics when a tokenizer is given. Never raises for bad rows."""
    if objective != "sft":
        from tunewiz.core.data.preference import scan_preference

        return scan_preference(
            cfg, tokenizer, objective, cancel=cancel, batch_size=batch_size, progress=progress
        )[0]
    report, _ = _scan(
        cfg, tokenizer, keep=False, cancel=cancel, progress=progress, batch_size=batch_size
    )
    return report


def prepare(
    cfg: DataConfig,
    tokenizer,
    *,
    cancel: CancelFlag | None = None,
    progress: Callable[[int], None] | None = None,
    batch_size: int = 4,
    num_proc: int = 1,
    objective: str = "sft",
) -> PreparedData:
    """Checked, tokenized, split (and packed) examples; UserError when nothing usable, or bad rows and `stop`.

    `num_proc` > 1 tokenizes in that many processes; the result is the same as with one.
    Preference objectives (dpo, orpo, kto) read pairs or labelled answers instead of SFT rows.
    """
    if objective != "sft":
        from tunewiz.core.data.preference import prepare_preference

        return prepare_preference(cfg, tokenizer, objective, cancel=cancel, batch_size=batch_size)
    report, groups = _scan(
        cfg,
        tokenizer,
        keep=True,
        cancel=cancel,
        progress=progress,
        batch_size=batch_size,
        num_proc=num_proc,
    )
    _check_usable(
        report, cfg, "data.data"
    )  # before the tokenizer check: says why nothing is usable
    if tokenizer is None:
        raise ValueError("prepare() needs the model's tokenizer")
    eval_report = None
    if cfg.validation_file:
        vcfg = dataclasses.replace(cfg, data=cfg.validation_file)
        eval_report, eval_groups = _scan(
            vcfg,
            tokenizer,
            keep=True,
            cancel=cancel,
            progress=None,
            batch_size=batch_size,
            num_proc=num_proc,
        )
        _check_usable(eval_report, vcfg, "data.validation_file")
        train_groups = groups
    else:
        # split rows, not examples: the chunks of one long document stay on one side
        train_groups, eval_groups = split(groups, cfg.validation_split, cfg.split_seed)
        _check_split(cfg, len(train_groups), len(eval_groups))
    train = [ex for g in train_groups for ex in g]
    evals = [ex for g in eval_groups for ex in g]
    packed = packing_enabled(cfg)
    if packed:
        train, evals = pack(train, cfg.max_seq_len), pack(evals, cfg.max_seq_len)
    if report.token_stats:
        report.token_stats.sequences = len(train)
    return PreparedData(
        train=train,
        eval=evals or None,
        report=report,
        chat_template=chat_template_for(tokenizer),
        packed=packed,
        eval_report=eval_report,
    )


def _check_split(cfg: DataConfig, n_train: int, n_eval: int) -> None:
    """More rows held out than trained on is a typo (0.9 for 0.1, 500 for 50), not a plan."""
    if n_eval <= n_train:
        return
    raise UserError(
        f"validation_split = {cfg.validation_split:g} holds out {n_eval} of "
        f"{n_train + n_eval} rows, leaving only {n_train} to train on",
        where="data.validation_split",
        hint=f"use a small fraction such as 0.1, or a count of at most {(n_train + n_eval) // 2}",
    )


# -- one row, for previews -------------------------------------------------------


@dataclass
class RowView:
    """Row `number` of the data as the user wrote it, and what training makes of it."""

    number: int  # 1-based, over every row read (bad ones too)
    where: str  # data.jsonl:17, data.json[42]
    source: dict | None  # the row as read: the user's own columns
    problem: str = ""  # why it is not used ("" when usable)
    example: dict | None = None  # tokenized (input_ids, labels), for the masking preview
    # (token index, what) for tool parts left out (the template cannot express them)
    gaps: list[tuple[int, str]] = dataclasses.field(default_factory=list)


def row_view(cfg: DataConfig, number: int, tokenizer=None) -> RowView:
    """Read up to row `number` (1-based) and return it with its tokenized form. Reads the data
    from the start (a preview needs one row, not an index of every row)."""
    if number < 1:
        raise UserError("rows are numbered from 1", where="row")
    sources = resolve_sources(cfg.data, hub_config=cfg.data_config_name, hub_split=cfg.data_split)
    head, rest = _read_ahead(_records(sources, cfg.text_split))
    found = next(itertools.islice(itertools.chain(head, rest), number - 1, None), None)
    if found is None:
        raise UserError(f"the data has fewer than {number} rows", where=f"row {number}")
    si, loc, row, problem = found
    view = RowView(number, sources[si].where(loc), row, problem.message if problem else "")
    if problem is not None:
        return view
    sample = [r[2] for r in head if r[2] is not None]
    fmt, mapping, _ = detect_format(sample, cfg.columns, cfg.format)
    job = _job(cfg, fmt, mapping, sources, tokenizer, keep=True)
    removed: list[tuple[int, str]] = []
    norm, issues, _skipped = _normalize_mixed(row, fmt, mapping, cfg, job.tools, removed)
    if issues or norm is None:
        view.problem = "; ".join(msg for _f, _k, msg in issues)
    elif tokenizer is not None:
        done = _Done(rows=1, problems=[], skipped={})
        toks = _tokenize([(si, loc, norm)], job, done)
        if toks[0] is not None:
            view.example = toks[0][0][0]
            if removed and job.template is not None:
                view.gaps = gap_tokens(norm["messages"], removed, tokenizer, job.template)
        elif done.problems:
            view.problem = done.problems[0].message
    return view


# -- reading -------------------------------------------------------------------


def _records(
    sources: list[Source], text_split: str
) -> Iterator[tuple[int, int, dict | None, Problem | None]]:
    for si, src in enumerate(sources):
        for loc, row, problem in read_source(src, text_split=text_split):
            yield si, loc, row, problem


def _row_format(row: dict, cfg: DataConfig) -> tuple[str | None, dict]:
    """The format of one row on its own (and its column mapping); None when it has none."""
    try:
        fmt, mapping, _ = detect_format([row], cfg.columns)
    except UserError:
        return None, {}
    return fmt, mapping


def _detect_for_task(sample: list[dict], cfg: DataConfig) -> tuple[str, dict, list[str]]:
    """detect_format, except that a file mixing formats is read in the one the task takes:
    when the format detected first is not one the task reads, the rows that are decide."""
    fmt, mapping, evidence = detect_format(sample, cfg.columns, cfg.format)
    accepted = TASK_FORMATS.get(cfg.task, ())
    # KTO rows also have a prompt and a completion, but half of their answers are bad ones:
    # never read them as SFT rows (the caller refuses them with the KTO message).
    if cfg.format not in ("", "auto") or fmt in accepted or fmt == "kto":
        return fmt, mapping, evidence
    fitting = [row for row in sample if _row_format(row, cfg)[0] in accepted]
    if not fitting:
        return fmt, mapping, evidence  # refused by the caller, with the task that fits
    fmt2, mapping2, evidence2 = detect_format(fitting, cfg.columns)
    note = (
        f"{len(sample) - len(fitting)} of the first {len(sample)} rows are "
        f"{FORMAT_NAMES.get(fmt, fmt)}, which the {cfg.task} task does not read: they are "
        "reported as problems"
    )
    return fmt2, mapping2, [*evidence2, note]


KTO_ROW_IN_SFT = (
    "a KTO row (answer labelled true/false): its answer may be a bad one, so it is not "
    "trained as SFT; train KTO data with --objective kto"
)


def _normalize_mixed(
    row: dict,
    fmt: str,
    mapping: dict,
    cfg: DataConfig,
    tools: bool = False,
    removed: list | None = None,
):
    """normalize() in the detected format; with the format detected (not set), a row that
    does not fit it but is itself of a format the task reads (a file mixing Alpaca and
    `messages` rows) is read in its own format instead of dropped. A KTO row (an answer
    labelled good or bad) among SFT rows is a problem: its bad answer must not be learnt."""
    if isinstance(row.get("label"), bool) and fmt != "kto":
        return None, [("label", "kto_row", KTO_ROW_IN_SFT)], {}
    out = normalize(row, fmt, mapping, tools=tools, removed=removed)
    if out[0] is not None or cfg.format not in ("", "auto"):
        return out
    own, own_mapping = _row_format(row, cfg)
    if own is None or own == fmt or own not in TASK_FORMATS.get(cfg.task, ()):
        return out
    if removed:
        removed.clear()  # the gaps of the failed reading, not of this one
    again = normalize(row, own, own_mapping, tools=tools, removed=removed)
    return again if again[0] is not None else out


def _read_ahead(records: Iterator) -> tuple[list, Iterator]:
    head, good = [], 0
    for rec in records:
        head.append(rec)
        good += rec[2] is not None
        if good >= SAMPLE_ROWS:
            break
    return head, records


def _empty_message(head: list, sources: list[Source]) -> str:
    if not head:
        names = ", ".join(s.name for s in sources[:3])
        return f"no rows: the data is empty ({names})"
    first = head[0][3]
    return f"no readable row: all {len(head)} rows read have problems, first at {first.where}: {first.message}"


def _row_key(norm: dict) -> str | tuple:
    if "text" in norm:
        return norm["text"]
    if "tools" in norm or any("tool_calls" in m for m in norm["messages"]):
        return json.dumps(norm, sort_keys=True, default=str)  # calls and results count too
    return tuple([x for m in norm["messages"] for x in (m["role"], m["content"])])


def _scan(
    cfg: DataConfig, tokenizer, *, keep: bool, cancel, progress, batch_size: int, num_proc: int = 1
):
    sources = resolve_sources(cfg.data, hub_config=cfg.data_config_name, hub_split=cfg.data_split)
    source_name = str(sources[0].path) if cfg.data == "sample" and sources[0].path else cfg.data
    report = DataReport(source=source_name, task=cfg.task)
    head, rest = _read_ahead(_records(sources, cfg.text_split))
    sample = [r[2] for r in head if r[2] is not None]
    if not head:
        raise UserError(_empty_message(head, sources), where=cfg.data)
    if sample:
        fmt, mapping, evidence = _detect_for_task(sample, cfg)
    else:  # nothing readable: every row is reported below, the format stays unknown
        fmt, mapping, evidence = "unknown", {}, ["no readable row to tell the format from"]
    report.format, report.evidence = fmt, evidence
    report.preference_data = fmt == "preference"
    if report.preference_data:
        report.notes.append(
            "preference data: with objective sft only the prompt and the `chosen` answer train; "
            "`rejected` is not used (--objective dpo, orpo or kto learn from both)"
        )
    if fmt == "kto":  # every answer would be learnt as a good one, the bad ones included
        raise UserError(
            "this is KTO data (answers marked good or bad by `label`): it cannot train as sft",
            where="training.objective",
            hint="train it with --objective kto",
        )
    check_task_reads(cfg.task, fmt)
    text_task = cfg.task == "text"
    template = chat_template_for(tokenizer) if tokenizer is not None else None
    report.chat_template = template if not text_task else None
    job = _job(cfg, fmt, mapping, sources, tokenizer, keep)

    # One entry per usable row (before duplicates are removed): compact arrays keep memory flat.
    hashes, srcs, locs, lengths, trained = (
        array("q"),
        array("H"),
        array("q"),
        array("q"),
        array("q"),
    )
    row_examples: list[list[dict]] = []
    previews: list[tuple[int, dict, list[dict]]] = []
    split_docs = 0

    for done in _run_batches(job, _batches(itertools.chain(head, rest)), num_proc):
        if cancel is not None and cancel.is_set():
            raise DataCancelled()
        report.rows_total += done.rows
        for problem in done.problems:
            report.add_problem(problem)
        for part, n in done.skipped.items():
            report.skipped_parts[part] = report.skipped_parts.get(part, 0) + n
        report.boundary_merges += done.boundary_merges
        report.tool_rows += done.tool_rows
        report.cut_lengths.extend(done.cut_lengths)
        for i, (si, loc, key, exs, length, n_trained) in enumerate(done.kept):
            hashes.append(key)
            srcs.append(si)
            locs.append(loc)
            if tokenizer is not None:
                lengths.append(length)
                trained.append(n_trained)
                split_docs += len(exs or ()) > 1
                if keep:
                    row_examples.append(exs)
            if i in done.previews and len(previews) < PREVIEW_ROWS * 3:
                previews.append((len(hashes) - 1, done.previews[i], exs or []))
        if progress is not None:
            progress(report.rows_total)

    _note_tools(report, job)
    keep_mask = _mark_duplicates(hashes, srcs, locs, sources, report)
    report.rows_ok = int(keep_mask.sum())
    for index, norm, exs in previews:
        if keep_mask[index] and len(report.preview) < PREVIEW_ROWS:
            report.preview.append(norm)
            if exs:
                report.examples.append(exs[0])
    groups: list[list[dict]] = []
    if tokenizer is not None:
        kept_lengths = [n for n, k in zip(lengths, keep_mask, strict=False) if k]
        report.token_stats = token_stats(
            kept_lengths,
            cfg.max_seq_len,
            trained_tokens=sum(t for t, k in zip(trained, keep_mask, strict=False) if k),
            batch_size=batch_size,
            truncates=not text_task,
            cut=report.cut_lengths,
        )
        if report.token_stats is not None:
            if text_task:  # long documents become several chunks
                chunks = [
                    min(max(n - a, 0), cfg.max_seq_len)
                    for n in kept_lengths
                    for a in range(0, n, cfg.max_seq_len)
                ]
                report.token_stats.sequences = (
                    packed_count(chunks, cfg.max_seq_len) if packing_enabled(cfg) else len(chunks)
                )
            elif packing_enabled(cfg):
                report.token_stats.sequences = packed_count(kept_lengths, cfg.max_seq_len)
        if report.boundary_merges:
            report.notes.append(
                f"{report.boundary_merges} rows have a token that spans the end of the prompt and the "
                "start of the answer (the tokenizer merges across the template); it is not trained"
            )
        if split_docs:
            report.notes.append(
                f"{split_docs} documents longer than max_seq_len ({cfg.max_seq_len}) are split "
                "into several sequences (no token lost)"
            )
        if keep:  # one group per row: a long text document makes several examples
            groups = [exs for exs, k in zip(row_examples, keep_mask, strict=True) if k]
    return report, groups


def _note_tools(report: DataReport, job: _Job) -> None:
    """Say what became of tool calls, results and definitions, and why."""
    if report.tool_rows:
        report.notes.append(
            f"{report.tool_rows} rows use tools: the chat template renders them, the assistant's "
            "tool calls are trained, tool results and definitions are not"
        )
    elif job.template is not None and any(k in report.skipped_parts for k in TOOL_PARTS):
        report.notes.append(
            "this model's chat template cannot express tools, so tool calls, results and "
            f"definitions are left out; templates that can: {TOOL_TEMPLATE_FAMILIES}"
        )


@dataclass
class _Job:
    """Everything a batch needs; inherited by forked helper processes, never pickled."""

    cfg: DataConfig
    fmt: str
    mapping: dict
    sources: list[Source]
    tokenizer: object
    template: str | None
    keep: bool
    tools: bool = False  # the template renders tool calls: rows keep them


def _job(cfg: DataConfig, fmt: str, mapping: dict, sources, tokenizer, keep: bool) -> _Job:
    template = chat_template_for(tokenizer) if tokenizer is not None else None
    if cfg.task == "text":
        return _Job(cfg, fmt, mapping, sources, tokenizer, None, keep)
    tools = template is not None and template_supports_tools(tokenizer, template)
    return _Job(cfg, fmt, mapping, sources, tokenizer, template, keep, tools)


@dataclass
class _Done:
    """One batch's outcome, apart from the report: batches may run in other processes."""

    rows: int
    problems: list[Problem]
    skipped: dict
    boundary_merges: int = 0
    tool_rows: int = 0  # usable rows that kept tool calls or results
    cut_lengths: list[int] = dataclasses.field(default_factory=list)  # rows cut to nothing
    # per usable row: (source, loc, content hash, examples or None, length, trained tokens)
    kept: list[tuple] = dataclasses.field(default_factory=list)
    previews: dict[int, dict] = dataclasses.field(default_factory=dict)  # kept index -> row


def _batches(records: Iterator) -> Iterator[list]:
    while batch := list(itertools.islice(records, BATCH)):
        yield batch


def _run_batches(job: _Job, batches: Iterator[list], num_proc: int) -> Iterator[_Done]:
    """Each batch's outcome, in order; tokenized by `num_proc` processes when above 1.

    Rows are read here and sent out as they are read; at most two batches per
    process are in flight, so memory holds the results, not the whole input.
    """
    if num_proc <= 1:
        yield from (_process(job, b) for b in batches)
        return
    import multiprocessing

    # fork: the helpers inherit the loaded tokenizer and the hash seed (duplicates are
    # found by hash, so every process must hash a row the same way).
    ctx = multiprocessing.get_context("fork")
    pending: collections.deque = collections.deque()
    with ctx.Pool(num_proc, initializer=_init_child, initargs=(job,)) as pool:
        for batch in batches:
            pending.append(pool.apply_async(_process_in_child, (batch,)))
            if len(pending) >= 2 * num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


_CHILD_JOB: _Job | None = None


def _init_child(job: _Job) -> None:
    global _CHILD_JOB
    _CHILD_JOB = job
    # A forked helper inherits its parent's handlers; the training worker's graceful SIGTERM
    # would make Pool.terminate() wait forever. Stops are the parent's to decide.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _process_in_child(batch: list) -> _Done:
    assert _CHILD_JOB is not None
    return _process(_CHILD_JOB, batch)


def _process(job: _Job, batch: list) -> _Done:
    """Check, normalise and (with a tokenizer) tokenize one batch of records."""
    done = _Done(rows=len(batch), problems=[], skipped={})
    good: list[tuple[int, int, dict]] = []
    for si, loc, row, problem in batch:
        if problem is not None:
            done.problems.append(problem)
            continue
        norm, issues, skipped = _normalize_mixed(row, job.fmt, job.mapping, job.cfg, job.tools)
        for part, n in (skipped or {}).items():
            done.skipped[part] = done.skipped.get(part, 0) + n
        if issues or norm is None:
            src = job.sources[si]
            done.problems.extend(
                Problem(src.where(loc, fld), kind, msg) for fld, kind, msg in issues
            )
            continue
        good.append((si, loc, norm))
        done.tool_rows += job.tools and _uses_tools(norm)
    if job.tokenizer is None:
        toks: list = [(None, 0, 0)] * len(good)
    else:
        toks = _tokenize(good, job, done) if good else []
    for (si, loc, norm), tok in zip(good, toks, strict=True):
        if tok is None:
            continue  # reported by _tokenize
        exs, length, n_trained = tok
        preview = len(done.previews) < PREVIEW_ROWS * 3
        if preview:
            done.previews[len(done.kept)] = norm
        # Examples travel back only when kept (or shown): pickling them is most of the cost.
        exs = exs if job.keep or preview else None
        done.kept.append((si, loc, hash(_row_key(norm)), exs, length, n_trained))
    return done


def _uses_tools(norm: dict) -> bool:
    return "tools" in norm or any(
        m["role"] == "tool" or "tool_calls" in m for m in norm.get("messages", ())
    )


def _tokenize(good, job: _Job, done: _Done):
    """Per usable row: (examples, length before truncation, trained tokens), or None if it failed."""
    cfg, tokenizer, sources = job.cfg, job.tokenizer, job.sources
    max_len = cfg.max_seq_len
    out: list = [None] * len(good)
    if cfg.task == "text":
        toks = tokenize_rendered(
            [n["text"] for _, _, n in good],
            [None] * len(good),
            tokenizer,
            max_len,
            add_special_tokens=True,
            append_eos=True,
            truncate=False,
        )
        for i, t in enumerate(toks):
            chunks = [
                {"input_ids": t.input_ids[a : a + max_len], "labels": t.labels[a : a + max_len]}
                for a in range(0, len(t.input_ids), max_len)
            ]
            out[i] = (chunks, t.length, t.length)
        return out
    assert job.template is not None  # a tokenizer always brings a template
    texts, spans, idx = [], [], []
    for i, (si, loc, norm) in enumerate(good):
        try:
            text, row_spans = render(norm["messages"], tokenizer, job.template, norm.get("tools"))
        except TemplateError as exc:
            done.problems.append(
                Problem(
                    sources[si].where(loc),
                    "template_error",
                    f"the chat template refused this row: {exc}",
                )
            )
            continue
        texts.append(text)
        spans.append(None if cfg.train_on_inputs else row_spans)
        idx.append(i)
    if not texts:
        return out
    toks = tokenize_rendered(texts, spans, tokenizer, max_len)
    for i, t in zip(idx, toks, strict=False):
        si, loc, _ = good[i]
        where = sources[si].where(loc)
        if t.length > max_len:
            done.problems.append(
                Problem(
                    where,
                    "too_long",
                    f"{t.length} tokens: truncated to {max_len}, {t.length - max_len} tokens lost",
                )
            )
        if t.straddles:
            done.boundary_merges += 1
        if t.trained == 0:
            why = " (the answer lies past max_seq_len)" if t.length > max_len else ""
            if t.length > max_len:
                done.cut_lengths.append(t.length)
            done.problems.append(
                Problem(where, "no_trainable", "no token left to train on after masking" + why)
            )
            continue
        out[i] = ([{"input_ids": t.input_ids, "labels": t.labels}], t.length, t.trained)
    return out


def _mark_duplicates(hashes, srcs, locs, sources, report: DataReport):
    """Later copies of a row are problems; the first copy is kept. Returns a keep mask.

    Rows are compared by the hash of their normalized content, sorted once at the
    end (a few bytes per row) rather than kept in a set while reading.
    """
    import numpy as np

    n = len(hashes)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    h = np.frombuffer(hashes, dtype=np.int64)
    order = np.argsort(h, kind="stable")  # stable: the first copy comes first in its run
    sorted_h = h[order]
    same = np.zeros(n, dtype=bool)
    np.equal(sorted_h[1:], sorted_h[:-1], out=same[1:])
    del sorted_h
    dup_pos = np.flatnonzero(same)
    if not dup_pos.size:
        return keep
    run_starts = np.flatnonzero(~same)
    firsts = order[run_starts[np.searchsorted(run_starts, dup_pos, side="right") - 1]]
    dups = order[dup_pos]
    keep[dups] = False
    for i, j in sorted(zip(dups.tolist(), firsts.tolist(), strict=True)):
        here, first = sources[srcs[i]].where(locs[i]), sources[srcs[j]].where(locs[j])
        report.add_problem(Problem(here, "duplicate", f"same as {first}"))
    return keep


def _check_usable(report: DataReport, cfg: DataConfig, where: str) -> None:
    if report.rows_ok == 0:
        raise UserError(
            no_usable_reason(report),
            where=cfg.data,
            hint="see `tunewiz data inspect` for every problem",
        )
    blocking = report.blocking_problems
    if cfg.on_bad_rows == "stop" and blocking:
        listed = "; ".join(f"{p.where}: {p.message}" for p in blocking[:5])
        more = sum(n for k, n in report.problem_counts.items() if k not in WARNING_KINDS) - min(
            5, len(blocking)
        )
        raise UserError(
            f"{report.rows_bad} bad rows and on_bad_rows = stop: {listed}"
            + (f" (and {more} more)" if more > 0 else ""),
            where=where,
            hint="fix these rows, or set data.on_bad_rows = skip to train without them",
        )


def no_usable_reason(report: DataReport) -> str:
    """Why no row can be trained on, in one sentence."""
    if report.rows_total == 0:
        return "no rows: the data is empty"
    counts = {k: n for k, n in report.problem_counts.items() if k not in WARNING_KINDS}
    first = next(iter(report.blocking_problems), None)
    summary = ", ".join(
        f"{n} {k.replace('_', ' ')}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])
    )
    text = f"no usable row: all {report.rows_total} rows have problems ({summary})"
    if first is not None:
        text += f"; first at {first.where}: {first.message}"
    return text
