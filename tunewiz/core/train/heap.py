"""CPU training: hand glibc's freed heap pages back to the OS after each decoder pass.

glibc's malloc raises its mmap threshold as large blocks are freed (up to 32 MiB), so after the
first step activation-sized tensors come from the heap, and freed blocks stay resident as holes
between live tensors. The CPU estimate counts what tensors hold (`tunewiz.core.estimate.memory`).
Measured with bench/bench_allocator.py (SmolLM2 LoRA b=2 s=256, peak RSS; estimate 2.33 GiB):
glibc's default 2.89-2.96 GiB; MALLOC_MMAP_THRESHOLD_=131072 (what bench/bench_estimate.py
measures under) 2.40 GiB, but every block is then mapped and faulted in afresh, and it ran at
0.54x-0.59x the default's tokens per CPU-second within the same rounds; a 4 MiB threshold keeps
the holes (2.93-2.96 GiB). `malloc_trim(0)` after the decoder, before the LM head and the loss,
gave 2.59-2.64 GiB; a real `tunewiz train --preset quick-test --packing true` run went from
measured_over_estimate 1.168 to 1.062. The cost is a heap walk per forward pass: in two
alternating rounds the trim ran at 1.28x and 0.99x the default's tokens per CPU-second (no
measurable loss) with peaks of 2.54-2.60 GiB against 2.92-2.95.
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
    glibc or without a backbone. A second trim before the decoder (the previous step's holes)
    measured no lower: 2.632 GiB against 2.635, and the same 1.062 in a `tunewiz train` run.
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
