"""Batched generation for evaluation: many prompts per `model.generate` call.

Prompts are left-padded (a decoder-only model continues from the right edge),
and sorted by length first so that a batch holds prompts of similar length and
wastes little on padding; outputs come back in the caller's order. Under greedy
decoding the outputs equal one-prompt-at-a-time generation (tests check it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunewiz.core.chat import GenerationSettings, _cancel_criteria, end_of_turn_ids
from tunewiz.core.errors import UserError
from tunewiz.core.loading import LoadedModel

DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: int  # new tokens, up to and including the end-of-turn token
    stopped: bool  # True: ended at end-of-turn; False: ran into max_new_tokens (or cancelled)


class EvalCancelled(Exception):
    """The user stopped the evaluation."""


def _left_pad(batch: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    import torch

    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids, mask


def _decode(tokenizer: Any, new_ids: list[int], eot: set[int]) -> Generation:
    cut = next((i for i, t in enumerate(new_ids) if t in eot), None)
    kept = new_ids if cut is None else new_ids[:cut]
    text = tokenizer.decode(kept, skip_special_tokens=True).strip()
    return Generation(text, len(new_ids) if cut is None else cut + 1, cut is not None)


def generate_batched(
    loaded: LoadedModel,
    prompts: list[list[int]],
    settings: GenerationSettings,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cancel: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Generation]:
    """Continue each prompt (token ids); `progress(n)` after each batch of n prompts."""
    import torch

    if batch_size < 1:
        raise UserError("the batch size must be at least 1", where="--batch-size")
    cancel = cancel or threading.Event()
    tokenizer, model = loaded.tokenizer, loaded.model
    eot = end_of_turn_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot[0]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: dict[int, Generation] = {}
    for start in range(0, len(order), batch_size):
        if cancel.is_set():
            raise EvalCancelled()
        chunk = order[start : start + batch_size]
        ids, mask = _left_pad([prompts[i] for i in chunk], pad)
        with torch.inference_mode():
            result = model.generate(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                **settings.generate_kwargs(),
                eos_token_id=eot,
                pad_token_id=pad,
                stopping_criteria=_cancel_criteria(cancel),
            )
        for row, i in enumerate(chunk):
            out[i] = _decode(tokenizer, result[row, ids.shape[1] :].tolist(), set(eot))
        if progress:
            progress(len(chunk))
    if cancel.is_set():
        raise EvalCancelled()
    return [out[i] for i in range(len(prompts))]
