"""The training process: `python -m tunewiz.core.train.worker RUN_DIR [--resume]`.

Started detached by `tunewiz.core.train.launch` (its own session, output to
train.log, the run's lock inherited, stop signals blocked until its handlers are
in place), or once per rank by `accelerate launch`. It first prepares the data
into data/ (state `preparing`, see tunewiz.core.train.prepare), then trains. It always
ends by writing a final state to status.json.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path

from tunewiz.core import runs
from tunewiz.core.config import RunConfig
from tunewiz.core.errors import UserError

log = logging.getLogger("tunewiz.train")


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def main(argv: list[str] | None = None) -> int:
    from tunewiz.core.train.stopflag import EARLY_SIGNALS, StopFlag

    # First of all, so a stop asked for in the run's first instant is served, not fatal.
    stop = StopFlag()
    install_signal_handlers(stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, EARLY_SIGNALS)
    os.umask(0o077)  # everything the run writes is private: it holds a copy of the user's data
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0])
    resume = "--resume" in argv
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s [rank {rank()}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
        force=True,
    )
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Library deprecation chatter (from inside transformers/peft) and bitsandbytes' note about an
    # optional CPU kernel package would read like problems with the run in train.log.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    is_main = rank() == 0
    if not own_the_run(run_dir):
        return 3
    if is_main and world_size() == 1:
        # Under accelerate/torchrun the launcher wrote its own pid: that is the one to watch.
        runs.write_status(run_dir, pid=os.getpid(), host=runs.this_host())
    try:
        outcome = train(run_dir, resume=resume, stop=stop)
    except BaseException as exc:  # noqa: BLE001 - every failure must end up in status.json
        if isinstance(exc, UserError):  # a problem with what was asked: its message is the story
            log.error("%s", exc)
        else:  # a crash: the traceback is what a bug report needs
            traceback.print_exc(file=sys.stdout)
        sys.stdout.flush()
        if is_main:
            runs.write_status(
                run_dir, state="failed", ended_at=time.time(), error=describe_failure(exc, run_dir)
            )
        return 1
    if is_main:
        runs.write_status(run_dir, ended_at=time.time(), **outcome)
    log.info("run ended: %s", outcome.get("state"))
    return 0 if outcome.get("state") in ("finished", "stopped") else 1


def own_the_run(run_dir: Path) -> bool:
    """Keep the lock the launcher handed down, or take it; False (and a line in the log) if taken.

    Ranks under accelerate share the launcher process's lock: they do not take their own.
    """
    from tunewiz.core import runlock

    if runlock.inherited_fd() is not None or world_size() > 1:
        return True
    try:
        fd = runlock.acquire(run_dir)
    except UserError as exc:
        log.error("not starting: %s", exc)
        return False
    runlock.record_holder(fd, os.getpid(), runs.this_host())
    return True  # fd stays open, and the lock held, until this process exits


def stopped_while_preparing(run_dir: Path) -> dict:
    (run_dir / runs.STOP_FILE).unlink(missing_ok=True)  # the request is served
    log.warning("stopped while preparing the data")
    return {
        "state": "stopped",
        "error": "",
        "note": "stopped before the first checkpoint (while preparing the data): "
        f"start it again with `tunewiz train {run_dir / runs.CONFIG_FILE}`",
    }


def install_signal_handlers(stop) -> None:
    def graceful(signum, _frame):
        if stop.requested:
            raise KeyboardInterrupt  # a second signal: stop now, without the checkpoint
        stop.request(signal.Signals(signum).name)
        log.warning("%s received: will save a checkpoint and stop after this step", stop.reason)

    signal.signal(signal.SIGTERM, graceful)
    signal.signal(signal.SIGINT, graceful)
    # We run in our own session already; ignoring SIGHUP also covers being started some other way.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def describe_failure(exc: BaseException, run_dir: Path) -> str:
    if is_oom(exc):
        return "out of memory: " + _first_line(exc) + "\n" + oom_advice_for(run_dir)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted before a checkpoint could be saved"
    if is_disk_full(exc):
        return (
            "disk full while writing the run folder (a partial checkpoint is removed): "
            + _first_line(exc)
            + "\nfree some space, then `tunewiz resume`"
        )
    if isinstance(exc, UserError):
        return str(exc)
    return f"{type(exc).__name__}: {_first_line(exc)} (traceback in train.log)"


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC from anywhere: an OSError, or a library's plain Exception quoting it (tokenizers
    raises `Exception("... No space left on device (os error 28)")`), or their causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        text = str(current)
        if "os error 28" in text or "No space left on device" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_oom(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def oom_advice_for(run_dir: Path) -> str:
    """The estimator's nearest configuration that fits; generic advice if it cannot say."""
    generic = (
        "try: a smaller per_device_train_batch_size with more gradient_accumulation_steps, "
        "gradient_checkpointing = true, method = qlora, or a shorter max_seq_len"
    )
    try:
        import torch

        from tunewiz.core import estimate

        cfg = RunConfig.load(run_dir / runs.CONFIG_FILE)
        if torch.cuda.is_available():
            mem = torch.cuda.get_device_properties(0).total_memory / 2**30
            return estimate.oom_advice(cfg, device=torch.cuda.get_device_name(0), gpu_mem_gib=mem)
        return estimate.oom_advice(cfg, device="cpu", gpu_mem_gib=None)
    except Exception as exc:  # noqa: BLE001 - advice must never hide the failure itself
        log.warning("estimator advice unavailable (%s)", exc)
        return generic


# -- training -----------------------------------------------------------------


def train(run_dir: Path, *, resume: bool, stop) -> dict:
    import torch
    import transformers

    from tunewiz.core.models import load_tokenizer, resolve_model
    from tunewiz.core.train import data_store
    from tunewiz.core.train.callbacks import (
        FaultInjector,
        RunCallback,
        parse_fault,
        peak_memory_bytes,
    )
    from tunewiz.core.train.ckpt import last_complete_checkpoint, truncate_metrics
    from tunewiz.core.train.model import load_for_training, resolve_precision

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_warning()
    cfg = RunConfig.load(run_dir / runs.CONFIG_FILE)
    precision = resolve_precision(cfg.model.precision)
    log.info("method %s, precision %s, model %s", cfg.model.method, precision, cfg.model.model)

    tokenizer = load_tokenizer(cfg.model.model, trust_remote_code=cfg.model.trust_remote_code)
    if not prepared_here(run_dir, cfg, tokenizer, stop):
        return stopped_while_preparing(run_dir)
    template = run_dir / "chat_template.jinja"
    if template.is_file():
        tokenizer.chat_template = template.read_text(encoding="utf-8")
    train_rows, eval_rows = data_store.load(run_dir)
    # Seed before the adapters are created: their random init is part of what config.toml reproduces.
    transformers.set_seed(cfg.training.seed)
    sft = cfg.training.objective == "sft"
    model = load_for_training(
        cfg, resolve_model(cfg.model.model), precision=precision, adapters=sft
    )

    checkpoint = None
    if resume:
        checkpoint = last_complete_checkpoint(run_dir)
        if checkpoint is None:
            raise UserError("no complete checkpoint to resume from", where=str(run_dir))
        if trained_to_the_end(checkpoint):
            return finish_from_checkpoint(run_dir, checkpoint, cfg, tokenizer)
        step = int(checkpoint.name.split("-")[1])
        if rank() == 0:
            truncate_metrics(run_dir / runs.METRICS_FILE, step)
        log.info("resuming from %s", checkpoint.name)

    callback = RunCallback(run_dir, None, stop, is_main=rank() == 0, world_size=world_size())
    callbacks: list = [callback]
    fault = parse_fault()
    if fault:
        log.warning("test fault injection active: %s@%d", *fault)
        callbacks.append(FaultInjector(fault))
    if not sft:
        from tunewiz.core.train.preference import build_trainer

        trainer = build_trainer(
            cfg,
            model,
            tokenizer,
            train_rows,
            eval_rows,
            run_dir=run_dir,
            precision=precision,
            callbacks=callbacks,
            fault=fault,
        )
    else:
        trainer = _sft_trainer(
            cfg, run_dir, precision, model, tokenizer, train_rows, eval_rows, callbacks, fault
        )
    callback.counter = trainer
    if not torch.cuda.is_available():
        # glibc keeps the forward pass's freed blocks resident; the CPU estimate assumes not
        from tunewiz.core.train.heap import trim_after_decoder

        trim_after_decoder(trainer.model)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    peak = peak_memory_bytes()
    result = {
        "peak_mem_bytes": peak,
        "step": trainer.state.global_step,
        "epoch": trainer.state.epoch,
    }
    result.update(_estimate_next_to(run_dir, peak))

    if rank() == 0:
        # The stop request is served, whatever the outcome.
        (run_dir / runs.STOP_FILE).unlink(missing_ok=True)
    if callback.nan_step is not None:
        # checkpoint-s holds the weights that produced the loss of step s+1: keep s < last good step.
        kept = _drop_checkpoints_after(run_dir, callback.last_good_step - 1)
        return result | {
            "state": "failed",
            "error": f"the loss became NaN/inf at step {callback.nan_step}; training stopped. "
            f"Last good checkpoint: {kept or 'none'}. Try a lower learning_rate, or precision = bf16/fp32.",
        }
    if callback.stopped:
        return result | {"state": "stopped", "error": ""}
    final = run_dir / "final"
    trainer.save_model(str(final))
    if rank() == 0:
        tokenizer.save_pretrained(str(final))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return result | {
        "state": "finished",
        "error": "",
        "best_model_checkpoint": trainer.state.best_model_checkpoint,
    }


def prepared_here(run_dir: Path, cfg: RunConfig, tokenizer, stop) -> bool:
    """Prepare the data (rank 0; the other ranks wait for it); False when a stop came first."""
    from tunewiz.core.data import DataCancelled
    from tunewiz.core.train import data_store
    from tunewiz.core.train.prepare import prepare_run_data

    if rank() != 0:
        while not data_store.is_complete(run_dir):
            if runs.read_status(run_dir).get("state") not in (*runs.LIVE_STATES, None):
                raise SystemExit("rank 0 ended while preparing the data")
            time.sleep(0.5)
        return True
    try:
        prepare_run_data(run_dir, cfg, tokenizer, stop)
    except DataCancelled:
        return False
    return True


def trained_to_the_end(checkpoint: Path) -> bool:
    """The checkpoint was saved at the run's last step (max_steps, or the end of the last epoch)."""
    from tunewiz.core.train.ckpt import trainer_state

    state = trainer_state(checkpoint)
    step, last = state.get("global_step"), state.get("max_steps")
    return isinstance(step, int) and isinstance(last, int) and 0 < last <= step


def finish_from_checkpoint(run_dir: Path, checkpoint: Path, cfg: RunConfig, tokenizer) -> dict:
    """A resume from the last step trains nothing: final/ is written from the checkpoint,
    unless a complete final/ exists already (it is never replaced)."""
    from tunewiz.core.train.ckpt import final_complete, trainer_state

    state = trainer_state(checkpoint)
    final = run_dir / "final"
    if final_complete(final):
        log.info("%s is the last step and final/ is complete: nothing to train", checkpoint.name)
    elif rank() == 0:
        best = state.get("best_model_checkpoint") if cfg.training.load_best_model_at_end else None
        source = Path(best) if best and Path(best).is_dir() else checkpoint
        log.info("%s is the last step: writing final/ from %s", checkpoint.name, source.name)
        tmp = run_dir / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(*TRAINING_STATE_FILES))
        tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    if rank() == 0:
        (run_dir / runs.STOP_FILE).unlink(missing_ok=True)
    return {
        "state": "finished",
        "error": "",
        "step": state.get("global_step"),
        "epoch": state.get("epoch"),
        "best_model_checkpoint": state.get("best_model_checkpoint"),
    }


# What a checkpoint holds only to continue training; final/ has the model and tokenizer alone.
TRAINING_STATE_FILES = (
    "optimizer.pt",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*",
    "trainer_state.json",
)


def _sft_trainer(
    cfg, run_dir, precision, model, tokenizer, train_rows, eval_rows, callbacks, fault
):
    from tunewiz.core.train.args import build_training_args
    from tunewiz.core.train.collate import Collator
    from tunewiz.core.train.trainer import RunTrainer

    packed = bool(train_rows) and "position_ids" in train_rows[0]
    args = build_training_args(
        cfg, run_dir, precision=precision, has_eval=bool(eval_rows), packed=packed
    )
    return RunTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows or None,
        data_collator=Collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=callbacks,
        fault=fault,
    )


def _estimate_next_to(run_dir: Path, peak: int) -> dict:
    """The measured peak next to the estimator's prediction (estimate.json `total_bytes`)."""
    import json

    try:
        predicted = json.loads((run_dir / runs.ESTIMATE_FILE).read_text(encoding="utf-8"))[
            "total_bytes"
        ]
        return {
            "estimated_peak_bytes": predicted,
            "measured_over_estimate": round(peak / predicted, 3),
        }
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return {}


def _drop_checkpoints_after(run_dir: Path, step: int) -> str | None:
    """Remove checkpoints saved after the last finite loss; return the newest kept one."""
    kept = []
    for ckpt in run_dir.glob("checkpoint-*"):
        n = int(ckpt.name.split("-")[1])
        if n > step:
            shutil.rmtree(ckpt, ignore_errors=True)
        else:
            kept.append((n, ckpt.name))
    return max(kept)[1] if kept else None


if __name__ == "__main__":
    sys.exit(main())
