"""The training process: `python -m tunewiz.core.train.worker RUN_DIR [--resume]`.

Started detached by `tunewiz.core.train.launch` (its own session, output to
train.log, the run's lock inherited, stop signals blocked until its handlers are
in place), or once per rank by `accelerate launch`. It first prepares the data
into data/ (state `preparing`, see tunewiz.core.train.prepare), then trains. It always
ends by writing a final state to status.json.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewiz.core import runs
from tunewiz.core.config import RunConfig, load_run_config
from tunewiz.core.errors import UserError
from tunewiz.core.train.failure import describe_failure

if TYPE_CHECKING:
    from types import FrameType

    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

    from tunewiz.core.train.callbacks import RunCallback
    from tunewiz.core.train.stopflag import StopFlag
    from tunewiz.core.train.trainer import RunTrainer

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


def stopped_while_preparing(run_dir: Path) -> dict[str, Any]:
    (run_dir / runs.STOP_FILE).unlink(missing_ok=True)  # the request is served
    log.warning("stopped while preparing the data")
    return {
        "state": "stopped",
        "error": "",
        "note": "stopped before the first checkpoint (while preparing the data): "
        f"start it again with `tunewiz train {run_dir / runs.CONFIG_FILE}`",
    }


def install_signal_handlers(stop: StopFlag) -> None:
    def graceful(signum: int, _frame: FrameType | None) -> None:
        if stop.requested:
            raise KeyboardInterrupt  # a second signal: stop now, without the checkpoint
        stop.request(signal.Signals(signum).name)
        log.warning("%s received: will save a checkpoint and stop after this step", stop.reason)

    signal.signal(signal.SIGTERM, graceful)
    signal.signal(signal.SIGINT, graceful)
    # We run in our own session already; ignoring SIGHUP also covers being started some other way.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


# -- training -----------------------------------------------------------------


@dataclass
class Inputs:
    """What a run trains on, loaded once by `train` before the model."""

    cfg: RunConfig
    precision: str  # resolved: bf16, fp16 or fp32
    tokenizer: PreTrainedTokenizerBase
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]


def train(run_dir: Path, *, resume: bool, stop: StopFlag) -> dict[str, Any]:
    """Prepare the data (once), load the model, train: the run's outcome for status.json."""
    import transformers

    from tunewiz.core.models import resolve_model
    from tunewiz.core.train.model import load_for_training

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_warning()
    inputs = load_inputs(run_dir, stop)
    if inputs is None:
        return stopped_while_preparing(run_dir)
    cfg = inputs.cfg
    # Seed before the adapters are created: their random init is part of what config.toml reproduces.
    transformers.set_seed(cfg.training.seed)
    sft = cfg.training.objective == "sft"
    model = load_for_training(
        cfg, resolve_model(cfg.model.model), precision=inputs.precision, adapters=sft
    )
    checkpoint = None
    if resume:
        checkpoint = resume_point(run_dir)
        if trained_to_the_end(checkpoint):
            return finish_from_checkpoint(run_dir, checkpoint, cfg, inputs.tokenizer)
        rewind_metrics(run_dir, checkpoint)
    trainer, callback = make_trainer(run_dir, inputs, model, stop)
    _trim_heap_on_cpu(trainer)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return training_outcome(run_dir, trainer, callback, inputs.tokenizer)


def _trim_heap_on_cpu(trainer: RunTrainer) -> None:
    """On a CPU, return the forward pass's freed blocks to the system after the decoder:
    glibc keeps them resident otherwise, and the CPU estimate assumes it does not."""
    import torch

    if not torch.cuda.is_available():
        from tunewiz.core.train.heap import trim_after_decoder

        trim_after_decoder(trainer.model)


def load_inputs(run_dir: Path, stop: StopFlag) -> Inputs | None:
    """The run's config, tokenizer and prepared rows (preparing them first); None when a stop
    came while preparing."""
    from tunewiz.core.loading import load_tokenizer
    from tunewiz.core.train import data_store
    from tunewiz.core.train.model import resolve_precision

    cfg = load_run_config(run_dir)
    precision = resolve_precision(cfg.model.precision)
    log.info("method %s, precision %s, model %s", cfg.model.method, precision, cfg.model.model)
    tokenizer = load_tokenizer(cfg.model.model, trust_remote_code=cfg.model.trust_remote_code)
    if not prepared_here(run_dir, cfg, tokenizer, stop):
        return None
    template = run_dir / "chat_template.jinja"
    if template.is_file():
        tokenizer.chat_template = template.read_text(encoding="utf-8")
    train_rows, eval_rows = data_store.load(run_dir)
    return Inputs(cfg, precision, tokenizer, train_rows, eval_rows)


def resume_point(run_dir: Path) -> Path:
    """The checkpoint a resume continues from (`checkpoints.resume_checkpoint`'s rule)."""
    from tunewiz.core.checkpoints import resume_checkpoint

    checkpoint = resume_checkpoint(run_dir)
    if checkpoint is None:
        raise UserError("no complete checkpoint to resume from", where=str(run_dir))
    return checkpoint


def rewind_metrics(run_dir: Path, checkpoint: Path) -> None:
    """Forget the metrics logged after the checkpoint: those steps are trained again."""
    from tunewiz.core.runs import truncate_metrics

    step = int(checkpoint.name.split("-")[1])
    if rank() == 0:
        truncate_metrics(run_dir / runs.METRICS_FILE, step)
    log.info("resuming from %s", checkpoint.name)


def make_trainer(
    run_dir: Path, inputs: Inputs, model: PreTrainedModel | PeftModel, stop: StopFlag
) -> tuple[RunTrainer, RunCallback]:
    """The objective's trainer with the run's callback (and a test fault when one is asked for)."""
    from tunewiz.core.train.callbacks import FaultInjector, RunCallback, parse_fault

    callback = RunCallback(run_dir, None, stop, is_main=rank() == 0, world_size=world_size())
    callbacks: list[TrainerCallback] = [callback]
    fault = parse_fault()
    if fault:
        log.warning("test fault injection active: %s@%d", *fault)
        callbacks.append(FaultInjector(fault))
    trainer: RunTrainer
    if inputs.cfg.training.objective != "sft":
        from tunewiz.core.train.preference import build_trainer

        trainer = build_trainer(
            inputs.cfg,
            model,
            inputs.tokenizer,
            inputs.train_rows,
            inputs.eval_rows,
            run_dir=run_dir,
            precision=inputs.precision,
            callbacks=callbacks,
            fault=fault,
        )
    else:
        trainer = _sft_trainer(run_dir, inputs, model, callbacks, fault)
    callback.counter = trainer
    return trainer, callback


def training_outcome(
    run_dir: Path, trainer: RunTrainer, callback: RunCallback, tokenizer: PreTrainedTokenizerBase
) -> dict[str, Any]:
    """How the training ended (finished, stopped, or failed on a NaN loss), with the peak memory;
    a finished run's model and tokenizer are saved to final/."""
    import torch

    from tunewiz.core.train.callbacks import peak_memory_bytes

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


def prepared_here(
    run_dir: Path, cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, stop: StopFlag
) -> bool:
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
    from tunewiz.core.checkpoints import trainer_state

    state = trainer_state(checkpoint)
    step, last = state.get("global_step"), state.get("max_steps")
    return isinstance(step, int) and isinstance(last, int) and 0 < last <= step


def finish_from_checkpoint(
    run_dir: Path, checkpoint: Path, cfg: RunConfig, tokenizer: PreTrainedTokenizerBase
) -> dict[str, Any]:
    """A resume from the last step trains nothing: final/ is written from the checkpoint,
    unless a complete final/ exists already (it is never replaced)."""
    from tunewiz.core.checkpoints import final_complete, trainer_state

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
    run_dir: Path,
    inputs: Inputs,
    model: PreTrainedModel | PeftModel,
    callbacks: list[TrainerCallback],
    fault: tuple[str, int] | None,
) -> RunTrainer:
    from tunewiz.core.train.args import build_training_args
    from tunewiz.core.train.collate import Collator
    from tunewiz.core.train.trainer import RunTrainer

    train_rows, eval_rows = inputs.train_rows, inputs.eval_rows
    packed = bool(train_rows) and "position_ids" in train_rows[0]
    args = build_training_args(
        inputs.cfg, run_dir, precision=inputs.precision, has_eval=bool(eval_rows), packed=packed
    )
    return RunTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows or None,
        data_collator=Collator(inputs.tokenizer.pad_token_id),
        processing_class=inputs.tokenizer,
        callbacks=callbacks,
        fault=fault,
    )


def _estimate_next_to(run_dir: Path, peak: int) -> dict[str, Any]:
    """The measured peak next to the estimator's prediction (estimate.json `total_bytes`)."""
    predicted = runs.read_estimate_bytes(run_dir)
    if predicted is None:
        return {}
    return {
        "estimated_peak_bytes": predicted,
        "measured_over_estimate": round(peak / predicted, 3),
    }


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
