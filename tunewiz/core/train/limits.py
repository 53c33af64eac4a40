"""Options the model or the memory estimate rule out, refused before a run starts (light: no torch).

`validate` in tunewiz.core.config checks options against each other; these need the model's
config: a sequence longer than the model's context, and a batch that the estimator says
fits on no GPU at all.
"""

from __future__ import annotations

import logging
from typing import Any

from tunewiz.core.config import RunConfig
from tunewiz.core.errors import UserError

log = logging.getLogger(__name__)

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "seq_length", "max_seq_len")


def model_context(model_config: Any) -> int | None:
    """The longest sequence the model was built for, from its transformers config (None: unknown)."""
    for key in CONTEXT_KEYS:
        value = getattr(model_config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_limits(cfg: RunConfig, model_config: Any) -> None:
    check_context(cfg, model_config)
    check_batch_fits_somewhere(cfg)


def check_context(cfg: RunConfig, model_config: Any) -> None:
    context = model_context(model_config)
    if context is None or cfg.data.max_seq_len <= context:
        return
    raise UserError(
        f"max_seq_len {cfg.data.max_seq_len} is longer than the model's context of "
        f"{context} tokens",
        where="data.max_seq_len",
        hint=f"use {context} or less: positions past {context} were never trained, so the "
        "model cannot learn from them",
    )


def check_batch_fits_somewhere(cfg: RunConfig) -> None:
    """Refuse a per-device batch that even the largest catalog GPU cannot hold, when a smaller
    one would fit there (a model too big at any batch is the estimator's advice to give)."""
    from tunewiz.core.estimate import estimate, max_batch, request_from_run_config
    from tunewiz.core.estimate.memory import GIB
    from tunewiz.core.profiles import load_gpus, load_model_arch

    try:
        arch = load_model_arch(cfg.model.model)
        req = request_from_run_config(cfg, device="cuda")
    except UserError as exc:  # an architecture the estimator does not know: no opinion
        log.info("no memory check before the run: %s", exc)
        return
    biggest = max(load_gpus(), key=lambda g: g.memory_gib)
    est = estimate(arch, req)
    if est.fits(biggest.memory_gib):
        return
    fits = max_batch(arch, req, biggest.memory_gib)
    if not fits:
        return
    raise UserError(
        f"per_device_train_batch_size {req.batch_size} needs {est.total / GIB:.1f} GiB per device "
        f"by the estimate, more than the largest GPU known ({biggest.name}, "
        f"{biggest.memory_gib:g} GiB)",
        where="training.per_device_train_batch_size",
        hint=f"use a batch of {fits} or less there and raise gradient_accumulation_steps to "
        f"keep the effective batch; `tunewiz estimate {cfg.model.model}` shows the terms",
    )
