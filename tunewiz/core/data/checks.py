"""Settings that only make sense for some data, checked against the data scanned.

Presets carry numbers chosen for some dataset (sample-demo holds out 4 rows, trains 30
steps, cuts rows at 128 tokens); on other data the same numbers can hold out most rows,
cut a third of them, or repeat a tiny file hundreds of times. These checks say so, with
the change that fixes it, wherever the settings are shown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tunewiz.core.config import RunConfig
from tunewiz.core.data.stats import eval_count

#: Share of rows cut by max_seq_len worth a warning (a few long outliers are normal).
TRUNCATION_WARN = 0.10
#: Passes over the training rows (under max_steps) past which the model learns them by heart.
EPOCHS_WARN = 20


@dataclass(frozen=True)
class DataFacts:
    """What a scan found that settings depend on (saved with the wizard: small)."""

    rows: int = 0
    tokens: int = 0
    histogram: list[tuple[int, int, int]] = field(default_factory=list)  # (from, to, rows)
    scanned_max_len: int = 0  # max_seq_len when scanned: rows_truncated is exact for it
    rows_truncated: int = 0
    suggested_max_len: int = 0

    @classmethod
    def from_report(cls, report: Any) -> DataFacts:
        stats = report.token_stats
        if stats is None:
            return cls(rows=int(report.rows_ok))
        return cls(
            rows=int(stats.count),
            tokens=int(stats.total),
            histogram=[(int(a), int(b), int(n)) for a, b, n in stats.histogram],
            scanned_max_len=int(stats.max_seq_len),
            rows_truncated=int(stats.rows_truncated),
            suggested_max_len=int(stats.suggested_max_len),
        )

    @classmethod
    def from_dict(cls, raw: Any) -> DataFacts:
        """From saved JSON; anything malformed gives no facts rather than an error."""
        try:
            hist = [(int(a), int(b), int(n)) for a, b, n in raw.get("histogram") or []]
            known = {k: int(raw.get(k) or 0) for k in cls.__dataclass_fields__ if k != "histogram"}
            return cls(histogram=hist, **known)
        except (AttributeError, TypeError, ValueError):
            return cls()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows_longer_than(self, max_len: int) -> int:
        """Rows cut at `max_len`: exact for the length scanned with, else the rows of the
        histogram bins wholly past it (a lower bound)."""
        if max_len == self.scanned_max_len:
            return self.rows_truncated
        return sum(n for a, _b, n in self.histogram if a > max_len)


def data_warnings(cfg: RunConfig, facts: DataFacts) -> list[str]:
    """What in `cfg` does not suit the data `facts` describe, each with its fix."""
    if facts.rows <= 0:
        return []
    return [w for w in (_split(cfg, facts), _truncation(cfg, facts), _steps(cfg, facts)) if w]


def _train_rows(cfg: RunConfig, facts: DataFacts) -> int:
    held = 0 if cfg.data.validation_file else eval_count(facts.rows, cfg.data.validation_split)
    return facts.rows - held


def _split(cfg: RunConfig, facts: DataFacts) -> str:
    train = _train_rows(cfg, facts)
    held = facts.rows - train
    if not held or train >= held:
        return ""
    return (
        f"validation_split = {cfg.data.validation_split:g} holds out {held} of {facts.rows} "
        f"rows, so training sees only {train}: set validation_split = 0 (no evaluation) "
        "or a smaller count"
    )


def _truncation(cfg: RunConfig, facts: DataFacts) -> str:
    if cfg.data.task == "text":
        return ""  # long documents are split into chunks, not cut
    max_len = cfg.data.max_seq_len
    cut = facts.rows_longer_than(max_len)
    if cut < TRUNCATION_WARN * facts.rows:
        return ""
    exact = "" if max_len == facts.scanned_max_len else "at least "
    fix = (
        f": max_seq_len = {facts.suggested_max_len} keeps 99% of them whole"
        if facts.suggested_max_len > max_len
        else ""
    )
    return (
        f"max_seq_len = {max_len} cuts {exact}{cut} of {facts.rows} rows "
        f"({cut / facts.rows:.0%}) short{fix}"
    )


def _steps(cfg: RunConfig, facts: DataFacts) -> str:
    t = cfg.training
    train = _train_rows(cfg, facts)
    if t.max_steps <= 0 or train <= 0:
        return ""
    passes = t.max_steps * t.per_device_train_batch_size * t.gradient_accumulation_steps / train
    if passes <= EPOCHS_WARN:
        return ""
    return (
        f"max_steps = {t.max_steps} goes over the {train} training "
        f"row{'s' if train != 1 else ''} about {passes:.0f} "
        "times, so the model learns them by heart: fewer steps, or max_steps = 0 with "
        "num_train_epochs"
    )
