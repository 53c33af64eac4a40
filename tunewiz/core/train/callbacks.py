"""The Trainer callback that keeps the run directory current, and test-only fault injection.

Only the main process writes files; every process takes part in the stop
decision so that all ranks stop (and save) at the same step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from transformers import TrainerCallback

from tunewiz.core import runs
from tunewiz.core.train.stopflag import StopFlag

if TYPE_CHECKING:
    from torch import nn
    from transformers import TrainerControl, TrainerState, TrainingArguments

log = logging.getLogger(__name__)

# Test-only: TUNEWIZ_FAULT="oom@2" raises an out-of-memory error after optimizer step 2;
# "nan@2" sets a trainable weight to NaN (the next logged loss is NaN); "crash@2" raises
# RuntimeError; "enospc@2" makes the checkpoint saved at step 2 fail with "No space left".
FAULT_ENV = "TUNEWIZ_FAULT"


def parse_fault() -> tuple[str, int] | None:
    raw = os.environ.get(FAULT_ENV, "")
    if "@" not in raw:
        return None
    kind, step = raw.split("@", 1)
    return kind.strip(), int(step)


def peak_memory_bytes() -> int:
    """Peak GPU memory allocated by torch on a GPU; peak resident set size on the CPU."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


class TokenCounter(Protocol):
    """What counts the tokens trained on (the trainer: RunTrainer)."""

    tokens_seen: int
    padded_tokens_seen: int


class RunCallback(TrainerCallback):
    def __init__(
        self,
        run_dir: Path,
        counter: TokenCounter | None,
        stop: StopFlag,
        *,
        is_main: bool,
        world_size: int,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.counter = counter  # the trainer, once it exists (it is made with this callback)
        self.stop = stop
        self.is_main = is_main
        self.world_size = world_size
        self.stopped = False
        self.nan_step: int | None = None
        self.last_good_step = 0
        self.best_eval_loss: float | None = None
        self._t0 = time.time()
        self._last_log_t = self._t0
        self._last_tokens = 0
        self._last_status_t = 0.0
        self._first_step_seen = False
        self._elapsed_before = float(runs.read_status(self.run_dir).get("elapsed_before_s") or 0.0)
        self._metrics = (
            open(self.run_dir / runs.METRICS_FILE, "a", encoding="utf-8") if is_main else None
        )

    # -- lifecycle ----------------------------------------------------------

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._t0 = self._last_log_t = time.time()
        self._last_tokens = self._counter().tokens_seen
        self.last_good_step = state.global_step
        for entry in state.log_history:  # a resumed run remembers its best eval loss
            if "eval_loss" in entry:
                self._note_eval(entry["eval_loss"])
        self._status(
            state="running",
            step=state.global_step,
            start_step=state.global_step,
            total_steps=state.max_steps,
            first_step_at=None,
        )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if not self._first_step_seen:
            self._first_step_seen = True
            now = time.time()
            self._status(first_step_at=now)
            log.info("first optimizer step done after %.1f s of training", now - self._t0)
        # At the last step a stop changes nothing: the run finishes normally (with final/).
        if self._stop_requested() and state.global_step < state.max_steps:
            self.stopped = True
            control.should_save = True  # even with save_strategy "no": resume needs it
            control.should_training_stop = True
            log.warning(
                "stop requested (%s): saving a checkpoint at step %d",
                self.stop.reason,
                state.global_step,
            )
        now = time.time()
        if now - self._last_status_t > 2.0 or control.should_training_stop:
            self._status(step=state.global_step, epoch=state.epoch)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        logs = dict(logs or {})
        if "train_runtime" in logs:  # the end-of-training summary, not a step
            return
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            self.nan_step = state.global_step
            control.should_save = False  # never save weights that produced NaN
            control.should_training_stop = True
            log.error("loss became %s at step %d: stopping", loss, state.global_step)
        elif loss is not None:
            self.last_good_step = state.global_step
        row = self._metrics_row(state, logs)
        if "eval_loss" in logs:
            self._note_eval(logs["eval_loss"])
        if self._metrics is not None:
            self._metrics.write(json.dumps(_jsonable(row)) + "\n")
            self._metrics.flush()
        update: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch}
        if loss is not None:
            update["last_loss"] = loss if math.isfinite(loss) else str(loss)
        if self.best_eval_loss is not None:
            update["best_eval_loss"] = self.best_eval_loss
        if "rewards/margins" in logs:
            update["last_reward_margin"] = logs["rewards/margins"]
        self._status(**update)

    def _metrics_row(self, state: TrainerState, logs: dict[str, Any]) -> dict[str, Any]:
        """The metrics.jsonl line for a log entry, with throughput since the last one."""
        now = time.time()
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        for key in ("loss", "eval_loss", "learning_rate", "grad_norm"):
            if key in logs:
                row[key] = logs[key]
        for key, val in logs.items():  # other eval metrics (eval_runtime, ...) as they come
            if key.startswith("eval_") and key not in row:
                row[key] = val
        row.update(objective_metrics(logs))
        if "loss" in logs:
            counter = self._counter()
            tokens = counter.tokens_seen - self._last_tokens
            dt = max(now - self._last_log_t, 1e-9)
            row["tokens_per_s"] = round(tokens * self.world_size / dt, 2)
            # This session's totals over all ranks; padded / real shows what padding costs.
            row["tokens_seen"] = counter.tokens_seen * self.world_size
            row["padded_tokens_seen"] = counter.padded_tokens_seen * self.world_size
            self._last_tokens, self._last_log_t = counter.tokens_seen, now
        row["elapsed_s"] = round(self._elapsed_before + now - self._t0, 3)
        row["peak_mem_bytes"] = peak_memory_bytes()
        return row

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._status(last_checkpoint=f"checkpoint-{state.global_step}")

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    # -- helpers ------------------------------------------------------------

    def _counter(self) -> TokenCounter:
        assert self.counter is not None, "the worker sets counter to the trainer before training"
        return self.counter

    def _note_eval(self, value: float | None) -> None:
        if value is not None and math.isfinite(value):
            self.best_eval_loss = (
                value if self.best_eval_loss is None else min(self.best_eval_loss, value)
            )

    def _stop_requested(self) -> bool:
        if not self.stop.requested and (self.run_dir / runs.STOP_FILE).exists():
            self.stop.request("tunewiz stop")
        flag = self.stop.requested
        if self.world_size > 1:
            # Ranks may see the file at different steps; agree so all stop at the same one.
            import torch
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                t = torch.tensor([1 if flag else 0], dtype=torch.int32)
                if dist.get_backend() == "nccl":
                    t = t.cuda()
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                flag = bool(t.item())
        return flag

    def _status(self, **fields: Any) -> None:
        if self.is_main:
            self._last_status_t = time.time()
            runs.write_status(self.run_dir, **fields)


def objective_metrics(logs: dict[str, Any]) -> dict[str, Any]:
    """Preference objectives' own metrics (rewards/*, logps/*, ...) from a log entry."""
    from tunewiz.core.train.preference import metric_row

    return metric_row(logs)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, val in row.items():
        if hasattr(val, "item"):
            val = val.item()
        if isinstance(val, float) and not math.isfinite(val):
            val = str(val)  # JSON has no NaN; keep it visible as text
        out[key] = val
    return out


class FaultInjector(TrainerCallback):
    """Test-only (see FAULT_ENV): makes failures happen on demand, inside a real run."""

    def __init__(self, fault: tuple[str, int]) -> None:
        self.kind, self.step = fault

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        **kw: Any,
    ) -> None:
        if state.global_step != self.step:
            return
        if self.kind == "oom":
            import torch

            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (injected by test)"
            )
        if self.kind == "crash":
            raise RuntimeError("injected crash")
        if self.kind == "nan":
            import torch

            assert model is not None  # Trainer passes its model to every callback
            with torch.no_grad():
                for p in model.parameters():
                    if p.requires_grad:
                        p.fill_(float("nan"))
                        break
