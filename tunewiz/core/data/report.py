"""What inspecting a dataset found: problems with their places, counts, token statistics.

Plain dataclasses so that the CLI, the wizard and `--json` all read the same thing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Problems that do not make a row unusable: the row is kept (truncated) and the loss is counted.
WARNING_KINDS = frozenset({"too_long"})

# How many problems are kept with their places; beyond that only the counts grow, so a
# 1 GB file full of bad rows cannot fill memory with messages.
MAX_LISTED_PROBLEMS = 1000


@dataclass
class Problem:
    """One thing wrong with the data, and where: `data.jsonl:17`, `data.json[42].output`."""

    where: str
    kind: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "kind": self.kind, "message": self.message}


@dataclass
class TokenStats:
    """Token lengths of the usable rows, measured before truncation."""

    count: int
    total: int
    min: int
    median: int
    p95: int
    max: int
    max_seq_len: int
    # (from, to, rows) with from <= length < to, over every tokenized row: the usable ones and
    # those whose answer max_seq_len cuts off entirely
    histogram: list[tuple[int, int, int]]
    rows_truncated: int
    tokens_lost: int
    suggested_max_len: int  # holds 99% of the rows whole
    trained_tokens: int
    batch_size: int = 4
    sequences: int | None = None  # training sequences when packed (or text split in chunks)
    rows_over_suggested: int = 0  # rows longer than suggested_max_len (the longest 1% at most)

    def steps_per_epoch(self, batch_size: int | None = None, accumulation: int = 1) -> int:
        """Optimizer steps for one pass over the data (packed sequences when packing)."""
        bs = max(1, batch_size or self.batch_size) * max(1, accumulation)
        rows = self.count if self.sequences is None else self.sequences
        return -(-rows // bs)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["histogram"] = [{"from": a, "to": b, "rows": n} for a, b, n in self.histogram]
        out["steps_per_epoch"] = self.steps_per_epoch()
        return out


@dataclass
class DataReport:
    """What reading a dataset found: its format and why, counts, problems, token statistics,
    a preview of the first usable rows, and notes for the user."""

    source: str
    format: str = ""
    task: str = ""
    evidence: list[str] = field(default_factory=list)
    rows_total: int = 0
    rows_ok: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_counts: dict[str, int] = field(default_factory=dict)
    skipped_parts: dict[str, int] = field(default_factory=dict)  # tool calls, images... not trained
    tool_rows: int = 0  # rows whose tool calls and results are kept (the template renders them)
    preference_data: bool = False
    token_stats: TokenStats | None = None
    chat_template: str | None = None
    preview: list[dict] = field(default_factory=list)  # a few normalized usable rows
    examples: list[dict] = field(default_factory=list)  # the same rows tokenized (with a tokenizer)
    notes: list[str] = field(default_factory=list)
    boundary_merges: int = 0  # rows where a token crosses a prompt/answer boundary
    # token lengths of rows dropped because max_seq_len cut off their whole answer: not
    # usable, but counted in the length histogram and the suggested max_seq_len
    cut_lengths: list[int] = field(default_factory=list, repr=False)

    def add_problem(self, problem: Problem) -> None:
        self.problem_counts[problem.kind] = self.problem_counts.get(problem.kind, 0) + 1
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(problem)

    @property
    def rows_bad(self) -> int:
        return self.rows_total - self.rows_ok

    @property
    def blocking_problems(self) -> list[Problem]:
        """The listed problems that stop a run under on_bad_rows = stop (not mere warnings)."""
        return [p for p in self.problems if p.kind not in WARNING_KINDS]

    def to_dict(self) -> dict[str, Any]:
        """The object `tunewiz data inspect --json` prints."""
        return {
            "source": self.source,
            "format": self.format,
            "task": self.task,
            "evidence": list(self.evidence),
            "rows_total": self.rows_total,
            "rows_ok": self.rows_ok,
            "rows_bad": self.rows_bad,
            "problem_counts": dict(self.problem_counts),
            "problems": [p.to_dict() for p in self.problems],
            "problems_listed": len(self.problems),
            "skipped_parts": dict(self.skipped_parts),
            "tool_rows": self.tool_rows,
            "preference_data": self.preference_data,
            "token_stats": self.token_stats.to_dict() if self.token_stats else None,
            "notes": list(self.notes),
        }
