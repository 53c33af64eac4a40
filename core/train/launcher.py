"""Starting runs: validate everything, build the run directory, start the worker detached.

Everything that can be wrong with a run (options, model, data, disk space) is
checked here, in the user's terminal, before anything detaches: a detached
worker can only report problems into status.json.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from core import runs
from core.config import RunConfig, validate
from core.errors import UserError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def launch(cfg: RunConfig, *, foreground: bool = False) -> Path:
    """Validate, create runs/<name>/, start the worker in its own session; return the run dir.

    With `foreground`, follow the run's log until it ends (Ctrl-C stops it gracefully).
    """
    cfg = copy.deepcopy(cfg)
    validate(cfg)
    check_optional_packages(cfg)
    from core.models import load_tokenizer, resolve_model

    model_path = resolve_model(cfg.model.model)
    model_config = _load_model_config(cfg, model_path)
    tokenizer = load_tokenizer(cfg.model.model, trust_remote_code=cfg.model.trust_remote_code)
    prepared = prepare_data(cfg, tokenizer)
    if not prepared.train:
        raise UserError(
            "no training rows left after preparing the data", where=f"data: {cfg.data.data}"
        )
    if cfg.training.load_best_model_at_end and not prepared.eval:
        raise UserError(
            "load_best_model_at_end needs validation rows",
            where="training.load_best_model_at_end",
            hint="set data.validation_split above 0 or give data.validation_file",
        )

    absolutize_paths(cfg)
    runs_dir = Path(cfg.runs_dir)
    cfg.name = unique_name(runs_dir, cfg.name or default_name(cfg))
    check_disk_space(cfg, model_config, runs_dir, train_rows=prepared.train)
    run_dir = runs_dir / cfg.name
    run_dir.mkdir(parents=True)
    cfg.save(run_dir / runs.CONFIG_FILE)
    from core.train import data_store

    data_store.save(run_dir, prepared.train, prepared.eval)
    (run_dir / "chat_template.jinja").write_text(prepared.chat_template or "", encoding="utf-8")
    _write_data_report(run_dir, prepared)
    (run_dir / runs.ESTIMATE_FILE).write_text(
        json.dumps(estimate(cfg), indent=2, default=str), encoding="utf-8"
    )
    now = time.time()
    runs.write_status(
        run_dir,
        state="starting",
        created_at=now,
        started_at=now,
        host=runs.this_host(),
        method=cfg.model.method,
        model=cfg.model.model,
        step=0,
        total_steps=0,
        distributed=cfg.distributed.distributed != "none",
    )
    start_worker(run_dir, cfg)
    if foreground:
        follow(run_dir)
    return run_dir


def resume(run_dir: str | Path, *, foreground: bool = False) -> Path:
    """Continue a stopped/failed/died run from its last complete checkpoint, same config."""
    from core.train.ckpt import last_complete_checkpoint

    run_dir = Path(run_dir)
    info = runs.read_run(run_dir)
    if info.state in runs.LIVE_STATES:
        raise UserError(f"run {info.name!r} is still {info.state}", where=str(run_dir))
    if info.state == "finished":
        raise UserError(f"run {info.name!r} already finished", where=str(run_dir))
    ckpt = last_complete_checkpoint(run_dir)
    if ckpt is None:
        raise UserError(
            "this run has no complete checkpoint to resume from",
            where=str(run_dir),
            hint="start it again with `tunewiz train " + str(run_dir / runs.CONFIG_FILE) + "`",
        )
    cfg = RunConfig.load(run_dir / runs.CONFIG_FILE)
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
    start_worker(run_dir, cfg, resume=True)
    if foreground:
        follow(run_dir)
    return run_dir


# -- validation helpers -------------------------------------------------------


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

    from core import kernels

    kernels.for_run(cfg.model)  # flash_attention_2 / liger_kernel = true where they cannot run
    if cfg.training.report_to == "tensorboard" and not (
        importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
    ):
        raise UserError(
            "logging to TensorBoard needs the tensorboard package",
            where="training.report_to",
            hint="pip install 'tunewiz[tensorboard]', or set report_to = none",
        )


def prepare_data(cfg: RunConfig, tokenizer):
    from core import data

    return data.prepare(cfg.data, tokenizer)


def _write_data_report(run_dir: Path, prepared) -> None:
    report = getattr(prepared, "report", None)
    if report is None:
        return
    try:
        if hasattr(report, "to_dict"):
            text = json.dumps(report.to_dict(), indent=2, default=str)
        else:
            from dataclasses import asdict, is_dataclass

            text = json.dumps(
                asdict(report) if is_dataclass(report) else str(report), indent=2, default=str
            )
        (run_dir / "data_report.json").write_text(text, encoding="utf-8")
    except Exception as exc:  # noqa: BLE001 - the report is informative, never a reason to fail
        log.warning("could not write the data report: %s", exc)


def absolutize_paths(cfg: RunConfig) -> None:
    """Local files become absolute, so runs/<name>/config.toml reproduces the run from anywhere."""
    for section, name in (("model", "model"), ("data", "data"), ("data", "validation_file")):
        obj = getattr(cfg, section)
        value = getattr(obj, name)
        if value and Path(value).expanduser().exists():
            setattr(obj, name, str(Path(value).expanduser().resolve()))
    cfg.runs_dir = str(Path(cfg.runs_dir).expanduser().absolute())


def default_name(cfg: RunConfig) -> str:
    base = Path(cfg.model.model.rstrip("/")).name or "model"
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-")[:40]
    return f"{base}-{cfg.model.method}-{time.strftime('%Y%m%d-%H%M%S')}"


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


def checkpoint_bytes(cfg: RunConfig, model_config) -> tuple[int, int]:
    """(bytes of one checkpoint, bytes of final/), from the parameter count on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            model_config, trust_remote_code=cfg.model.trust_remote_code
        )
    total = sum(p.numel() for p in model.parameters())
    if cfg.model.method == "full":
        weights = total * 4  # fp32 master weights
        trainable = total
    else:
        targets = cfg.model.lora_target_modules
        wanted = (
            None
            if targets.strip() in ("", "all-linear")
            else {t.strip() for t in targets.split(",")}
        )
        trainable = 0
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and not name.endswith("lm_head"):
                if wanted is None or name.rsplit(".", 1)[-1] in wanted:
                    trainable += cfg.model.lora_r * (mod.in_features + mod.out_features)
        weights = trainable * 4
    optimizer = trainable * 8  # AdamW: two fp32 moments
    return weights + optimizer, weights


def check_disk_space(cfg: RunConfig, model_config, runs_dir: Path, *, train_rows: list) -> None:
    try:
        ckpt, final = checkpoint_bytes(cfg, model_config)
    except Exception as exc:  # noqa: BLE001 - exotic architectures: skip the check, do not block
        log.warning("could not size checkpoints (%s); skipping the disk space check", exc)
        return
    t = cfg.training
    # One more than the limit exists briefly while the newest is written; the best one may be kept too.
    kept = (
        (t.save_total_limit if t.save_total_limit > 0 else 10) + 1 + int(t.load_best_model_at_end)
    )
    if t.save_strategy == "no":
        kept = 1  # a stop still saves one
    data_bytes = sum(len(r["input_ids"]) for r in train_rows) * 16
    need = kept * ckpt + final + data_bytes
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


def detect_device() -> tuple[str, float | None]:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.name, props.total_memory / 2**30
    return "cpu", None


def estimate(cfg: RunConfig) -> dict:
    """The estimator's prediction for estimate.json; a note instead if it cannot answer."""
    device, gpu_mem_gib = detect_device()
    try:
        from core.estimate import estimate_for_run

        return estimate_for_run(cfg, device=device, gpu_mem_gib=gpu_mem_gib)
    except Exception as exc:  # noqa: BLE001 - a missing estimate must not stop a run
        log.warning("no estimate for this run: %s", exc)
        return {
            "available": False,
            "reason": str(exc),
            "device": device,
            "gpu_mem_gib": gpu_mem_gib,
        }


# -- starting the worker ------------------------------------------------------


def worker_command(run_dir: Path, cfg: RunConfig, *, resume: bool = False) -> list[str]:
    args = ["-m", "core.train.worker", str(run_dir.absolute())] + (["--resume"] if resume else [])
    dist = cfg.distributed
    if dist.distributed == "none":
        return [sys.executable, *args]
    from core.train.distributed import launcher_command

    return launcher_command(run_dir, cfg, args)


def start_worker(run_dir: Path, cfg: RunConfig, *, resume: bool = False) -> int:
    """Start the worker in a new session so SIGHUP to the user's terminal never reaches it."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    cmd = worker_command(run_dir, cfg, resume=resume)
    with open(run_dir / runs.LOG_FILE, "ab") as logf:
        logf.write(f"$ {' '.join(cmd)}\n".encode())
        logf.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
    runs.write_status(run_dir, pid=proc.pid)
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
