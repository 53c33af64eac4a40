"""How a failed run reads in status.json: out of memory (with the estimator's advice), disk
full, interrupted, a problem with what was asked (UserError), or a crash.

The worker writes this one line (or three) for the run list and the live panel; the
traceback, when there is one, is in train.log.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from tunewiz.core.config import load_run_config
from tunewiz.core.errors import UserError

log = logging.getLogger("tunewiz.train")  # the worker's logger: train.log names it so


def describe_failure(exc: BaseException, run_dir: Path) -> str:
    """The failure as the user reads it in status.json's `error`."""
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

        cfg = load_run_config(run_dir)
        if torch.cuda.is_available():
            mem = torch.cuda.get_device_properties(0).total_memory / 2**30
            return estimate.oom_advice(cfg, device=torch.cuda.get_device_name(0), gpu_mem_gib=mem)
        return estimate.oom_advice(cfg, device="cpu", gpu_mem_gib=None)
    except Exception as exc:  # noqa: BLE001 - advice must never hide the failure itself
        log.warning("estimator advice unavailable (%s)", exc)
        return generic
