"""One owner per run: an OS file lock on runs/<name>/.lock, held by the run's worker (light: no torch).

The launcher takes the lock before it starts the worker and hands the open file to
it (the lock belongs to the open file, so it passes through fork and exec): there is
no moment when a second `train` or `resume` could slip in. The kernel drops the lock
when the last holder exits, however it exits, so "is the lock held" is also the
most reliable "is the worker alive" on this host. The file holds who took it
(pid, process start time, host) so a refusal can say who owns the run.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from tunewiz.core.errors import UserError

LOCK_FILE = ".lock"
FD_ENV = "TUNEWIZ_LOCK_FD"  # the worker finds the inherited lock's descriptor here


def process_start_time(pid: int | None) -> float | None:
    """When `pid` started (seconds since the epoch), None if there is no such process.

    A pid and its start time together name one process: a pid reused by another
    program after the worker died has a different start time.
    """
    if not pid:
        return None
    try:
        import psutil

        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except Exception:  # noqa: BLE001 - NoSuchProcess, AccessDenied: not a process we can own
        return None


def same_process(pid: int | None, started_at: float | None) -> bool:
    """True when `pid` runs now and is the process that started at `started_at`."""
    now = process_start_time(pid)
    if now is None:
        return False
    return started_at is None or abs(now - float(started_at)) < 1.0


def acquire(run_dir: Path, *, wait_s: float = 1.0) -> int:
    """Take the run's lock within `wait_s` and return its descriptor; UserError naming the holder.

    A reader's probe (`is_held`) holds the lock for microseconds, and a worker that has
    written its final state takes a moment to exit: both are waited for, a live run is not.
    """
    path = Path(run_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    os.close(fd)
    raise UserError(
        f"run {Path(run_dir).name!r} is in use by {describe_holder(run_dir)}",
        where=str(run_dir),
        hint="wait for it to end, or stop it with `tunewiz stop " + Path(run_dir).name + "`",
    )


def record_holder(fd: int, pid: int, host: str) -> None:
    """Write who holds the lock into the lock file (read by `describe_holder`)."""
    info = {"pid": pid, "started_at": process_start_time(pid), "host": host}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)


def read_holder(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(run_dir) / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_holder(run_dir: Path) -> str:
    holder = read_holder(run_dir)
    if not holder.get("pid"):
        return "another tunewiz process (it is just starting)"
    return f"the worker with pid {holder['pid']} on {holder.get('host') or 'this machine'}"


def is_held(run_dir: Path) -> bool | None:
    """Whether some process holds the run's lock; None for a run without a lock file (older runs)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        # A shared probe: it fails only against the owner's exclusive lock.
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's shared lock at once
    return False


def inherited_fd() -> int | None:
    """The lock descriptor the launcher passed down, if this process was given one."""
    raw = os.environ.pop(FD_ENV, "")
    if not raw.isdigit():
        return None
    try:
        os.fstat(int(raw))
    except OSError:
        return None
    return int(raw)
