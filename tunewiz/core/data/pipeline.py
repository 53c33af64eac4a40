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
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tunewiz.core.config import DataConfig
from tunewiz.core.data.formats import (
    FORMAT_NAMES,
    TOOL_PARTS,
    Normalized,
    detect_format,
    normalize,
    suggest_task,
)
from tunewiz.core.data.load import Source, read_source, resolve_sources
from tunewiz.core.data.report import WARNING_KINDS, DataReport, Problem, TokenStats
from tunewiz.core.data.stats import pack, packed_count, split, token_stats
from tunewiz.core.data.template import (
    TOOL_TEMPLATE_FAMILIES,
    TemplateError,
    Tokenized,
    Tokenizer,
    chat_template_for,
    gap_tokens,
    render,
    template_supports_tools,
    tokenize_rendered,
)
from tunewiz.core.errors import UserError

if TYPE_CHECKING:
    from multiprocessing.pool import AsyncResult
    from pathlib import Path

    import numpy as np
    import numpy.typing as npt

    BoolArray = npt.NDArray[np.bool_]

log = logging.getLogger(__name__)

BATCH = 2048  # rows per tokenizer call (and per progress report)
SAMPLE_ROWS = 200  # rows read ahead to detect the format
PREVIEW_ROWS = 3

# (source index, loc, row, problem): a record of `load` with the source it came from
SourceRecord = tuple[int, int, "dict | None", "Problem | None"]
UsableRow = tuple[int, int, dict]  # (source index, loc, the row normalised)
RowTokens = tuple[list[dict], int, int]  # (examples, length before truncation, trained tokens)
# Per usable row of a batch: (source index, loc, content hash, examples or None, length,
# trained tokens, made by `tunewiz data augment`); examples travel back from a batch only
# when kept or shown
KeptRow = tuple[int, int, int, "list[dict] | None", int, int, bool]
AUGMENTED_FROM = "augmented_from"  # the field in which a made-up row names its source row

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
    """Whether examples are packed into full sequences (`auto`: for the text task only)."""
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


def _count_lines(path: Path) -> int:
    """Lines in a file, a last one without its newline included, read 1 MB at a time."""
    n, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def inspect_data(
    cfg: DataConfig,
    tokenizer: Tokenizer | None = None,
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
    tokenizer: Tokenizer | None,
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

        return prepare_preference(
            cfg, tokenizer, objective, cancel=cancel, progress=progress, batch_size=batch_size
        )
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


def row_view(cfg: DataConfig, number: int, tokenizer: Tokenizer | None = None) -> RowView:
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
    assert row is not None  # a record holds a row or a problem
    sample = [r[2] for r in head if r[2] is not None]
    fmt, mapping, _ = detect_format(sample, cfg.columns, cfg.format)
    job = _job(cfg, fmt, mapping, sources, tokenizer, keep=True)
    removed: list[tuple[int, str]] = []
    norm, issues, _skipped = _normalize_mixed(row, fmt, mapping, cfg, job.tools, removed)
    if issues or norm is None:
        view.problem = "; ".join(msg for _f, _k, msg in issues)
    elif tokenizer is not None:
        done = _Done(rows=1, problems=[], skipped={})
        tok = _tokenize([(si, loc, norm)], job, tokenizer, done)[0]
        if tok is not None:
            view.example = tok[0][0]
            if removed and job.template is not None:
                view.gaps = gap_tokens(norm["messages"], removed, tokenizer, job.template)
        elif done.problems:
            view.problem = done.problems[0].message
    return view


# -- reading -------------------------------------------------------------------


def _records(sources: list[Source], text_split: str) -> Iterator[SourceRecord]:
    """Every record of every source in turn, with the index of the source it came from."""
    for si, src in enumerate(sources):
        for loc, row, problem in read_source(src, text_split=text_split):
            yield si, loc, row, problem


def _read_ahead(
    records: Iterator[SourceRecord],
) -> tuple[list[SourceRecord], Iterator[SourceRecord]]:
    """The first records, up to SAMPLE_ROWS readable ones (to tell the format from), and
    the iterator that goes on after them."""
    head: list[SourceRecord] = []
    good = 0
    for rec in records:
        head.append(rec)
        good += rec[2] is not None
        if good >= SAMPLE_ROWS:
            break
    return head, records


def _empty_message(head: list[SourceRecord], sources: list[Source]) -> str:
    """Why no row of `head` (the first records) can be read: there are none, or each has a
    problem."""
    if not head:
        names = ", ".join(s.name for s in sources[:3])
        return f"no rows: the data is empty ({names})"
    first = head[0][3]
    assert first is not None  # called when no record of head holds a row
    return f"no readable row: all {len(head)} rows read have problems, first at {first.where}: {first.message}"


# -- the scan: format, rows, duplicates, summary -------------------------------


def _scan(
    cfg: DataConfig,
    tokenizer: Tokenizer | None,
    *,
    keep: bool,
    cancel: CancelFlag | None,
    progress: Callable[[int], None] | None,
    batch_size: int,
    num_proc: int = 1,
) -> tuple[DataReport, list[list[dict]]]:
    """Read every row once: the report, and one group of examples per usable row (only with
    `keep` and a tokenizer; a long text document makes several examples).

    The steps, in order: detect the format from the first rows; read and normalise,
    tokenise and mask every row (batch by batch, maybe in other processes); mark
    duplicates; summarise.
    """
    sources = resolve_sources(cfg.data, hub_config=cfg.data_config_name, hub_split=cfg.data_split)
    source_name = str(sources[0].path) if cfg.data == "sample" and sources[0].path else cfg.data
    report = DataReport(source=source_name, task=cfg.task)
    head, rest = _read_ahead(_records(sources, cfg.text_split))
    if not head:
        raise UserError(_empty_message(head, sources), where=cfg.data)
    fmt, mapping = _read_format(cfg, head, report)
    job = _job(cfg, fmt, mapping, sources, tokenizer, keep)
    report.chat_template = job.template  # None for the text task: no template renders it
    rows = _read_rows(job, itertools.chain(head, rest), report, cancel, progress, num_proc)
    keep_mask = _mark_duplicates(rows, sources, report)
    return report, _summarise(report, rows, keep_mask, job, batch_size)


# -- 1. the format, from the first rows ----------------------------------------


def _read_format(cfg: DataConfig, head: list[SourceRecord], report: DataReport) -> tuple[str, dict]:
    """The format (and column mapping) the rows are read in, told from the first rows and
    recorded in the report; UserError when the task cannot train on data of that format."""
    sample = [r[2] for r in head if r[2] is not None]
    if sample:
        fmt, mapping, evidence = _detect_for_task(sample, cfg)
    else:  # nothing readable: every row is reported, the format stays unknown
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


def _row_format(row: dict, cfg: DataConfig) -> tuple[str | None, dict]:
    """The format of one row on its own (and its column mapping); None when it has none."""
    try:
        fmt, mapping, _ = detect_format([row], cfg.columns)
    except UserError:
        return None, {}
    return fmt, mapping


@dataclass
class _Job:
    """Everything a batch needs; inherited by forked helper processes, never pickled."""

    cfg: DataConfig
    fmt: str
    mapping: dict
    sources: list[Source]
    tokenizer: Tokenizer | None
    template: str | None  # None for the text task, or without a tokenizer
    keep: bool
    tools: bool = False  # the template renders tool calls: rows keep them


def _job(
    cfg: DataConfig,
    fmt: str,
    mapping: dict,
    sources: list[Source],
    tokenizer: Tokenizer | None,
    keep: bool,
) -> _Job:
    """The job for these rows: the chat template that renders them and whether it renders
    tool calls (plain text has no template)."""
    if cfg.task == "text" or tokenizer is None:
        return _Job(cfg, fmt, mapping, sources, tokenizer, None, keep)
    template = chat_template_for(tokenizer)
    tools = template_supports_tools(tokenizer, template)
    return _Job(cfg, fmt, mapping, sources, tokenizer, template, keep, tools)


# -- 2. every row normalised, tokenised and masked, by batch -------------------


@dataclass
class _Rows:
    """One entry per usable row, duplicates included (they are only found once every row is
    read): compact arrays keep memory flat, examples are held only when kept."""

    hashes: array[int] = dataclasses.field(default_factory=lambda: array("q"))  # content
    srcs: array[int] = dataclasses.field(default_factory=lambda: array("H"))  # source index
    locs: array[int] = dataclasses.field(default_factory=lambda: array("q"))  # line or index
    lengths: array[int] = dataclasses.field(default_factory=lambda: array("q"))  # tokens
    trained: array[int] = dataclasses.field(default_factory=lambda: array("q"))  # trained tokens
    # 1 for a row `tunewiz data augment` made (it names its source in `augmented_from`)
    variants: array[int] = dataclasses.field(default_factory=lambda: array("b"))
    examples: list[list[dict]] = dataclasses.field(default_factory=list)  # with `keep`
    # (row index, normalised row, its examples) for the first rows, candidates for the preview
    previews: list[tuple[int, dict, list[dict]]] = dataclasses.field(default_factory=list)
    split_docs: int = 0  # text documents longer than max_seq_len (several examples)


def _read_rows(
    job: _Job,
    records: Iterator[SourceRecord],
    report: DataReport,
    cancel: CancelFlag | None,
    progress: Callable[[int], None] | None,
    num_proc: int,
) -> _Rows:
    """Read and normalise, then tokenise and mask every record, batch by batch: the batches'
    problems and counts go to `report`, their usable rows come back."""
    rows = _Rows()
    for done in _run_batches(job, _batches(records), num_proc):
        if cancel is not None and cancel.is_set():
            raise DataCancelled()
        _count_batch(report, done)
        _keep_batch(rows, done, job)
        if progress is not None:
            progress(report.rows_total)
    return rows


def _count_batch(report: DataReport, done: _Done) -> None:
    """Add one batch's rows, problems and counts to the report."""
    report.rows_total += done.rows
    for problem in done.problems:
        report.add_problem(problem)
    for part, n in done.skipped.items():
        report.skipped_parts[part] = report.skipped_parts.get(part, 0) + n
    report.boundary_merges += done.boundary_merges
    report.tool_rows += done.tool_rows
    report.cut_lengths.extend(done.cut_lengths)


def _keep_batch(rows: _Rows, done: _Done, job: _Job) -> None:
    """Append one batch's usable rows: their hashes and places always, their token counts
    with a tokenizer, their examples when the job keeps them."""
    for i, (si, loc, key, exs, length, n_trained, variant) in enumerate(done.kept):
        rows.hashes.append(key)
        rows.variants.append(variant)
        rows.srcs.append(si)
        rows.locs.append(loc)
        if job.tokenizer is not None:
            rows.lengths.append(length)
            rows.trained.append(n_trained)
            # from the length, not the examples: those come back only for kept or shown rows
            rows.split_docs += job.cfg.task == "text" and length > job.cfg.max_seq_len
            if job.keep:
                rows.examples.append(exs or [])
        if i in done.previews and len(rows.previews) < PREVIEW_ROWS * 3:
            rows.previews.append((len(rows.hashes) - 1, done.previews[i], exs or []))


@dataclass
class _Done:
    """One batch's outcome, apart from the report: batches may run in other processes."""

    rows: int
    problems: list[Problem]
    skipped: dict[str, int]
    boundary_merges: int = 0
    tool_rows: int = 0  # usable rows that kept tool calls or results
    cut_lengths: list[int] = dataclasses.field(default_factory=list)  # rows cut to nothing
    kept: list[KeptRow] = dataclasses.field(default_factory=list)
    previews: dict[int, dict] = dataclasses.field(default_factory=dict)  # kept index -> row


def _batches(records: Iterator[SourceRecord]) -> Iterator[list[SourceRecord]]:
    """The records in lists of BATCH (one tokenizer call each), read as they are needed."""
    while batch := list(itertools.islice(records, BATCH)):
        yield batch


def _run_batches(
    job: _Job, batches: Iterator[list[SourceRecord]], num_proc: int
) -> Iterator[_Done]:
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
    pending: collections.deque[AsyncResult[_Done]] = collections.deque()
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


def _process_in_child(batch: list[SourceRecord]) -> _Done:
    assert _CHILD_JOB is not None
    return _process(_CHILD_JOB, batch)


def _process(job: _Job, batch: list[SourceRecord]) -> _Done:
    """Check, normalise and (with a tokenizer) tokenize one batch of records."""
    done = _Done(rows=len(batch), problems=[], skipped={})
    good: list[UsableRow] = []
    made: list[bool] = []  # per good row: a variant written by `tunewiz data augment`
    for si, loc, row, problem in batch:
        if problem is not None:
            done.problems.append(problem)
            continue
        assert row is not None  # a record holds a row or a problem
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
        made.append(AUGMENTED_FROM in row)
        done.tool_rows += job.tools and _uses_tools(norm)
    toks: Sequence[tuple[list[dict] | None, int, int] | None]
    if job.tokenizer is None:
        toks = [(None, 0, 0)] * len(good)
    else:
        toks = _tokenize(good, job, job.tokenizer, done) if good else []
    for (si, loc, norm), tok, variant in zip(good, toks, made, strict=True):
        if tok is None:
            continue  # reported by _tokenize
        exs, length, n_trained = tok
        preview = len(done.previews) < PREVIEW_ROWS * 3
        if preview:
            done.previews[len(done.kept)] = norm
        # Examples travel back only when kept (or shown): pickling them is most of the cost.
        exs = exs if job.keep or preview else None
        done.kept.append((si, loc, hash(_row_key(norm)), exs, length, n_trained, variant))
    return done


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
) -> Normalized:
    """normalize() in the detected format; with the format detected (not set), a row that
    does not fit it but is itself of a format the task reads (a file mixing Alpaca and
    `messages` rows) is read in its own format instead of dropped. A KTO row (an answer
    labelled good or bad) among SFT rows is a problem: its bad answer must not be learnt."""
    if isinstance(row.get("label"), bool) and fmt != "kto":
        return None, [("label", "kto_row", KTO_ROW_IN_SFT)], Counter()
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


def _uses_tools(norm: dict) -> bool:
    """Whether a normalised row kept tool definitions, calls or results."""
    return "tools" in norm or any(
        m["role"] == "tool" or "tool_calls" in m for m in norm.get("messages", ())
    )


def _row_key(norm: dict) -> str | tuple[str, ...]:
    """What makes two normalised rows the same (hashed to find duplicates)."""
    if "text" in norm:
        return norm["text"]
    if "tools" in norm or any("tool_calls" in m for m in norm["messages"]):
        return json.dumps(norm, sort_keys=True, default=str)  # calls and results count too
    return tuple([x for m in norm["messages"] for x in (m["role"], m["content"])])


def _tokenize(
    good: list[UsableRow], job: _Job, tokenizer: Tokenizer, done: _Done
) -> list[RowTokens | None]:
    """Per usable row: (examples, length before truncation, trained tokens), or None if it
    failed (the problem is added to `done`)."""
    if job.cfg.task == "text":
        return _tokenize_text(good, job.cfg, tokenizer)
    return _tokenize_chat(good, job, tokenizer, done)


def _tokenize_text(
    good: list[UsableRow], cfg: DataConfig, tokenizer: Tokenizer
) -> list[RowTokens | None]:
    """Plain text, every token trained; a document longer than max_seq_len is split into
    chunks of that length rather than cut."""
    max_len = cfg.max_seq_len
    toks = tokenize_rendered(
        [n["text"] for _, _, n in good],
        [None] * len(good),
        tokenizer,
        max_len,
        add_special_tokens=True,
        append_eos=True,
        truncate=False,
    )
    out: list[RowTokens | None] = []
    for t in toks:
        chunks = [
            {"input_ids": t.input_ids[a : a + max_len], "labels": t.labels[a : a + max_len]}
            for a in range(0, len(t.input_ids), max_len)
        ]
        out.append((chunks, t.length, t.length))
    return out


def _tokenize_chat(
    good: list[UsableRow], job: _Job, tokenizer: Tokenizer, done: _Done
) -> list[RowTokens | None]:
    """Conversations rendered with the chat template and masked so that only the answers
    train (all of it with train_on_inputs); truncated to max_seq_len."""
    max_len = job.cfg.max_seq_len
    out: list[RowTokens | None] = [None] * len(good)
    texts, spans, idx = _render_rows(good, job, tokenizer, done)
    if not texts:
        return out
    toks = tokenize_rendered(texts, spans, tokenizer, max_len)
    for i, t in zip(idx, toks, strict=False):
        si, loc, _ = good[i]
        if _check_tokens(t, job.sources[si].where(loc), max_len, done):
            out[i] = ([{"input_ids": t.input_ids, "labels": t.labels}], t.length, t.trained)
    return out


def _render_rows(
    good: list[UsableRow], job: _Job, tokenizer: Tokenizer, done: _Done
) -> tuple[list[str], list[list[tuple[int, int]] | None], list[int]]:
    """The rows the chat template renders: (texts, answer spans or None to train every
    token, their indices in `good`); a row the template refuses is a problem."""
    assert job.template is not None  # a tokenizer always brings a template
    texts: list[str] = []
    spans: list[list[tuple[int, int]] | None] = []
    idx: list[int] = []
    for i, (si, loc, norm) in enumerate(good):
        try:
            text, row_spans = render(norm["messages"], tokenizer, job.template, norm.get("tools"))
        except TemplateError as exc:
            done.problems.append(
                Problem(
                    job.sources[si].where(loc),
                    "template_error",
                    f"the chat template refused this row: {exc}",
                )
            )
            continue
        texts.append(text)
        spans.append(None if job.cfg.train_on_inputs else row_spans)
        idx.append(i)
    return texts, spans, idx


def _check_tokens(t: Tokenized, where: str, max_len: int, done: _Done) -> bool:
    """Whether a tokenized row is usable; what truncation and masking did to it goes to
    `done` (tokens lost, a token across an answer's start, nothing left to train)."""
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
        return False
    return True


# -- 3. duplicates -------------------------------------------------------------


def _mark_duplicates(rows: _Rows, sources: list[Source], report: DataReport) -> BoolArray:
    """Later copies of a row are problems; the first copy is kept. Returns a keep mask.

    Rows are compared by the hash of their normalized content, sorted once at the
    end (a few bytes per row) rather than kept in a set while reading.
    """
    import numpy as np

    n = len(rows.hashes)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    h = np.frombuffer(rows.hashes, dtype=np.int64)
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
        here = sources[rows.srcs[i]].where(rows.locs[i])
        first = sources[rows.srcs[j]].where(rows.locs[j])
        report.add_problem(Problem(here, "duplicate", f"same as {first}"))
    return keep


# -- 4. the summary ------------------------------------------------------------


def _summarise(
    report: DataReport, rows: _Rows, keep_mask: BoolArray, job: _Job, batch_size: int
) -> list[list[dict]]:
    """Fill in what is known once duplicates are out: usable rows, previews, token statistics
    and notes. Returns the kept rows' examples (empty unless the job keeps them)."""
    report.rows_ok = int(keep_mask.sum())
    _note_tools(report, job)
    for index, norm, exs in rows.previews:
        if keep_mask[index] and len(report.preview) < PREVIEW_ROWS:
            report.preview.append(norm)
            if exs:
                report.examples.append(exs[0])
    if job.tokenizer is None:
        return []
    report.token_stats = _token_summary(rows, keep_mask, job.cfg, batch_size, report.cut_lengths)
    _note_lengths(report, rows.split_docs, job.cfg)
    if not job.keep:
        return []
    return _with_their_variants(rows, keep_mask)


def _with_their_variants(rows: _Rows, keep_mask: BoolArray) -> list[list[dict]]:
    """One group of examples per kept row, except that the rows `tunewiz data augment` made
    join the row before them (their original, written just above them): a split never puts
    a rephrasing of a training question into validation, where it would flatter the loss."""
    groups: list[list[dict]] = []
    for exs, variant, k in zip(rows.examples, rows.variants, keep_mask, strict=True):
        if not k:
            continue
        if variant and groups:
            groups[-1] = groups[-1] + exs
        else:
            groups.append(exs)
    return groups


def _token_summary(
    rows: _Rows, keep_mask: BoolArray, cfg: DataConfig, batch_size: int, cut: list[int]
) -> TokenStats | None:
    """Token statistics of the rows kept, with the sequences training will make of them."""
    lengths = [n for n, k in zip(rows.lengths, keep_mask, strict=False) if k]
    text_task = cfg.task == "text"
    stats = token_stats(
        lengths,
        cfg.max_seq_len,
        trained_tokens=sum(t for t, k in zip(rows.trained, keep_mask, strict=False) if k),
        batch_size=batch_size,
        truncates=not text_task,
        cut=cut,
    )
    if stats is None:
        return None
    if text_task:  # long documents become several chunks
        chunks = [
            min(max(n - a, 0), cfg.max_seq_len)
            for n in lengths
            for a in range(0, n, cfg.max_seq_len)
        ]
        stats.sequences = (
            packed_count(chunks, cfg.max_seq_len) if packing_enabled(cfg) else len(chunks)
        )
    elif packing_enabled(cfg):
        stats.sequences = packed_count(lengths, cfg.max_seq_len)
    return stats


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


def _note_lengths(report: DataReport, split_docs: int, cfg: DataConfig) -> None:
    """Say what became of tokens that cross an answer's start, and of documents too long."""
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


# -- usable or not -------------------------------------------------------------


def _check_usable(report: DataReport, cfg: DataConfig, where: str) -> None:
    """UserError when no row is usable, or when a row is bad and on_bad_rows is `stop`."""
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
