"""Starting runs: quick checks here, then the run detaches and its worker does the rest.

What answers in about two seconds is checked in the user's terminal (options,
the model's config, the data's format on its first rows, disk space); then the run
directory is made (private: it will hold a copy of the data), its lock taken and
handed to the worker, and the worker started in its own session. From then on a
hung-up terminal cannot lose the run: the worker tokenizes the data itself
(tunewiz.core.train.prepare) and reports into status.json.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tunewiz.core import runlock, runs
from tunewiz.core.config import RunConfig, load_run_config, validate
from tunewiz.core.errors import UserError
from tunewiz.core.train.limits import check_limits
from tunewiz.core.train.stopflag import EARLY_SIGNALS

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def launch(cfg: RunConfig, *, foreground: bool = False) -> Path:
    """Check, create runs/<name>/, start the worker in its own session; return the run dir.

    With `foreground`, follow the run's log until it ends (Ctrl-C stops it gracefully).
    """
    cfg = copy.deepcopy(cfg)
    validate(cfg)
    check_optional_packages(cfg)
    from tunewiz.core.models import check_model_here_or_reachable, resolve_model

    model_path = resolve_model(cfg.model.model)
    arch = model_arch(cfg, model_path)
    check_model_here_or_reachable(cfg.model.model)
    check_limits(cfg, arch)
    check_data(cfg)
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
    from tunewiz.core.checkpoints import last_complete_checkpoint

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
        ckpt = last_complete_checkpoint(run_dir)
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


# -- validation helpers -------------------------------------------------------


def model_arch(cfg: RunConfig, model_path: str):
    """The model's shape from its config.json, read as plain JSON (importing transformers would
    take most of the launcher's two seconds); transformers' own reader for what JSON cannot tell."""
    from tunewiz.core.profiles import load_model_arch

    try:
        return load_model_arch(model_path)
    except UserError:
        if not Path(model_path).exists():
            raise UserError(
                f"cannot find the model {cfg.model.model!r}",
                where="model.model",
                hint="offline? give a local model folder or the bundled default",
            ) from None
    _load_model_config(cfg, model_path)  # a clear message if transformers cannot read it either
    return None  # readable, but of a shape the estimator does not know: no disk check


def _load_model_config(cfg: RunConfig, model_path: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
    except ValueError as exc:
        hint = "set model.trust_remote_code = true only if you trust this model's code"
        raise UserError(
            f"cannot read the model's config: {exc}", where="model.model", hint=hint
        ) from None
    except OSError as exc:
        raise UserError(
            f"cannot find the model {cfg.model.model!r}: {exc}".splitlines()[0],
            where="model.model",
            hint="offline? give a local model folder or the bundled default",
        ) from None


def check_optional_packages(cfg: RunConfig) -> None:
    """Options that need a package we do not depend on: say so now, not in train.log later."""
    import importlib.util

    from tunewiz.core import kernels

    kernels.for_run(cfg.model)  # flash_attention_2 / liger_kernel = true where they cannot run
    if cfg.training.report_to == "tensorboard" and not (
        importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
    ):
        raise UserError(
            "logging to TensorBoard needs the tensorboard package",
            where="training.report_to",
            hint="pip install 'tunewiz[tensorboard]', or set report_to = none",
        )


def check_data(cfg: RunConfig) -> None:
    """The data is readable and its format fits the task, judged on its first rows (fast).

    Every row is read and tokenized later, by the worker: a bad row found there
    fails the run with the same message (file, line, field) this would have printed.
    """
    import dataclasses

    from tunewiz.core import data

    files = [("data.data", cfg.data)]
    if cfg.data.validation_file:
        files.append(
            ("data.validation_file", dataclasses.replace(cfg.data, data=cfg.data.validation_file))
        )
    for _, dcfg in files:
        fmt, _, _ = data.detect(dcfg)
        data.check_task_reads(cfg.data.task, fmt)
    if (
        cfg.training.load_best_model_at_end
        and not cfg.data.validation_file
        and not cfg.data.validation_split
    ):
        raise UserError(
            "load_best_model_at_end needs validation rows",
            where="training.load_best_model_at_end",
            hint="set data.validation_split above 0 or give data.validation_file",
        )


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


# Files a checkpoint and final/ hold besides the weights and optimizer (save_pretrained of the
# tokenizer, the chat template); sized from the model folder itself.
TOKENIZER_FILES = (
    "tokenizer*",
    "vocab*",
    "merges*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template*",
    "*.model",
)
PREPARED_BYTES_PER_DATA_BYTE = 4  # token ids and labels as JSON take ~4x the text they came from


def tokenizer_bytes(model_path: str) -> int:
    folder = Path(model_path)
    if not folder.is_dir():
        return 0
    seen = {p for pattern in TOKENIZER_FILES for p in folder.glob(pattern) if p.is_file()}
    return sum(p.stat().st_size for p in seen)


def data_bytes(cfg: RunConfig) -> int:
    """What the prepared data (runs/<name>/data/) will take, from the size of the local files."""
    total = 0
    for value in (cfg.data.data, cfg.data.validation_file):
        path = Path(value).expanduser() if value else None
        if path is None or not path.exists():
            continue
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        total += sum(p.stat().st_size for p in files)
    return total * PREPARED_BYTES_PER_DATA_BYTE


def checkpoint_bytes(cfg: RunConfig, arch) -> tuple[int, int]:
    """(bytes of one checkpoint, bytes of final/): fp32 trainable weights + AdamW's two moments.

    The trainable count is the estimator's (all weights for full, the adapters otherwise).
    """
    from tunewiz.core.estimate.memory import EstimateRequest, trainable_params

    req = EstimateRequest(
        method=cfg.model.method,
        lora_r=cfg.model.lora_r,
        lora_targets=cfg.model.lora_target_modules,
        freeze_layers=cfg.model.freeze_trainable_layers,
        freeze_lm_head=cfg.model.freeze_train_lm_head,
        freeze_embeddings=cfg.model.freeze_train_embeddings,
    )
    trainable = trainable_params(arch, req)
    # full and freeze save every weight (freeze's frozen blocks too); adapters only themselves
    weights = (arch.num_params() if cfg.model.method in ("full", "freeze") else trainable) * 4
    optimizer = trainable * 8  # AdamW: two fp32 moments
    return weights + optimizer, weights


def check_disk_space(cfg: RunConfig, arch, runs_dir: Path, *, model_path: str) -> None:
    if arch is None:
        log.warning("unknown model shape: skipping the disk space check")
        return
    try:
        ckpt, final = checkpoint_bytes(cfg, arch)
    except UserError as exc:  # e.g. LoRA targets the estimator cannot place: do not block here
        log.warning("could not size checkpoints (%s); skipping the disk space check", exc)
        return
    extra = tokenizer_bytes(model_path) + 64 * 1024  # + trainer_state, configs, chat template
    ckpt, final = ckpt + extra, final + extra
    t = cfg.training
    # One more than the limit exists briefly while the newest is written; the best one may be kept too.
    kept = (
        (t.save_total_limit if t.save_total_limit > 0 else 10) + 1 + int(t.load_best_model_at_end)
    )
    if t.save_strategy == "no":
        kept = 1  # a stop still saves one
    need = kept * ckpt + final + data_bytes(cfg)
    probe = (
        runs_dir
        if runs_dir.exists()
        else next((p for p in runs_dir.absolute().parents if p.exists()), Path("/"))
    )
    free = shutil.disk_usage(probe).free
    if need > free:
        raise UserError(
            f"not enough disk space: {kept} checkpoints of ~{_gib(ckpt)} plus the final model need "
            f"~{_gib(need)}, but only {_gib(free)} is free",
            where=f"runs_dir = {cfg.runs_dir}",
            hint="lower training.save_total_limit, free some space, or use --runs-dir on a bigger disk",
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


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


def follow(run_dir: Path, *, out=None, poll_s: float = 0.5) -> str:
    """Stream train.log until the run ends; Ctrl-C asks the run to stop and keeps streaming."""
    out = out or sys.stdout
    path = Path(run_dir) / runs.LOG_FILE
    offset = 0
    stopping = False
    while True:
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            offset += len(chunk)
            if chunk:
                out.write(chunk.decode("utf-8", errors="replace"))
                out.flush()
            state = runs.read_run(run_dir).state
            if state not in runs.LIVE_STATES and not chunk:
                return state
            time.sleep(poll_s)
        except KeyboardInterrupt:
            if stopping:
                raise
            stopping = True
            out.write("\nstopping: saving a checkpoint (Ctrl-C again to detach)\n")
            try:
                runs.stop_run(run_dir)
            except UserError:
                pass
