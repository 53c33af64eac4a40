"""The training process: `python -m core.train.worker RUN_DIR [--resume]`.

Started detached by `core.train.launch` (its own session, output to
train.log), or once per rank by `accelerate launch`. Everything it needs is in
the run directory: config.toml, the prepared data under data/, and the chat
template. It always ends by writing a final state to status.json.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path

from core import runs
from core.config import RunConfig
from core.errors import UserError

log = logging.getLogger("tunewiz.train")


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def main(argv: list[str] | None = None) -> int:
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
    from core.train.callbacks import StopFlag

    stop = StopFlag()
    install_signal_handlers(stop)
    is_main = rank() == 0
    if is_main and world_size() == 1:
        # Under accelerate/torchrun the launcher wrote its own pid: that is the one to watch.
        runs.write_status(run_dir, pid=os.getpid(), host=runs.this_host())
    try:
        outcome = train(run_dir, resume=resume, stop=stop)
    except BaseException as exc:  # noqa: BLE001 - every failure must end up in status.json
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
    if isinstance(exc, OSError) and exc.errno == 28:
        return (
            "disk full while saving a checkpoint (the partial checkpoint was removed): "
            + _first_line(exc)
        )
    if isinstance(exc, UserError):
        return str(exc)
    return f"{type(exc).__name__}: {_first_line(exc)} (traceback in train.log)"


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

        from core import estimate

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

    from core.models import load_tokenizer, resolve_model
    from core.train import data_store
    from core.train.callbacks import FaultInjector, RunCallback, parse_fault, peak_memory_bytes
    from core.train.ckpt import last_complete_checkpoint, truncate_metrics
    from core.train.model import load_for_training, resolve_precision

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_warning()
    cfg = RunConfig.load(run_dir / runs.CONFIG_FILE)
    precision = resolve_precision(cfg.model.precision)
    log.info("method %s, precision %s, model %s", cfg.model.method, precision, cfg.model.model)

    tokenizer = load_tokenizer(cfg.model.model, trust_remote_code=cfg.model.trust_remote_code)
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
        step = int(checkpoint.name.split("-")[1])
        if rank() == 0:
            truncate_metrics(run_dir / runs.METRICS_FILE, step)
        log.info("resuming from %s", checkpoint.name)

    callback = RunCallback(run_dir, None, stop, is_main=rank() == 0, world_size=world_size())
    callbacks = [callback]
    fault = parse_fault()
    if fault:
        log.warning("test fault injection active: %s@%d", *fault)
        callbacks.append(FaultInjector(fault))
    if not sft:
        from core.train.preference import build_trainer

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


def _sft_trainer(
    cfg, run_dir, precision, model, tokenizer, train_rows, eval_rows, callbacks, fault
):
    from core.train.args import build_training_args
    from core.train.collate import Collator
    from core.train.trainer import RunTrainer

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
