"""The estimator for preference objectives and for method freeze, against figures worked by hand."""

from __future__ import annotations

import pytest

from tunewiz.core.config import RunConfig
from tunewiz.core.errors import UserError
from tunewiz.core.estimate import EstimateRequest, estimate, request_from_run_config
from tunewiz.core.estimate.memory import (
    _lora_activation_bytes,
    activation_bytes,
    fused_logprob_tile_bytes,
    logits_bytes,
)
from tunewiz.core.profiles import load_model_arch


@pytest.fixture(scope="module")
def arch():
    return load_model_arch("HuggingFaceTB/SmolLM2-135M-Instruct")


def req(**kw) -> EstimateRequest:
    base = dict(precision="bf16-mixed", batch_size=2, seq_len=256, device="cuda")
    return EstimateRequest(**{**base, **kw})


def test_pairs_double_the_activations_kto_does_not(arch):
    for method in ("lora", "full"):
        # TRL's preference trainers turn dropout off (LoRA's too): SFT without dropout compares
        sft = activation_bytes(arch, req(method=method, lora_dropout=0.0))
        assert activation_bytes(arch, req(method=method, objective="dpo")) == 2 * sft
        assert activation_bytes(arch, req(method=method, objective="orpo")) == 2 * sft
        assert activation_bytes(arch, req(method=method, objective="kto")) == sft


def test_preference_objectives_keep_no_dropout_masks(arch):
    # TRL sets every nn.Dropout's p to 0 (disable_dropout=True): LoRA's dropout keeps nothing,
    # where SFT keeps a noise tensor per adapted input on the CPU (4 bytes x d_in, per token)
    for device in ("cpu", "cuda"):
        kw = dict(method="lora", precision="fp32", device=device)
        for objective in ("dpo", "kto", "orpo"):
            with_dropout = activation_bytes(arch, req(objective=objective, lora_dropout=0.05, **kw))
            assert with_dropout == activation_bytes(
                arch, req(objective=objective, lora_dropout=0.0, **kw)
            )
        assert activation_bytes(arch, req(lora_dropout=0.05, **kw)) > activation_bytes(
            arch, req(lora_dropout=0.0, **kw)
        )
    # SmolLM2, per token per layer: q/k/v share one fp32 input, gate/up another, o and down
    # their own: (3 x 576 + 1536) x 4 bytes, against (mask + input) per adapter with dropout
    lora = req(method="lora", precision="fp32", device="cpu", objective="dpo")
    assert _lora_activation_bytes(arch, lora) == (3 * 576 + 1536) * 4


def test_fused_head_tile_on_the_cpu_is_trls_torch_fallback(arch):
    # TRL's _backward_tile without Triton: the tile buffer, y, z, log_p, p, grad (fp32), the
    # bool is_target and two fp32 temporaries of `grad += g * (is_target.float() - p)`
    cpu = req(objective="dpo", method="full", precision="fp32", device="cpu")
    tokens = 2 * 2 * 256  # chosen and rejected of 2 rows: under 4096, one token chunk
    assert fused_logprob_tile_bytes(arch, cpu, tokens) == 33 * tokens * 32768
    bf16 = req(objective="dpo", method="full", precision="bf16-mixed", device="cpu")
    assert fused_logprob_tile_bytes(arch, bf16, tokens) == 31 * tokens * 32768  # 16-bit buffer
    cuda = req(objective="dpo", method="full", precision="fp32", device="cuda")
    assert fused_logprob_tile_bytes(arch, cuda, tokens) == 4 * tokens * 32768  # in place
    assert fused_logprob_tile_bytes(arch, cpu, 10_000) == 33 * 4096 * 32768  # widest tile
    head = 4 * arch.vocab_size * arch.hidden_size
    assert logits_bytes(arch, cpu) == 33 * tokens * 32768 + 4 * tokens * arch.hidden_size + head


def test_logits_fused_for_dpo_and_kto_whole_for_orpo(arch):
    tokens = 2 * 256
    assert logits_bytes(arch, req()) == 12 * arch.vocab_size * tokens
    # TRL's fused head: one fp32 tile (tokens x 32768 vocabulary columns), the hidden states'
    # gradient, and the head's fp32 weight gradient when it trains (full)
    tile = 4 * 2 * tokens * 32768 + 4 * 2 * tokens * arch.hidden_size
    assert logits_bytes(arch, req(objective="dpo", method="lora")) == tile
    head = 4 * arch.vocab_size * arch.hidden_size
    assert logits_bytes(arch, req(objective="dpo", method="full")) == tile + head
    assert logits_bytes(arch, req(objective="dpo")) < logits_bytes(arch, req()) / 2
    assert logits_bytes(arch, req(objective="orpo")) == 12 * arch.vocab_size * 2 * tokens + (
        4 * arch.vocab_size * tokens
    )


def test_reference_copy_only_for_full_without_precompute(arch):
    n = arch.num_params()
    for method in ("lora", "qlora"):  # adapters disabled: the base is the reference
        a = estimate(arch, req(method=method, objective="dpo")).breakdown["weights"]
        assert a == estimate(arch, req(method=method)).breakdown["weights"]
    full = estimate(arch, req(method="full")).breakdown["weights"]
    assert estimate(arch, req(method="full", objective="dpo")).breakdown["weights"] == full + 2 * n
    cpu = dict(method="full", device="cpu", precision="fp32")
    cpu_full = estimate(arch, req(**cpu)).breakdown["weights"]
    kto_cpu = estimate(arch, req(objective="kto", **cpu)).breakdown["weights"]
    assert kto_cpu == cpu_full + 4 * n  # fp32 is the CPU's compute dtype
    pre = req(method="full", objective="dpo", precompute_ref=True)
    assert estimate(arch, pre).breakdown["weights"] == full
    # orpo has no reference model at all
    assert estimate(arch, req(method="full", objective="orpo")).breakdown["weights"] == full


def test_freeze_counts_only_what_trains(arch):
    per_layer = arch.params_per_layer()
    est = estimate(arch, req(method="freeze", freeze_layers=4, optimizer="adamw"))
    assert est.params_trainable == 4 * per_layer
    assert est.breakdown["gradients"] == 4 * 4 * per_layer
    head = estimate(arch, req(method="freeze", freeze_layers=4, freeze_lm_head=True))
    assert head.params_trainable == 4 * per_layer + arch.vocab_size * arch.hidden_size
    # activations from the first trained block up: 4 of the layers of a full fine-tune
    full = activation_bytes(arch, req(method="full"))
    one = activation_bytes(arch, req(method="freeze", freeze_layers=1))
    four = activation_bytes(arch, req(method="freeze", freeze_layers=4))
    per = four - one
    assert per == pytest.approx(3 * (full - four) / (arch.num_layers - 4))
    # every extra layer costs memory, visibly
    totals = [estimate(arch, req(method="freeze", freeze_layers=k)).total for k in (1, 8, 30)]
    assert totals == sorted(totals) and totals[0] < estimate(arch, req(method="full")).total
    with pytest.raises(UserError, match="cannot train the last 31"):
        estimate(arch, req(method="freeze", freeze_layers=31))


def test_run_config_maps_objective_and_freeze():
    cfg = RunConfig()
    cfg.model.method, cfg.model.freeze_trainable_layers = "freeze", 3
    cfg.training.objective, cfg.training.precompute_ref_log_probs = "kto", True
    r = request_from_run_config(cfg, device="cpu")
    assert (r.method, r.freeze_layers, r.objective, r.precompute_ref) == ("freeze", 3, "kto", True)
