"""CPU training: hand glibc's freed heap pages back to the OS once per forward pass.

glibc's malloc raises its mmap threshold as large blocks are freed (up to 32 MiB), so after the
first step activation-sized tensors come from the heap, and the forward pass's freed
temporaries stay resident as holes between the tensors saved for the backward pass. The CPU
estimate counts what tensors hold (`tunewiz.core.estimate.memory`); glibc's holes added 27% to
a LoRA step of the bundled model (bench/bench_allocator.py). A fixed small mmap threshold
(MALLOC_MMAP_THRESHOLD_=131072, what bench/bench_estimate.py measures with) removes them, but
then every block is mapped and faulted in afresh: it cost 45% of the tokens per CPU-second in
the same measurement. `malloc_trim(0)` once, when the decoder has run and before the LM head
and the loss, releases the holes at the moment the step's peak begins, for the price of one
heap walk per forward pass.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library is not glibc (musl, macOS)."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def trim_heap() -> bool:
    """Release the heap's free pages to the OS; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def trim_after_decoder(model: Any) -> bool:
    """Trim the heap each time the model's decoder stack has run, before its LM head.

    The hook sits on the backbone (`base_model`, e.g. LlamaModel), which both transformers'
    causal-LM forward and TRL's fused LM head (trl/trainer/utils.py `_fused_forward`) call
    before the head. PEFT's wrapper is looked through. False (nothing installed) without
    glibc or without a backbone.
    """
    if _malloc_trim() is None:
        return False
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(inner, "base_model", None)
    if backbone is None or backbone is inner:
        return False
    backbone.register_forward_hook(lambda *_: trim_heap() and None)
    log.debug("heap trimmed after each pass of %s", type(backbone).__name__)
    return True
