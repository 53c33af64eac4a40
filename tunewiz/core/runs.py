"""Reading and steering runs through their run directory (light: no torch).

A run directory is the single source of truth for a run:

    runs/<name>/
      config.toml      the complete RunConfig (`tunewiz train <that file>` reproduces the run)
      estimate.json    the estimator's prediction for this run
      status.json      state, pid, host, times, step / total_steps, error (written atomically)
      metrics.jsonl    one JSON object per logging / eval step
      train.log        everything the worker printed
      checkpoint-N/    HF Trainer checkpoints (adapter or full model, trainer_state.json,
                       tokenizer, chat_template.jinja)
      final/           the result: adapter or full model, tokenizer, chat template
      STOP             present while a graceful stop is requested
      .lock            held (flock) by the run's worker for its whole life: see tunewiz.core.runlock
      data/            the prepared (tokenized) rows, written by the worker while `preparing`

Run folders are private (0700, files 0600): they hold a copy of the user's data.

The TUI, `tunewiz runs` and chat read runs only through this module.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from tunewiz.core.errors import UserError
from tunewiz.core.text import visible

log = logging.getLogger(__name__)

# A run's state: what status.json says, `died` when its process vanished without saying,
# `damaged` when status.json cannot be read.
RunState = Literal[
    "starting", "preparing", "running", "finished", "failed", "stopped", "died", "damaged"
]
STATES: tuple[RunState, ...] = (
    "starting",
    "preparing",
    "running",
    "finished",
    "failed",
    "stopped",
    "died",
)  # the states status.json may hold
LIVE_STATES: tuple[RunState, ...] = ("starting", "preparing", "running")
DAMAGED: RunState = "damaged"

STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
CONFIG_FILE = "config.toml"
ESTIMATE_FILE = "estimate.json"
STOP_FILE = "STOP"


@dataclass
class RunInfo:
    name: str
    path: Path
    state: RunState = "starting"
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    last_loss: float | None = None
    best_eval_loss: float | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None
    pid: int | None = None
    host: str = ""
    error: str = ""
    method: str = ""
    model: str = ""
    rows_done: int = 0  # data rows prepared so far (state `preparing`)
    rows_total: int | None = None  # None when the data's size is not known before reading it
    note: str = ""  # what a user should know about a run that ended without an error
    damaged: str = ""  # what is wrong with the run folder's files, "" when nothing

    @property
    def progress(self) -> float:
        """Fraction of steps done, 0..1."""
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    def progress_text(self) -> str:
        """`data 1200/5000 24%` while the data is prepared, `40/100 40%` (or `40`) after."""
        if self.state == "preparing":
            total = self.rows_total
            of = f"/{total} {100 * self.rows_done / total:.0f}%" if total else ""
            return f"data {self.rows_done}{of}"
        if self.total_steps:
            return f"{self.step}/{self.total_steps} {100 * self.progress:.0f}%"
        return str(self.step)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        out["progress"] = round(self.progress, 4)
        return out


# -- reading files another process wrote ----------------------------------------
# A run folder may be half-written, from another version, or damaged by hand: every
# value read here is checked, and a bad one becomes "damaged: <why>", never an exception.

MAX_JSON_BYTES = 64 * 1024 * 1024  # status / trainer_state files are a few KB


def read_json_object(path: str | Path) -> tuple[dict[str, Any], str]:
    """(the JSON object in `path`, "") or ({}, what is wrong); a missing file is ({}, "missing")."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        return {}, "missing"
    except OSError as exc:
        return {}, f"unreadable ({exc.strerror or exc})"
    if len(raw) > MAX_JSON_BYTES:
        return {}, "too large for a file tunewiz writes"
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return {}, "binary content, not text"
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        return {}, f"not valid JSON ({str(exc)[:80] or type(exc).__name__})"
    if not isinstance(value, dict):
        return {}, f"a JSON {type(value).__name__}, not an object"
    return value, ""


def finite(value: Any) -> float | None:
    """`value` as a finite float, or None for anything else (bools, NaN, inf, text, lists)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int with hundreds of digits
        return None
    return number if math.isfinite(number) else None


def count(value: Any, limit: int = 10**15) -> int | None:
    """`value` as a whole number in 0..limit (steps, pids, row counts), or None."""
    number = finite(value)
    if number is None or not number.is_integer() or not 0 <= number <= limit:
        return None
    return int(number)


def clean_metrics_row(row: Any) -> dict[str, Any] | None:
    """A metrics row keeping only its finite numbers (metrics are all numbers: text, lists,
    NaN and inf are dropped, so plots and summaries never meet them); None for a row that
    is not an object. `step`, when kept, is a whole number."""
    if not isinstance(row, dict):
        return None
    out: dict[str, Any] = {}
    for key, value in row.items():
        number = finite(value)
        if number is not None:
            out[str(key)] = value if isinstance(value, int) else number
    if "step" in out and count(out["step"]) is None:
        del out["step"]
    return out


# -- status.json --------------------------------------------------------------


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The run's status.json as a dict ({} when missing, mid-replace or damaged)."""
    return read_json_object(Path(run_dir) / STATUS_FILE)[0]


def write_status(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into status.json atomically (tmp file + os.replace), return the result."""
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    status.update(fields)
    status["updated_at"] = time.time()
    atomic_write_text(run_dir / STATUS_FILE, json.dumps(status, indent=2, default=str))
    return status


def atomic_write_text(path: Path, text: str) -> None:
    # A reader (the TUI polling) must never see a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_private(tmp, text)
    os.replace(tmp, path)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600): run folders hold the user's data."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int | None) -> bool:
    """True when `pid` runs on this machine (a zombie counts as dead)."""
    if not pid:
        return False
    try:
        import psutil

        proc = psutil.Process(int(pid))
        return proc.status() != psutil.STATUS_ZOMBIE
    except Exception:  # NoSuchProcess, AccessDenied on exotic systems
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


# -- RunInfo ------------------------------------------------------------------


class _Fields:
    """Typed access to status.json that notes each value of the wrong type or out of range."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        self.problems: list[str] = []

    def _bad(self, key: str, want: str) -> None:
        shown = visible(repr(self.status[key]), newlines=False)[:40]
        self.problems.append(f"{key} is {shown}, not {want}")

    def text(self, key: str) -> str:
        value = self.status.get(key)
        if value is None or isinstance(value, str):
            return value or ""
        self._bad(key, "text")
        return ""

    def number(self, key: str) -> float | None:
        value = self.status.get(key)
        number = finite(value)
        # tunewiz itself writes a loss that went NaN/inf as the string "nan"/"inf"
        if number is None and value is not None and str(value).lower() not in _NON_FINITE:
            self._bad(key, "a finite number")
        return number

    def whole(self, key: str, limit: int = 10**15) -> int | None:
        value = self.status.get(key)
        number = count(value, limit)
        if number is None and value is not None:
            self._bad(key, f"a whole number up to {limit:g}")
        return number


_NON_FINITE = ("nan", "inf", "-inf", "infinity", "-infinity")
PID_MAX = 2**22  # Linux's highest pid_max; anything above is not a process id


def read_run(run_dir: str | Path) -> RunInfo:
    """What a run folder says about the run; a damaged status.json gives a RunInfo whose
    `damaged` says what is wrong, never an exception."""
    run_dir = Path(run_dir)
    st, problem = read_json_object(run_dir / STATUS_FILE)
    info = RunInfo(name=run_dir.name, path=run_dir)
    if problem == "missing":
        st = status_from_folder(run_dir)
    elif problem:
        info.state, info.damaged = DAMAGED, f"status.json: {problem}"
        return info
    f = _Fields(st)
    state = f.text("state") or "starting"
    known = next((s for s in STATES if s == state), None)
    if known is None:
        f.problems.append(f"state {visible(state, newlines=False)[:40]!r} is unknown")
    info.state = known or DAMAGED
    info.step = f.whole("step") or 0
    info.total_steps = f.whole("total_steps") or 0
    info.epoch = f.number("epoch") or 0.0
    info.last_loss = f.number("last_loss")
    info.best_eval_loss = f.number("best_eval_loss")
    info.pid = f.whole("pid", PID_MAX)
    info.host, info.error = f.text("host"), f.text("error")
    info.method, info.model = f.text("method"), f.text("model")
    info.rows_done = f.whole("rows_done") or 0
    info.rows_total = f.whole("rows_total")
    info.note = f.text("note")

    # A process that vanished without writing a final state (kill -9, reboot,
    # machine lost) would otherwise look "running" forever.
    if info.state in LIVE_STATES and (not info.host or info.host == this_host()):
        if not worker_alive(run_dir, st):
            info.state = "died"
            info.error = info.error or "the training process ended without writing a final status"
    info.elapsed_s = _elapsed(f, info)
    if info.state == "preparing":
        info.eta_s = _prepare_eta(f, info)
    else:
        info.eta_s = _eta(f, info) if info.state in LIVE_STATES else None
    info.damaged = "; ".join(f.problems)
    return info


def _elapsed(f: _Fields, info: RunInfo) -> float:
    started = f.number("started_at")
    before = f.number("elapsed_before_s") or 0.0
    if not started:
        return before
    end = f.number("ended_at") if info.state not in LIVE_STATES else None
    if end is None and info.state == "died":
        end = f.number("updated_at") or started
    return before + max(0.0, (end or time.time()) - started)


def worker_alive(run_dir: Path, st: dict[str, Any]) -> bool:
    """Whether the run's own worker still runs on this host: its lock, else its pid + start time.

    A pid alone can name another program once the worker is gone (pids are reused).
    """
    from tunewiz.core import runlock

    held = runlock.is_held(run_dir)
    if held is not None:
        return held
    pid, started = count(st.get("pid"), PID_MAX), finite(st.get("pid_started_at"))
    if started is not None:
        return runlock.same_process(pid, started)
    return pid_alive(pid)


def status_from_folder(run_dir: Path) -> dict[str, Any]:
    """A run whose status.json is lost: finished if final/ holds a model, else {} (as before).

    A finished run must not be offered for resume just because one file went missing.
    """
    from tunewiz.core.checkpoints import final_complete, last_complete_checkpoint, trainer_state

    if not final_complete(run_dir / "final"):
        return {}
    ckpt = last_complete_checkpoint(run_dir)
    state = trainer_state(ckpt) if ckpt else {}
    step = state.get("global_step") or 0
    return {
        "state": "finished",
        "step": step,
        "total_steps": state.get("max_steps") or step,
        "error": "",
        "recovered": "status.json was missing; state read from final/ and the checkpoints",
    }


def _eta(f: _Fields, info: RunInfo) -> float | None:
    # Rate over this session only: a resumed run's first steps include loading.
    # first_step_at marks the end of this session's first step: time the steps after it.
    start_step = f.whole("start_step") or 0
    t0 = f.number("first_step_at")
    done = info.step - start_step - 1
    if not t0 or done <= 0 or not info.total_steps:
        return None
    rate = (time.time() - t0) / done
    return max(0.0, (info.total_steps - info.step) * rate)


def _prepare_eta(f: _Fields, info: RunInfo) -> float | None:
    t0 = f.number("prepare_started_at")
    if not t0 or not info.rows_total or info.rows_done <= 0:
        return None
    rate = (time.time() - t0) / info.rows_done
    return max(0.0, (info.rows_total - info.rows_done) * rate)


def default_run_name(model: str, method: str) -> str:
    """`<model>-<method>`, the name a run gets when the user gives none (the launcher adds the
    time). The model part is the last component of its hub id or folder, every run of other
    characters than letters, digits and `._-` made one `-`: the name is a folder and appears in
    shell commands."""
    base = Path(model.rstrip("/")).name or "model"
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-")[:40] or "model"
    return f"{base}-{method}"


def list_runs(runs_dir: str | Path) -> list[RunInfo]:
    """Every run under `runs_dir`, newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    dirs = [
        d
        for d in runs_dir.iterdir()
        if d.is_dir() and ((d / STATUS_FILE).exists() or (d / CONFIG_FILE).exists())
    ]

    def started(d: Path) -> float:
        st = read_status(d)
        return finite(st.get("created_at")) or finite(st.get("started_at")) or _mtime(d)

    return [read_run(d) for d in sorted(dirs, key=started, reverse=True)]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed while listing
        return 0.0


def resolve_run(name_or_path: str | Path, runs_dir: str | Path) -> Path:
    """A run's directory from its name or path; a UserError listing known runs otherwise."""
    candidate = Path(name_or_path).expanduser()
    for path in (candidate, Path(runs_dir) / str(name_or_path)):
        if path.is_dir() and ((path / STATUS_FILE).exists() or (path / CONFIG_FILE).exists()):
            return path
    known = [r.name for r in list_runs(runs_dir)]
    raise UserError(
        f"no run named {str(name_or_path)!r}",
        where=str(runs_dir),
        hint=("known runs: " + ", ".join(known))
        if known
        else "no runs yet: start one with `tunewiz train`",
    )


# -- metrics and logs ---------------------------------------------------------


class MetricsTail:
    """Reads metrics.jsonl incrementally: only what was appended since the last call."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path / METRICS_FILE if path.is_dir() else path
        self.offset = 0
        self._partial = b""
        self.bad_lines = 0  # lines that were not a JSON object, skipped

    def read_new(self) -> list[dict[str, Any]]:
        """New complete rows, each cleaned by `clean_metrics_row`; bad lines are skipped."""
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self.offset:  # truncated or replaced: start over
                    self.offset, self._partial = 0, b""
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:  # missing, or not a file at all
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for the rest
        out = []
        for line in lines:
            if not line.strip():
                continue
            try:
                row = clean_metrics_row(json.loads(line))
            except (ValueError, RecursionError):  # garbage, binary, absurd nesting
                row = None
            if row is None:
                self.bad_lines += 1
                log.warning("skipping a malformed line in %s", self.path)
            else:
                out.append(row)
        return out


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics logged after `step`: a resumed run logs those steps again.

    Lines that are not a JSON object (cut by a crash, damaged) are dropped; rows without a
    step (the run's summary) are kept.
    """
    if not path.is_file():
        return
    kept = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                continue
            row_step = row.get("step", 0) if isinstance(row, dict) else None
            if isinstance(row_step, (int, float)) and row_step <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All metrics of a run (for plotting a finished run)."""
    return MetricsTail(Path(run_dir) / METRICS_FILE).read_new()


def tail_log(run_dir: str | Path, n: int = 50) -> list[str]:
    """The last `n` lines of train.log, reading backwards in blocks (logs can be large)."""
    path = Path(run_dir) / LOG_FILE
    try:
        fh = open(path, "rb")
    except OSError:
        return []
    with fh:
        end = fh.seek(0, os.SEEK_END)
        pos, data, block = end, b"", 8192
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-n:] if n > 0 else []


def read_estimate_bytes(run_dir: str | Path) -> int | None:
    """The estimator's predicted peak memory per device: estimate.json's `total_bytes`, as
    tunewiz.core.estimate's `estimate_for_run` writes it. None when the file is missing, damaged,
    or holds only a note (the estimator could not answer for this model)."""
    data, _problem = read_json_object(Path(run_dir) / ESTIMATE_FILE)
    return count(data.get("total_bytes"), 10**18 - 1) or None


# -- control ------------------------------------------------------------------


def stop_run(run_dir: str | Path) -> None:
    """Ask a run to stop gracefully: it saves a checkpoint and ends as `stopped`.

    The STOP file works for every rank and machine (the trainer checks it each
    step); SIGTERM wakes a single-process worker on this host at once.
    """
    run_dir = Path(run_dir)
    info = read_run(run_dir)
    if info.state not in LIVE_STATES:
        raise UserError(
            f"run {info.name!r} is not running (state: {info.state})", where=str(run_dir)
        )
    write_private(run_dir / STOP_FILE, str(time.time()))
    st = read_status(run_dir)
    if info.pid and info.host == this_host() and not st.get("distributed"):
        signal_worker(run_dir, st, signal.SIGTERM)


def signal_worker(run_dir: Path, st: dict[str, Any], sig: int) -> bool:
    """Send `sig` to the run's worker only if the pid still names that worker; True if sent.

    The pid must be the lock holder's (or, for runs without a lock file, have the
    recorded start time): a pid reused by another program is never signalled.
    """
    from tunewiz.core import runlock

    pid = st.get("pid")
    if not isinstance(pid, int):
        return False
    holder = runlock.read_holder(run_dir)
    if runlock.is_held(run_dir) and holder.get("pid") == pid:
        started = holder.get("started_at")
    elif st.get("pid_started_at") is not None:
        started = st["pid_started_at"]
    else:
        return False
    if not runlock.same_process(pid, started):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def format_loss(value: float | None) -> str:
    """A loss for a table: 4 decimals, or 3 significant digits when that would be wider than a
    column (a loss that blew up to 1e308 must not push the run names off the screen)."""
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3g}"


def format_duration(seconds: float | None, missing: str = "-") -> str:
    """`1h05m`, `3m07s` or `42s`; `missing` for no value (None, NaN, a negative time).

    The one formatter of run times: `tunewiz runs`, the data preparation log, the start screen
    and the live panel all show durations through it.
    """
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return missing
    if seconds >= 1000 * 3600:  # a clock gone wrong, not a run: keep the column narrow
        return f"{seconds / 86400:.3g}d"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s" if m else f"{s}s"
