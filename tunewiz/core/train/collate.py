"""Batching prepared examples: pad to the longest row, or keep packed rows apart.

Plain rows get right padding, an attention mask, and labels of -100 on the
padding. Packed rows (several original rows in one sequence) carry
`position_ids` that restart at 0 for each original row and no attention mask:
transformers (v5 masking_utils.find_packed_sequence_indices) then builds a
block-diagonal causal mask from the restarts, so attention never crosses rows,
with sdpa and eager as with flash-attention.
"""

from __future__ import annotations

from typing import Any

from tunewiz.core.data.template import IGNORE_INDEX

TOKENS_KEY = "num_real_tokens"


class Collator:
    """Also tells the trainer how many real (non-padding) tokens each batch has.

    The count rides in the batch as a plain int (`num_real_tokens`, popped by
    RunTrainer.training_step before the forward pass): counting in the collator
    itself would be off by the dataloader's prefetch, and counting on the GPU
    would need a sync per step.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        packed = "position_ids" in features[0]
        ids, labels, extra = [], [], []
        real = 0
        for f in features:
            n = len(f["input_ids"])
            pad = longest - n
            real += n
            ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            if packed:
                # Padding gets its own restart at 0, so it forms a separate (ignored) sequence.
                extra.append(list(f["position_ids"]) + list(range(pad)))
            else:
                extra.append([1] * n + [0] * pad)
        batch: dict[str, Any] = {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }
        batch["position_ids" if packed else "attention_mask"] = torch.tensor(
            extra, dtype=torch.long
        )
        batch[TOKENS_KEY] = real
        return batch
