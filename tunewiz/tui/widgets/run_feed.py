"""Cheap, incremental readers of a run directory for the live panel.

The live panel polls several times a second while a run may log every step,
so every reader here does the least work possible per tick: the log is
followed from a byte offset (never re-read whole), status.json is re-parsed
only when its mtime changes, and checkpoints are re-listed only when the set
of `checkpoint-*`/`final` folders changes. metrics.jsonl and estimate.json
are read by tunewiz.core.runs itself (`MetricsTail`, `read_estimate_bytes`).

Every value goes through tunewiz.core.runs' checked readers: a damaged file shows as
missing data, never as an exception in the panel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tunewiz.core.runs import read_json_object
from tunewiz.core.text import visible

LOG_TAIL_BYTES = 64 * 1024  # first open shows the end of a long log, not all of it


class LogFollower:
    """New lines of train.log since the last call; the first call returns the tail."""

    def __init__(self, path: Path, first_bytes: int = LOG_TAIL_BYTES):
        self.path = Path(path)
        self.offset: int | None = None
        self.first_bytes = first_bytes
        self._partial = ""

    def read_new(self) -> list[str]:
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return []
        skip_first = False
        if self.offset is None or size < self.offset:
            self.offset = max(0, size - self.first_bytes)
            skip_first = self.offset > 0  # we probably landed mid-line
            self._partial = ""
        if size == self.offset:
            return []
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(size - self.offset)
        except OSError:  # not a regular file (a folder, a fifo): nothing to show
            return []
        self.offset += len(data)
        # \r: progress bars rewrite one line; keep what the last rewrite said
        text = self._partial + data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self._partial = lines.pop()
        if skip_first and lines:
            lines = lines[1:]
        return [visible(line.rsplit("\r", 1)[-1]) for line in lines]


class StatusWatcher:
    """status.json, parsed again only when the file changed."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "status.json"
        self._stamp: tuple[int, int] | None = None
        self.status: dict = {}

    def poll(self) -> bool:
        """True when the status changed since the last poll."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        status, problem = read_json_object(self.path)
        self._stamp = stamp
        if problem or status == self.status:
            return bool(problem)  # damaged: read_run says how, once per change

        self.status = status
        return True


@dataclass
class CheckpointRow:
    name: str
    step: int | None = None
    eval_loss: float | None = None
    train_loss: float | None = None
    tags: set[str] = field(default_factory=set)


def _checkpoint_names(run_dir: Path) -> tuple[str, ...]:
    try:
        entries = os.scandir(run_dir)
    except OSError:
        return ()
    with entries:
        return tuple(
            sorted(
                e.name
                for e in entries
                if e.is_dir() and (e.name.startswith("checkpoint-") or e.name == "final")
            )
        )


class CheckpointWatcher:
    """Checkpoints of a run, re-listed only when the folders change."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._names: tuple[str, ...] | None = None
        self.rows: list[CheckpointRow] = []
        self.incomplete = False  # a folder is still being written: list again next tick

    def poll(self, force: bool = False) -> bool:
        names = _checkpoint_names(self.run_dir)
        if names == self._names and not force:
            return False
        first = self._names is None
        self._names = names
        rows = list_checkpoint_rows(self.run_dir)
        self.incomplete = len(rows) < len(names)
        changed = [(r.name, r.eval_loss, sorted(r.tags)) for r in rows] != [
            (r.name, r.eval_loss, sorted(r.tags)) for r in self.rows
        ]
        self.rows = rows
        return changed or first


def list_checkpoint_rows(run_dir: Path) -> list[CheckpointRow]:
    # core's listing reads damaged trainer states as empty, so it does not raise
    from tunewiz.core.checkpoints import list_checkpoints

    return [
        CheckpointRow(c.name, c.step, c.eval_loss, c.train_loss, set(c.tags))
        for c in list_checkpoints(run_dir)
    ]


def format_bytes(n: float | None) -> str:
    """Binary units, as the estimator and the model screen use (GiB everywhere)."""
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_pair(used: float, total: float) -> str:
    """`3.1/4.2 GiB`: two sizes in the unit of the larger one."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if max(used, total) >= scale:
            a, b = used / scale, total / scale
            digits = 0 if max(a, b) >= 100 else 1  # 736/662 MiB, 3.1/4.2 GiB: short enough
            return f"{a:.{digits}f}/{b:.{digits}f} {unit}"
    return f"{used:.0f}/{total:.0f} B"
