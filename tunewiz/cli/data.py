"""`tunewiz data inspect PATH`: what is in a dataset, what is wrong with it and where, before
training; `tunewiz data augment PATH`: more rows, the questions rephrased by a model."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from tunewiz.core.config import DATA_FORMATS, OBJECTIVES, TASKS, TEXT_SPLITS
from tunewiz.core.errors import UserError
from tunewiz.core.text import dumps_json, visible

if TYPE_CHECKING:
    from rich.console import Console

    from tunewiz.core.data import DataReport, TokenStats
    from tunewiz.core.data.template import Tokenizer

BAR = "█"


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="Check and inspect training data.")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    p = sub.add_parser(
        "inspect",
        help="Detect the format, check every row, show token statistics and a masked example.",
        description="Read a dataset the way training will and report what it found: the format and "
        "why, row counts, every problem with its place, token statistics, and one rendered example "
        "with the trained tokens highlighted.",
    )
    p.add_argument("path", help="A file, a folder of files, a hub dataset id, or `sample`.")
    p.add_argument("--task", choices=TASKS, help="Default: guessed from the format.")
    p.add_argument(
        "--format",
        default="auto",
        choices=DATA_FORMATS,
        help="Row format; detected when auto.",
    )
    p.add_argument(
        "--columns", default="", help="Map columns, e.g. prompt=question,response=answer"
    )
    p.add_argument(
        "--model", help="Tokenizer for token statistics: `default` (bundled), a folder or a hub id."
    )
    p.add_argument(
        "--max-seq-len", type=int, default=512, help="Maximum sequence length in tokens."
    )
    p.add_argument("--batch-size", type=int, default=4, help="Batch size, for steps per epoch.")
    p.add_argument("--text-split", choices=TEXT_SPLITS, default="paragraph", help=".txt files.")
    p.add_argument("--config-name", default="", help="Hub datasets: the configuration to load.")
    p.add_argument("--split", default="train", help="Hub datasets: the split to load.")
    p.add_argument(
        "--train-on-inputs", action="store_true", help="Train on prompts too (masking view)."
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="sft",
        help="Read the rows as this objective will: dpo/orpo/kto check and show both answers.",
    )
    p.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
    p.set_defaults(func=run_inspect)
    a = sub.add_parser(
        "augment",
        help="Make more rows: each question rephrased by a model, plus its reverse question.",
        description="For each row, the model writes rephrasings of the question (one per "
        "temperature) and the reverse question; the answer is kept. New rows are written in the "
        "input's format with `augmented_from` naming their source row. Resumable: run the same "
        "command again after an interruption.",
    )
    a.add_argument("path", help="The dataset to augment (a file or `sample`).")
    a.add_argument(
        "--model", default="default", help="The model that rephrases (default: bundled)."
    )
    a.add_argument("--variants", type=int, default=3, help="Rephrasings per row (default 3).")
    a.add_argument(
        "--temperatures", default="0.3,0.7,1.0", help="Sampling temperature per variant, cycled."
    )
    a.add_argument("--no-reverse", action="store_true", help="Skip the reverse questions.")
    a.add_argument("--out", required=True, help="Where the new rows go (JSON Lines, appended).")
    a.add_argument("--batch-size", type=int, default=8, help="Rows per generation batch.")
    a.add_argument("--limit", type=int, help="Only the first N usable rows.")
    a.set_defaults(func=run_augment)
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])


def build_config(args: argparse.Namespace):
    from tunewiz.core.config import DataConfig, parse_mapping

    if args.max_seq_len <= 0:
        raise UserError("must be at least 1", where="--max-seq-len")
    cfg = DataConfig(
        data=args.path,
        format=args.format,
        columns=parse_mapping(args.columns, where="--columns"),
        max_seq_len=args.max_seq_len,
        text_split=args.text_split,
        data_config_name=args.config_name,
        data_split=args.split,
        train_on_inputs=args.train_on_inputs,
    )
    if args.task:
        cfg.task = args.task
    else:
        from tunewiz.core.data import detect

        try:
            suggested = detect(cfg)[1]
        except UserError:
            suggested = ""  # no row readable to guess from: the report lists why (exit code 1)
        if suggested in TASKS:
            cfg.task = suggested
    return cfg


def run_inspect(args: argparse.Namespace) -> int:
    """Exit code 0 when rows are usable, 1 when none is, 2 when the data cannot be read at
    all or an option is wrong; with --json that error is a JSON object too."""
    try:
        return _inspect(args)
    except UserError as exc:
        if not args.json:
            raise
        error = {"message": exc.message, "where": exc.where, "hint": exc.hint}
        sys.stdout.write(dumps_json({"error": error}, indent=2) + "\n")
        return 2


def _inspect(args: argparse.Namespace) -> int:
    from tunewiz.core.data import inspect_data

    cfg = build_config(args)
    tokenizer = None
    if args.model:
        import os

        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from tunewiz.core.loading import load_tokenizer

        tokenizer = load_tokenizer(args.model)
    if args.json:
        report = inspect_data(cfg, tokenizer, batch_size=args.batch_size, objective=args.objective)
        sys.stdout.write(dumps_json(report.to_dict(), indent=2) + "\n")
        return 0 if report.rows_ok else 1
    from rich.console import Console

    err = Console(stderr=True)
    with err.status("reading rows…") as status:
        report = inspect_data(
            cfg,
            tokenizer,
            batch_size=args.batch_size,
            progress=lambda n: status.update(f"read {n:,} rows…"),
            objective=args.objective,
        )
    print_report(Console(), report, tokenizer)
    return 0 if report.rows_ok else 1


def print_report(console: Console, report: DataReport, tokenizer: Tokenizer | None = None) -> None:
    """The report as tables for a terminal: what was read, the problems, token statistics
    and one example (its masking when a tokenizer is given)."""
    _print_summary(console, report)
    if report.problems:
        _print_problems(console, report)
    if report.token_stats is not None:
        _print_tokens(console, report.token_stats)
    if report.examples and tokenizer is not None:
        _print_masking(console, report.examples[0], tokenizer)
    elif report.preview:
        _print_first_row(console, report.preview[0])


def _print_summary(console: Console, report: DataReport) -> None:
    """Source, format and why, task, row counts; then parts not trained on and notes."""
    from rich.text import Text

    from tunewiz.core.data import FORMAT_NAMES, TASK_HELP, no_usable_reason

    head = Text()
    head.append("Data  ", style="bold")
    head.append(visible(report.source) + "\n")
    head.append("Format  ", style="bold")
    head.append(f"{FORMAT_NAMES.get(report.format, report.format)}\n")
    for line in report.evidence:
        head.append(f"        {visible(line)}\n", style="dim")
    head.append("Task  ", style="bold")
    head.append(f"{report.task}: {TASK_HELP.get(report.task, '')}\n")
    head.append("Rows  ", style="bold")
    head.append(f"{report.rows_total:,} read, ")
    head.append(f"{report.rows_ok:,} usable", style="green")
    if report.rows_bad:
        head.append(f", {report.rows_bad:,} skipped", style="yellow")
    console.print(head)
    if report.skipped_parts:
        parts = visible(", ".join(f"{n:,} {k}" for k, n in report.skipped_parts.items()))
        console.print(Text(f"Not trained on: {parts}", style="yellow"))
    for note in report.notes:
        console.print(Text(f"Note: {visible(note)}", style="cyan"))
    if not report.rows_ok:
        console.print(Text(visible(no_usable_reason(report)), style="bold red"))


def _print_problems(console: Console, report: DataReport) -> None:
    """The first 20 problems with their places (rows skipped before rows truncated)."""
    from rich.table import Table
    from rich.text import Text

    from tunewiz.core.data.report import WARNING_KINDS

    counts = ", ".join(
        f"{n:,} {k}" for k, n in sorted(report.problem_counts.items(), key=lambda kv: -kv[1])
    )
    table = Table(title=f"Problems ({counts})", title_justify="left", show_lines=False)
    table.add_column("where", overflow="fold")
    table.add_column("kind")
    table.add_column("what is wrong", overflow="fold")
    # rows that were skipped first; truncation warnings (rows kept) after them
    shown = sorted(report.problems, key=lambda p: p.kind in WARNING_KINDS)[:20]
    for p in shown:
        table.add_row(Text(visible(p.where)), Text(p.kind), Text(visible(p.message)))
    console.print(table)
    total = sum(report.problem_counts.values())
    if total > len(shown):
        console.print(
            Text(f"… and {total - len(shown):,} more (--json lists up to 1,000)", style="dim")
        )


def _print_tokens(console: Console, ts: TokenStats) -> None:
    """Token statistics as a table, then the histogram of row lengths."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Tokens", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    suggested = (
        f"{ts.suggested_max_len:,} (all rows but {ts.rows_over_suggested:,} whole)"
        if ts.rows_over_suggested
        else f"{ts.suggested_max_len:,} (every row whole)"
    )
    for label, value in (
        ("rows", ts.count),
        ("total tokens", ts.total),
        ("trained tokens", ts.trained_tokens),
        ("min / median / p95 / max", f"{ts.min:,} / {ts.median:,} / {ts.p95:,} / {ts.max:,}"),
        ("max_seq_len", ts.max_seq_len),
        ("rows truncated", ts.rows_truncated),
        ("tokens lost to truncation", ts.tokens_lost),
        ("suggested max_seq_len", suggested),
        (f"steps per epoch (batch {ts.batch_size})", ts.steps_per_epoch()),
    ):
        table.add_row(label, f"{value:,}" if isinstance(value, int) else value)
    console.print(table)
    peak = max((n for _, _, n in ts.histogram), default=0) or 1
    hist = Text("Length histogram (tokens → rows)\n", style="bold")
    for lo, hi, n in ts.histogram:
        hist.append(f"{lo:>7,}–{hi:<7,} ")
        hist.append(BAR * max(1 if n else 0, round(30 * n / peak)), style="cyan")
        hist.append(f" {n:,}\n")
    console.print(hist)


def _print_masking(console: Console, example: dict, tokenizer: Tokenizer) -> None:
    """One tokenized example, the trained tokens in green and the context dim."""
    from rich.text import Text

    from tunewiz.core.data import masking_preview

    text = Text()
    for piece, trained in masking_preview(example, tokenizer):
        text.append(visible(piece), style="bold green" if trained else "dim")
    console.print(
        Text("Example as trained (", style="bold")
        + Text("green", style="bold green")
        + Text(" = trained, ", style="bold")
        + Text("dim", style="dim")
        + Text(" = context only)", style="bold")
    )
    console.print(text)


def _print_first_row(console: Console, row: dict) -> None:
    """The first usable row as normalised (without a tokenizer there is no masking to show);
    a preference row shows its prompt, then each answer under its side's name."""
    from rich.text import Text

    console.print(Text("First usable row:", style="bold"))
    if "text" in row:
        console.print(Text(visible(row["text"][:2000])))
        return
    sides = [k for k in ("chosen", "rejected", "completion") if k in row]
    turns = row.get("messages") or row["prompt"] + [
        {"role": side, "content": m["content"]} for side in sides for m in row[side]
    ]
    for m in turns:
        line = Text(f"{visible(m['role'])}: ", style="bold")
        line.append(visible(m["content"][:2000]))
        console.print(line)


def run_augment(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from tunewiz.core.data.augment import augment, model_generator

    try:
        temps = tuple(float(t) for t in args.temperatures.split(",") if t.strip())
    except ValueError:
        raise UserError("expected numbers like 0.3,0.7,1.0", where="--temperatures") from None
    if args.variants < 0 or not temps or args.batch_size < 1:
        raise UserError("need --variants >= 0, --batch-size >= 1 and a temperature")
    generate = model_generator(args.model)
    with Progress(transient=True) as bar:
        task = bar.add_task("augmenting", total=None)
        report = augment(
            args.path, generate, args.out, variants=args.variants, temperatures=temps,
            reverse=not args.no_reverse, batch_size=args.batch_size, limit=args.limit,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )  # fmt: skip
    dropped = ", ".join(f"{n} {why}" for why, n in report.dropped.items()) or "none"
    print(
        f"{report.written} new rows written to {args.out} from {report.rows_read} rows "
        f"({report.rows_skipped_done} already done by an earlier run); dropped: {dropped}"
    )
    return 0
