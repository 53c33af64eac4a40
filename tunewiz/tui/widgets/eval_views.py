"""Pieces of the Evaluate screen that only turn a saved evaluation into rich Text.

Model text always goes in as plain `Text(...)` (never markup): a reply holding
`[bold]` shows those characters.
"""

from __future__ import annotations

from rich.text import Text

METRICS = (("exact", "exact match"), ("f1", "token F1"), ("rouge_l", "ROUGE-L"),
           ("length_ratio", "length / ref"), ("stopped", "stopped"), ("repetition", "repetition"))  # fmt: skip
LOWER_IS_BETTER = {"repetition"}
NEUTRAL = {"length_ratio"}
BAR = 20


def metric_cells(summary: dict, model: str, split: str, key: str) -> tuple[str, float | None]:
    value = (
        summary["metrics"].get(model, {}).get(summary["main_variant"], {}).get(split, {}).get(key)
    )
    return ("-" if value is None else f"{value:.3f}"), value


def delta_text(value: float | None, base: float | None, key: str) -> Text:
    """The value with its change against the base, green when better and red when worse."""
    if value is None:
        return Text("-")
    text = Text(f"{value:.3f}")
    if base is None or key in NEUTRAL or abs(value - base) < 1e-9:
        return text
    better = (value < base) if key in LOWER_IS_BETTER else (value > base)
    text.append(f" {value - base:+.3f}", style="green" if better else "red")
    return text


def summary_rows(summary: dict) -> list[list[Text]]:
    """metric x model cells (held-out, then train) with deltas against the base."""
    models = list(summary["models"])
    rows = []
    for split in ("heldout", "train"):
        for key, title in METRICS:
            base = metric_cells(summary, "base", split, key)[1] if "base" in models else None
            cells = [delta_text(metric_cells(summary, m, split, key)[1], None if m == "base" else base, key) for m in models]  # fmt: skip
            if any(c.plain != "-" for c in cells):
                rows.append([Text(f"{split} {title}")] + cells)
    return rows


def chart(summary: dict) -> Text:
    """Held-out ROUGE-L and eval loss per checkpoint as bars; the recommended one marked ★."""
    rec = (summary.get("recommended") or {}).get("checkpoint")
    table = summary["checkpoints"]
    losses = [c["eval_loss"] for c in table if c["eval_loss"] is not None]
    top = max(losses) if losses else 1.0
    width = max((len(c["name"]) for c in table), default=4)
    out = Text()
    out.append(f"{'':{width}}  held-out ROUGE-L{'':{BAR - 14}}eval loss\n", style="bold")
    for c in table:
        score, loss = c["heldout_rouge_l"], c["eval_loss"]
        out.append(f"{c['name']:{width}}  ")
        n = round((score or 0) * BAR)
        out.append("█" * n + "·" * (BAR - n), style="cyan")
        out.append(f" {'-' if score is None else f'{score:.3f}'}  ")
        m = round((loss or 0) / top * BAR / 2) if loss is not None else 0
        out.append("█" * m + "·" * (BAR // 2 - m), style="magenta")
        out.append(f" {'-' if loss is None else f'{loss:.3f}'}")
        if c["name"] == rec:
            out.append("  ★ keep", style="bold yellow")
        out.append("\n")
    if rec:
        out.append(f"★ {rec}: {summary['recommended']['why']}", style="yellow")
    return out


def row_categories(row: dict, model: str) -> list[str]:
    return [c["name"] for o in row["outputs"] if o["model"] == model for c in o["categories"]]


def detail(row: dict, models: list[str]) -> list[tuple[str, Text]]:
    """(title, body) panes for a row: prompt, reference, then each model's output with evidence."""
    panes = [("prompt", Text(row["prompt"])), ("reference", Text(row.get("reference") or "(none)"))]
    for o in row["outputs"]:
        if o["model"] not in models:
            continue
        body = Text(o["text"] or "(empty)")
        for c in o["categories"]:
            body.append(f"\n{c['name']}: {c['evidence']}", style="yellow")
        panes.append((f"{o['model']} ({o['variant']})", body))
    return panes
