"""From what the user named to checked, tokenized, labelled examples.

`inspect_data` reads everything once and reports; `prepare` does the same and
returns the examples training uses. Both stream the rows: without a tokenizer
memory stays flat except ~20 bytes per usable row (for finding duplicates).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from core.config import DataConfig
from core.data.formats import FORMAT_NAMES, detect_format, normalize, suggest_task
from core.data.load import Source, read_source, resolve_sources
from core.data.report import WARNING_KINDS, DataReport, Problem
from core.data.stats import pack, packed_count, split, token_stats
from core.data.template import TemplateError, chat_template_for, render, tokenize_rendered
from core.errors import UserError

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


def detect(cfg: DataConfig) -> tuple[str, str, list[str]]:
    """(format, suggested task, evidence) from the first rows, without reading everything."""
    sources = resolve_sources(cfg.data, hub_config=cfg.data_config_name, hub_split=cfg.data_split)
    head, _ = _read_ahead(_records(sources, cfg.text_split))
    sample = [r[2] for r in head if r[2] is not None]
    if not sample:
        raise UserError(_empty_message(head, sources), where=cfg.data)
    fmt, _, evidence = detect_format(sample, cfg.columns, cfg.format)
    return fmt, suggest_task(fmt), evidence


def inspect_data(
    cfg: DataConfig,
    tokenizer=None,
    *,
    cancel: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
    batch_size: int = 4,
) -> DataReport:
    """Read and check every row; token statistics when a tokenizer is given. Never raises for bad rows."""
    report, _ = _scan(
        cfg, tokenizer, keep=False, cancel=cancel, progress=progress, batch_size=batch_size
    )
    return report


def prepare(
    cfg: DataConfig,
    tokenizer,
    *,
    cancel: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
    batch_size: int = 4,
) -> PreparedData:
    """Checked, tokenized, split (and packed) examples; UserError when nothing usable, or bad rows and `stop`."""
    report, groups = _scan(
        cfg, tokenizer, keep=True, cancel=cancel, progress=progress, batch_size=batch_size
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
            vcfg, tokenizer, keep=True, cancel=cancel, progress=None, batch_size=batch_size
        )
        _check_usable(eval_report, vcfg, "data.validation_file")
        train_groups = groups
    else:
        # split rows, not examples: the chunks of one long document stay on one side
        train_groups, eval_groups = split(groups, cfg.validation_split, cfg.split_seed)
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


# -- reading -------------------------------------------------------------------


def _records(
    sources: list[Source], text_split: str
) -> Iterator[tuple[int, int, dict | None, Problem | None]]:
    for si, src in enumerate(sources):
        for loc, row, problem in read_source(src, text_split=text_split):
            yield si, loc, row, problem


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
    return tuple([x for m in norm["messages"] for x in (m["role"], m["content"])])


def _scan(cfg: DataConfig, tokenizer, *, keep: bool, cancel, progress, batch_size: int):
    sources = resolve_sources(cfg.data, hub_config=cfg.data_config_name, hub_split=cfg.data_split)
    source_name = str(sources[0].path) if cfg.data == "sample" and sources[0].path else cfg.data
    report = DataReport(source=source_name, task=cfg.task)
    head, rest = _read_ahead(_records(sources, cfg.text_split))
    sample = [r[2] for r in head if r[2] is not None]
    if not head:
        raise UserError(_empty_message(head, sources), where=cfg.data)
    if sample:
        fmt, mapping, evidence = detect_format(sample, cfg.columns, cfg.format)
    else:  # nothing readable: every row is reported below, the format stays unknown
        fmt, mapping, evidence = "unknown", {}, ["no readable row to tell the format from"]
    report.format, report.evidence = fmt, evidence
    report.preference_data = fmt == "preference"
    if report.preference_data:
        report.notes.append(
            "preference data: tunewiz trains on the prompt and the `chosen` answer; `rejected` is not used"
        )
    if fmt != "unknown" and fmt not in TASK_FORMATS.get(cfg.task, ()):
        raise UserError(
            f"the {cfg.task} task does not read {FORMAT_NAMES.get(fmt, fmt)} data",
            where="data.task",
            hint=f"this data fits the {suggest_task(fmt)} task (--task {suggest_task(fmt)}); "
            f"{cfg.task} reads: {', '.join(TASK_FORMATS[cfg.task])}",
        )
    text_task = cfg.task == "text"
    template = chat_template_for(tokenizer) if tokenizer is not None else None
    report.chat_template = template if not text_task else None

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

    records = itertools.chain(head, rest)
    while True:
        batch = list(itertools.islice(records, BATCH))
        if not batch:
            break
        if cancel is not None and cancel.is_set():
            raise DataCancelled()
        good: list[tuple[int, int, dict]] = []
        report.rows_total += len(batch)
        for si, loc, row, problem in batch:
            if problem is not None:
                report.add_problem(problem)
                continue
            norm, issues, skipped = normalize(row, fmt, mapping)
            if skipped:
                for part, n in skipped.items():
                    report.skipped_parts[part] = report.skipped_parts.get(part, 0) + n
            if issues:
                src = sources[si]
                for fld, kind, msg in issues:
                    report.add_problem(Problem(src.where(loc, fld), kind, msg))
                continue
            assert norm is not None  # normalize returns a row or the issues that stop it
            good.append((si, loc, norm))
        if tokenizer is None:
            for si, loc, norm in good:
                hashes.append(hash(_row_key(norm)))
                srcs.append(si)
                locs.append(loc)
            if len(previews) < PREVIEW_ROWS * 3:
                base = len(hashes) - len(good)
                previews.extend(
                    (base + i, n, []) for i, (_, _, n) in enumerate(good[: PREVIEW_ROWS * 3])
                )
        else:
            toks = _tokenize(good, tokenizer, template, cfg, sources, report) if good else []
            for (si, loc, norm), tok in zip(good, toks, strict=True):
                if tok is None:
                    continue  # reported by _tokenize
                hashes.append(hash(_row_key(norm)))
                srcs.append(si)
                locs.append(loc)
                exs, length, n_trained = tok
                lengths.append(length)
                trained.append(n_trained)
                split_docs += len(exs) > 1
                if keep:
                    row_examples.append(exs)
                if len(previews) < PREVIEW_ROWS * 3:
                    previews.append((len(hashes) - 1, norm, exs))
        if progress is not None:
            progress(report.rows_total)

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


def _tokenize(good, tokenizer, template, cfg: DataConfig, sources, report: DataReport):
    """Per usable row: (examples, length before truncation, trained tokens), or None if it failed."""
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
    texts, spans, idx = [], [], []
    for i, (si, loc, norm) in enumerate(good):
        try:
            text, row_spans = render(norm["messages"], tokenizer, template)
        except TemplateError as exc:
            report.add_problem(
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
            report.add_problem(
                Problem(
                    where,
                    "too_long",
                    f"{t.length} tokens: truncated to {max_len}, {t.length - max_len} tokens lost",
                )
            )
        if t.straddles:
            report.boundary_merges += 1
        if t.trained == 0:
            why = " (the answer lies past max_seq_len)" if t.length > max_len else ""
            report.add_problem(
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
