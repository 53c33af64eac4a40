"""The estimator for preference objectives and for method freeze, against figures worked by hand."""

from __future__ import annotations

import pytest

from tunewiz.core.config import RunConfig
from tunewiz.core.errors import UserError
from tunewiz.core.estimate import EstimateRequest, estimate, request_from_run_config
from tunewiz.core.estimate.memory import activation_bytes, logits_bytes
from tunewiz.core.profiles import load_model_arch


@pytest.fixture(scope="module")
def arch():
    return load_model_arch("HuggingFaceTB/SmolLM2-135M-Instruct")


def req(**kw) -> EstimateRequest:
    base = dict(precision="bf16-mixed", batch_size=2, seq_len=256, device="cuda")
    return EstimateRequest(**{**base, **kw})


def test_pairs_double_the_activations_kto_does_not(arch):
    for method in ("lora", "full"):
        sft = activation_bytes(arch, req(method=method))
        assert activation_bytes(arch, req(method=method, objective="dpo")) == 2 * sft
        assert activation_bytes(arch, req(method=method, objective="orpo")) == 2 * sft
        assert activation_bytes(arch, req(method=method, objective="kto")) == sft


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
