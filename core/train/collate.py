"""Batching prepared examples: pad to the longest row, or keep packed rows apart.

Plain rows get right padding, an attention mask, and labels of -100 on the
padding. Packed rows (several original rows in one sequence) carry
`position_ids` that restart at 0 for each original row and no attention mask:
transformers (v5 masking_utils.find_packed_sequence_indices) then builds a
block-diagonal causal mask from the restarts, so attention never crosses rows,
with sdpa and eager as with flash-attention.
"""

from __future__ import annotations

IGNORE_INDEX = -100


class Collator:
    """Also counts real (non-padding) tokens, for tokens/s without an extra gather per step."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id
        self.tokens_seen = 0

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
        self.tokens_seen += real
        batch = {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }
        batch["position_ids" if packed else "attention_mask"] = torch.tensor(
            extra, dtype=torch.long
        )
        return batch
