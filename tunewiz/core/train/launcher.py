"""Starting runs: quick checks, then the run detaches and its worker does the rest.

What answers in about two seconds is checked in the user's terminal
(tunewiz.core.train.preflight, and disk space: tunewiz.core.train.disk); then the run
directory is made (private: it will hold a copy of the data), its lock taken and
handed to the worker, and the worker started in its own session. From then on a
hung-up terminal cannot lose the run: the worker tokenizes the data itself
(tunewiz.core.train.prepare) and reports into status.json. `--foreground` follows
it with tunewiz.core.train.follow.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tunewiz.core import runlock, runs
from tunewiz.core.config import RunConfig, load_run_config
from tunewiz.core.errors import UserError
from tunewiz.core.train.disk import check_disk_space
from tunewiz.core.train.follow import follow
from tunewiz.core.train.preflight import check_run
from tunewiz.core.train.stopflag import EARLY_SIGNALS

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def launch(cfg: RunConfig, *, foreground: bool = False) -> Path:
    """Check, create runs/<name>/, start the worker in its own session; return the run dir.

    With `foreground`, follow the run's log until it ends (Ctrl-C stops it gracefully).
    """
    cfg = copy.deepcopy(cfg)
    model_path, arch = check_run(cfg)
    absolutize_paths(cfg)
    runs_dir = Path(cfg.runs_dir)
    check_disk_space(cfg, arch, runs_dir, model_path=model_path)
    run_dir, lock_fd = create_run_dir(runs_dir, cfg.name or default_name(cfg))
    try:
        cfg.name = run_dir.name
        runs.write_private(run_dir / runs.CONFIG_FILE, cfg.to_toml())
        now = time.time()
        runs.write_status(
            run_dir,
            state="starting",
            created_at=now,
            started_at=now,
            host=runs.this_host(),
            method=cfg.model.method,
            objective=cfg.training.objective,
            model=cfg.model.model,
            step=0,
            total_steps=0,
            distributed=cfg.distributed.distributed != "none",
        )
        start_worker(run_dir, cfg, lock_fd=lock_fd)
    finally:
        os.close(lock_fd)  # the worker holds its own copy of the lock now
    if foreground:
        follow(run_dir)
    return run_dir


def create_run_dir(runs_dir: Path, name: str) -> tuple[Path, int]:
    """A new private run folder, locked; two launches racing for one name get distinct folders."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        run_dir = runs_dir / unique_name(runs_dir, name)
        try:
            run_dir.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another launch took this name a moment ago: take the next one
        os.chmod(run_dir, 0o700)  # mkdir's mode is filtered by the umask
        return run_dir, runlock.acquire(run_dir)
    raise UserError(f"could not create a run folder named {name!r}", where=str(runs_dir))


def resume(run_dir: str | Path, *, foreground: bool = False) -> Path:
    """Continue a stopped/failed/died run from its last complete checkpoint, same config."""
    from tunewiz.core.checkpoints import resume_checkpoint

    run_dir = Path(run_dir)
    info = runs.read_run(run_dir)  # before taking the lock: holding it reads as "alive"
    if info.state == "finished":
        raise UserError(f"run {info.name!r} already finished", where=str(run_dir))
    # A live worker holds the lock: refused, naming it. One that wrote its final state is
    # exiting (torch takes a moment to unload): wait for it.
    ending = info.state not in runs.LIVE_STATES
    lock_fd = runlock.acquire(run_dir, wait_s=30.0 if ending else 1.0)
    try:
        if info.state in runs.LIVE_STATES:  # a worker from before run locks existed
            raise UserError(f"run {info.name!r} is still {info.state}", where=str(run_dir))
        ckpt = resume_checkpoint(run_dir)
        if ckpt is None:
            raise UserError(
                "this run has no complete checkpoint to resume from",
                where=str(run_dir),
                hint="start it again with `tunewiz train " + str(run_dir / runs.CONFIG_FILE) + "`",
            )
        cfg = load_run_config(run_dir)
        (run_dir / runs.STOP_FILE).unlink(missing_ok=True)
        runs.write_status(
            run_dir,
            state="starting",
            started_at=time.time(),
            ended_at=None,
            error="",
            elapsed_before_s=info.elapsed_s,
            host=runs.this_host(),
            resumed_from=ckpt.name,
        )
        start_worker(run_dir, cfg, resume=True, lock_fd=lock_fd)
    finally:
        os.close(lock_fd)
    if foreground:
        follow(run_dir)
    return run_dir


# -- the run's folder and name ----------------------------------------------


def absolutize_paths(cfg: RunConfig) -> None:
    """Local files become absolute, so runs/<name>/config.toml reproduces the run from anywhere."""
    for section, name in (("model", "model"), ("data", "data"), ("data", "validation_file")):
        obj = getattr(cfg, section)
        value = getattr(obj, name)
        if value and Path(value).expanduser().exists():
            setattr(obj, name, str(Path(value).expanduser().resolve()))
    cfg.runs_dir = str(Path(cfg.runs_dir).expanduser().absolute())


def default_name(cfg: RunConfig) -> str:
    name = runs.default_run_name(cfg.model.model, cfg.model.method)
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def unique_name(runs_dir: Path, name: str) -> str:
    if "/" in name or name in (".", ".."):
        raise UserError(f"a run name cannot contain '/': {name!r}", where="name")
    if not (runs_dir / name).exists():
        return name
    n = 2
    while (runs_dir / f"{name}-{n}").exists():
        n += 1
    log.warning("a run named %s exists; this one is %s-%d", name, name, n)
    return f"{name}-{n}"


# -- starting the worker ------------------------------------------------------


def worker_command(run_dir: Path, cfg: RunConfig, *, resume: bool = False) -> list[str]:
    args = ["-m", "tunewiz.core.train.worker", str(run_dir.absolute())] + (
        ["--resume"] if resume else []
    )
    dist = cfg.distributed
    if dist.distributed == "none":
        return [sys.executable, *args]
    from tunewiz.core.train.distributed import launcher_command

    return launcher_command(run_dir, cfg, args)


def start_worker(run_dir: Path, cfg: RunConfig, *, lock_fd: int, resume: bool = False) -> int:
    """Start the worker in a new session so SIGHUP to the user's terminal never reaches it.

    The worker inherits the run's lock (`lock_fd`) and starts with the stop signals
    blocked; it unblocks them once its handlers are in place.
    """
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env[runlock.FD_ENV] = str(lock_fd)
    cmd = worker_command(run_dir, cfg, resume=resume)
    log_fd = os.open(run_dir / runs.LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(log_fd, "ab") as logf:
        logf.write(f"$ {' '.join(cmd)}\n".encode())
        logf.flush()
        # The child inherits this thread's signal mask through fork and exec. Not for
        # accelerate's launcher: it is not our code and would never unblock them.
        early = EARLY_SIGNALS if cfg.distributed.distributed == "none" else set()
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, early)
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                pass_fds=(lock_fd,),
                env=env,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    host = runs.this_host()
    runlock.record_holder(lock_fd, proc.pid, host)
    runs.write_status(run_dir, pid=proc.pid, pid_started_at=runlock.process_start_time(proc.pid))
    # A long-lived launcher (the wizard) must reap the worker when it exits; a zombie
    # still answers kill(pid, 0), so a crashed run would never show as `died`.
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    log.info("started %s (pid %d)", run_dir.name, proc.pid)
    return proc.pid
