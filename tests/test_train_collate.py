"""Batching: padding to the longest row, and packed rows that never attend to each other."""

from __future__ import annotations

import pytest

from tunewiz.core.train.collate import IGNORE_INDEX, TOKENS_KEY, Collator


def test_padding_to_longest_masks_padding_and_counts_real_tokens():
    batch = Collator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch[TOKENS_KEY] == 4 and "position_ids" not in batch


@pytest.mark.parametrize("attn", ["sdpa", "eager", "flash_attention_2"])
def test_packed_rows_give_the_same_logits_as_rows_alone(tiny_model_dir, attn):
    import torch
    from transformers import AutoModelForCausalLM

    from tunewiz.core import kernels

    device, dtype, tol = "cpu", torch.float32, 1e-4
    if attn == "flash_attention_2":  # the padding-free path through cu_seqlens, where it runs
        if not kernels.flash_attention_usable(kernels.probe()):
            pytest.skip("flash-attn needs its package and an Ampere or newer CUDA GPU")
        device, dtype, tol = "cuda", torch.bfloat16, 2e-2
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, attn_implementation=attn, dtype=dtype
    ).to(device)
    model.eval()
    a, b = [11, 12, 13, 14], [21, 22, 23]
    packed = {"input_ids": a + b, "labels": a + b, "position_ids": [0, 1, 2, 3, 0, 1, 2]}
    batch = Collator(pad_token_id=0)(
        [packed, {"input_ids": a, "labels": a, "position_ids": [0, 1, 2, 3]}]
    )
    assert "attention_mask" not in batch
    assert batch["position_ids"][1].tolist() == [
        0,
        1,
        2,
        3,
        0,
        1,
        2,
    ]  # padding restarts: its own sequence
    assert batch["labels"][1].tolist()[4:] == [IGNORE_INDEX] * 3
    batch.pop(TOKENS_KEY)
    batch = {k: v.to(device) for k, v in batch.items()}
    # As in training (tunewiz.core.train.model sets use_cache=False): with a KV cache transformers
    # would not look for packed rows in position_ids.
    model.config.use_cache = False
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        alone_a = model(input_ids=torch.tensor([a], device=device)).logits[0]
        alone_b = model(input_ids=torch.tensor([b], device=device)).logits[0]
    torch.testing.assert_close(out[0, :4], alone_a, rtol=tol, atol=tol)
    torch.testing.assert_close(out[0, 4:], alone_b, rtol=tol, atol=tol)  # b never saw a


def test_length_grouped_order_depends_only_on_seed_and_epoch():
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from tunewiz.core.train.trainer import EpochSeededLengthSampler

    lengths = [((i * 37) % 97) + 1 for i in range(64)]

    def order(epoch: int, noise: int) -> list[int]:
        torch.manual_seed(noise)  # a resume restores the global RNG to some other state
        s = EpochSeededLengthSampler(LengthGroupedSampler(4, lengths=lengths), seed=42)
        s.set_epoch(epoch)
        return list(s)

    assert order(1, 0) == order(1, 123)
    assert order(1, 0) != order(2, 0)
    assert sorted(order(1, 0)) == list(range(64))
