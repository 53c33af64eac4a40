"""Reading preference data for dpo / orpo / kto: checked rows, both sides previewed with their masking.

Rows keep TRL's conversational shape (`tunewiz.core.data.preference_rows`); TRL's
trainers tokenize them in the worker with the same chat template. Here each
side is also rendered and tokenized once, for the report: token lengths, rows
past max_seq_len, and the masking shown on the data screen.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from collections.abc import Callable

from tunewiz.core.config import DataConfig
from tunewiz.core.data.formats import detect_format
from tunewiz.core.data.load import resolve_sources
from tunewiz.core.data.pipeline import (
    PREVIEW_ROWS,
    CancelFlag,
    DataCancelled,
    PreparedData,
    _batches,
    _check_usable,
    _empty_message,
    _read_ahead,
    _records,
)
from tunewiz.core.data.preference_rows import normalize_kto, normalize_pair, unpair
from tunewiz.core.data.report import DataReport, Problem
from tunewiz.core.data.stats import split, token_stats
from tunewiz.core.data.template import (
    TemplateError,
    Tokenizer,
    chat_template_for,
    render,
    tokenize_rendered,
)
from tunewiz.core.errors import UserError

NOTES = {
    "dpo": "preference data for dpo: each row trains on both answers, the chosen one over the rejected",
    "orpo": "preference data for orpo: each row trains on both answers (chosen over rejected), "
    "with no reference model",
    "kto": "KTO data: each answer is learnt as good (label true) or bad (label false)",
}


def prepare_preference(
    cfg: DataConfig,
    tokenizer: Tokenizer | None,
    objective: str,
    *,
    cancel: CancelFlag | None = None,
    progress: Callable[[int], None] | None = None,
    batch_size: int = 4,
) -> PreparedData:
    """Checked preference rows split for training; UserError when none is usable. `progress`
    hears the rows read so far (the worker's `preparing` state shows them)."""
    report, rows = scan_preference(
        cfg, tokenizer, objective, cancel=cancel, progress=progress, batch_size=batch_size
    )
    _check_usable(report, cfg, "data.data")
    eval_report = None
    if cfg.validation_file:
        vcfg = dataclasses.replace(cfg, data=cfg.validation_file)
        eval_report, evals = scan_preference(vcfg, tokenizer, objective, batch_size=batch_size)
        _check_usable(eval_report, vcfg, "data.validation_file")
        train = rows
    else:
        groups, eval_groups = split([[r] for r in rows], cfg.validation_split, cfg.split_seed)
        train, evals = [r for g in groups for r in g], [r for g in eval_groups for r in g]
    if objective == "kto":  # a pair becomes two rows after the split: both stay on one side
        train = [k for r in train for k in (unpair(r) if "chosen" in r else [r])]
        evals = [k for r in evals for k in (unpair(r) if "chosen" in r else [r])]
        random.Random(cfg.split_seed).shuffle(train)  # trained in this order (sequential sampling)
    return PreparedData(
        train=train,
        eval=evals or None,
        report=report,
        chat_template=chat_template_for(tokenizer),
        eval_report=eval_report,
    )


def scan_preference(
    cfg: DataConfig,
    tokenizer: Tokenizer | None,
    objective: str,
    *,
    cancel: CancelFlag | None = None,
    batch_size: int = 4,
    progress: Callable[[int], None] | None = None,
) -> tuple[DataReport, list[dict]]:
    """Every row read and checked; the usable ones in TRL's conversational shape.

    Rows are read and measured `BATCH` at a time, with `progress(rows read)` after each
    batch, as for SFT data: measuring (rendering both answers) is the slow part."""
    sources = resolve_sources(cfg.data, hub_config=cfg.data_config_name, hub_split=cfg.data_split)
    report = DataReport(source=cfg.data, task=cfg.task, preference_data=True)
    head, rest = _read_ahead(_records(sources, cfg.text_split))
    sample = [r[2] for r in head if r[2] is not None]
    if not sample:
        raise UserError(_empty_message(head, sources), where=cfg.data)
    fmt, mapping, report.evidence = detect_format(sample, cfg.columns, cfg.format)
    report.format = fmt
    _check_layout(fmt, objective)
    report.notes.append(NOTES[objective])
    if fmt == "preference" and objective == "kto":
        report.notes.append("each chosen/rejected pair trains as two KTO rows (good and bad)")
    rows: list[dict] = []
    first_seen: dict[str, str] = {}
    measured = _Measured()
    for batch in _batches(itertools.chain(head, rest)):
        if cancel is not None and cancel.is_set():
            raise DataCancelled()
        fresh = _checked(batch, fmt, mapping, sources, report, first_seen)
        rows += (
            _measure(fresh, tokenizer, cfg, report, measured) if tokenizer is not None else fresh
        )
        if progress is not None:
            progress(report.rows_total)
    if tokenizer is not None:
        report.token_stats = token_stats(
            measured.lengths,
            cfg.max_seq_len,
            trained_tokens=measured.trained,
            batch_size=batch_size,
        )
    report.rows_ok = len(rows)
    report.preview = [{k: v for k, v in r.items() if k != "_where"} for r in rows[:PREVIEW_ROWS]]
    for r in rows:
        r.pop("_where", None)
    return report, rows


def _checked(
    batch: list, fmt: str, mapping: dict, sources: list, report: DataReport, first_seen: dict
) -> list[dict]:
    """The batch's usable rows (TRL's shape, with `_where`); problems go to the report."""
    rows: list[dict] = []
    for si, loc, row, problem in batch:
        report.rows_total += 1
        if problem is not None:
            report.add_problem(problem)
            continue
        col = mapping.get
        norm, issues, _ = normalize_kto(row, col) if fmt == "kto" else normalize_pair(row, col)
        where = sources[si].where(loc)
        for fld, kind, msg in issues:
            report.add_problem(Problem(sources[si].where(loc, fld), kind, msg))
        if norm is None:
            continue
        key = json.dumps(norm, sort_keys=True)
        if key in first_seen:
            report.add_problem(Problem(where, "duplicate", f"same as {first_seen[key]}"))
            continue
        first_seen[key] = where
        rows.append({**norm, "_where": where})
    return rows


def _check_layout(fmt: str, objective: str) -> None:
    if fmt == "kto" and objective in ("dpo", "orpo"):
        raise UserError(
            f"{objective} needs pairs of answers (chosen and rejected); these rows have one "
            "answer each, marked by `label`",
            where="training.objective",
            hint="train this data with --objective kto",
        )
    if fmt not in ("preference", "kto"):
        raise UserError(
            f"objective {objective} needs preference data (chosen/rejected, or completion + "
            f"label); this looks like {fmt}",
            where="data.data",
            hint="give rows with prompt/chosen/rejected, or use --objective sft",
        )


def _sides(row: dict) -> list[str]:
    return ["chosen", "rejected"] if "chosen" in row else ["completion"]


@dataclasses.dataclass
class _Measured:
    """Token counts gathered batch by batch, for the statistics at the end."""

    lengths: list[int] = dataclasses.field(default_factory=list)
    trained: int = 0


def _measure(
    rows: list[dict], tokenizer: Tokenizer, cfg: DataConfig, report: DataReport, into: _Measured
) -> list[dict]:
    """Tokenize each side as training will see it: lengths, truncation, masking examples."""
    template = chat_template_for(tokenizer)
    report.chat_template = template
    kept = []
    for row in rows:
        sides = _sides(row)
        try:
            rendered = [render(row["prompt"] + row[s], tokenizer, template) for s in sides]
        except TemplateError as exc:
            report.add_problem(Problem(row["_where"], "template_error", str(exc)))
            continue
        # Only the completion trains: the answers inside the prompt are context.
        spans: list[list[tuple[int, int]] | None] = [
            sp[-len(row[s]) :] for (_, sp), s in zip(rendered, sides, strict=True)
        ]
        toks = tokenize_rendered([t for t, _ in rendered], spans, tokenizer, cfg.max_seq_len)
        longest = max(t.length for t in toks)
        if longest > cfg.max_seq_len:
            lost = longest - cfg.max_seq_len
            report.add_problem(
                Problem(row["_where"], "too_long", f"{longest} tokens: truncated, {lost} lost")
            )
        empty = [s for s, t in zip(sides, toks, strict=True) if t.trained == 0]
        if empty:
            report.add_problem(
                Problem(row["_where"], "no_trainable", f"no {empty[0]} token left after truncation")
            )
            continue
        kept.append(row)
        into.lengths.append(longest)
        into.trained += sum(t.trained for t in toks)
        if len(report.examples) < PREVIEW_ROWS:
            report.examples.append(
                {
                    s: {"input_ids": t.input_ids, "labels": t.labels}
                    for s, t in zip(sides, toks, strict=True)
                }
            )
    return kept
