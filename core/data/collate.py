"""Batching examples for training, packed or not.

Packed examples carry `position_ids` that restart at 0 at each original row.
transformers (masking_utils.find_packed_sequence_indices) builds a
block-diagonal causal mask from them, so no row attends to another, but only
when the batch has NO attention_mask and the forward has no cache: train
with `model.config.use_cache = False` (or pass `use_cache=False`). Padding a
packed batch therefore appends pad tokens whose position_ids again count from 0
(they form their own block, which nothing real attends to) with labels -100.
"""

from __future__ import annotations

from core.data.template import IGNORE_INDEX


def collate(features: list[dict], pad_token_id: int) -> dict:
    """Pad a list of examples into tensors; packed ones get position_ids and no attention_mask."""
    import torch

    longest = max(len(f["input_ids"]) for f in features)
    packed = "position_ids" in features[0]
    ids, labels, extra = [], [], []
    for f in features:
        pad = longest - len(f["input_ids"])
        ids.append(list(f["input_ids"]) + [pad_token_id] * pad)
        labels.append(list(f.get("labels", f["input_ids"])) + [IGNORE_INDEX] * pad)
        if packed:
            extra.append(list(f["position_ids"]) + list(range(pad)))
        else:
            extra.append([1] * len(f["input_ids"]) + [0] * pad)
    batch = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}
    batch["position_ids" if packed else "attention_mask"] = torch.tensor(extra)
    return batch
