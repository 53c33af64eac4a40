"""The memory/time/cost estimator: hand-worked Transformer Math 101 tables, autograd's real saved
tensors, properties that must hold for any model, and recommendations."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunewiz.core.config import RunConfig
from tunewiz.core.errors import UserError
from tunewiz.core.estimate import (
    GIB,
    HEADROOM,
    EstimateRequest,
    estimate,
    estimate_for_run,
    max_batch,
    oom_advice,
    recommend,
    rent_table,
    request_from_run_config,
    split_batch,
    train_flops,
)
from tunewiz.core.estimate.memory import (
    NF4_DQ_BYTES,
    activation_bytes,
    attention_score_bytes,
    base_bytes,
    layer_activation_bytes_per_token,
    lora_params,
)
from tunewiz.core.profiles import arch_from_config, catalog_models, load_model_arch

LLAMA2_7B = load_model_arch("meta-llama/Llama-2-7b-hf")
N7 = 6_738_415_616


def req(**kw) -> EstimateRequest:
    return EstimateRequest(**kw)


# ---------------------------------------------------------------------------
# Transformer Math 101, worked by hand for Llama-2-7B (N = 6,738,415,616)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "precision, optimizer, grads_per_param, optim_per_param",
    [
        ("fp32", "adamw", 4, 8),  # fp32 weights, 2 fp32 Adam states
        ("bf16-mixed", "adamw", 4, 12),  # + fp32 master copy (4) under mixed precision
        ("bf16-true", "adamw", 2, 4),  # everything 16-bit: states 2 x 2 bytes
        ("fp32", "sgd", 4, 4),  # momentum
        ("bf16-mixed", "adamw-8bit", 4, 4 + 2 * (1 + 4 / 256)),  # master + two 8-bit states
    ],
)
def test_full_finetune_bytes_per_parameter(precision, optimizer, grads_per_param, optim_per_param):
    est = estimate(
        LLAMA2_7B, req(method="full", precision=precision, optimizer=optimizer, batch_size=1)
    )
    assert est.params_trainable == est.params_total == N7
    assert est.breakdown["gradients"] == pytest.approx(grads_per_param * N7, rel=1e-9)
    temp = (
        0 if optimizer != "adamw" else (2 if precision == "bf16-true" else 4) * N7
    )  # foreach sqrt
    assert est.breakdown["optimizer"] == pytest.approx(optim_per_param * N7 + temp, rel=1e-9)


def test_weights_by_dtype():
    fp32 = estimate(LLAMA2_7B, req(method="full", precision="fp32"))
    assert fp32.breakdown["weights"] == 4 * N7
    true16 = estimate(LLAMA2_7B, req(method="full", precision="bf16-true"))
    assert true16.breakdown["weights"] == 2 * N7
    inf = estimate(
        LLAMA2_7B, req(method="inference", precision="bf16-true", batch_size=1, seq_len=1)
    )
    assert inf.breakdown["weights"] == 2 * N7
    # int8: 1 byte per quantized weight (+ a row scale); embeddings and head stay 16-bit
    int8 = estimate(LLAMA2_7B, req(method="inference", quant="int8", batch_size=1, seq_len=1))
    emb_head = 2 * 32000 * 4096
    linear = N7 - emb_head - 65 * 4096  # minus norms
    assert int8.breakdown["weights"] == pytest.approx(
        linear * (1 + 4 / 4096) + 2 * (N7 - linear), rel=1e-6
    )


def test_nf4_bits_with_and_without_double_quant():
    assert NF4_DQ_BYTES * 8 == pytest.approx(4.127, abs=0.001)
    q = estimate(
        LLAMA2_7B, req(method="qlora", double_quant=False, lora_r=8, lora_targets="q_proj")
    )
    dq = estimate(
        LLAMA2_7B, req(method="qlora", double_quant=True, lora_r=8, lora_targets="q_proj")
    )
    linear = N7 - 2 * 32000 * 4096 - 65 * 4096
    assert q.breakdown["weights"] - dq.breakdown["weights"] == pytest.approx(
        linear * (4.5 - 4.127) / 8, rel=1e-3
    )


def test_lora_parameter_counts_match_peft_printouts():
    # PEFT's README: Llama-2-7B, r=8 on q_proj,v_proj -> "trainable params: 4,194,304"
    assert lora_params(LLAMA2_7B, req(lora_r=8, lora_targets="q_proj,v_proj")) == 4_194_304
    # Llama-3-8B, r=16, all-linear -> 41,943,040 (k/v use the 1024-wide KV projection under GQA)
    llama3 = load_model_arch("meta-llama/Llama-3.1-8B")
    assert lora_params(llama3, req(lora_r=16)) == 41_943_040
    # adapters: fp32 weights, fp32 grads, two fp32 Adam states
    est = estimate(llama3, req(method="lora", lora_r=16, precision="bf16-mixed"))
    assert est.breakdown["gradients"] == 4 * 41_943_040
    assert est.breakdown["optimizer"] == (8 + 4) * 41_943_040  # states + foreach temporary


def test_lora_count_matches_peft_on_a_tiny_model():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    arch = arch_from_config({"model_type": "llama", **cfg}, name="t", where="t")
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**cfg))
    for targets in ("all-linear", "q_proj,v_proj", "down_proj"):
        peft_model = get_peft_model(
            model if targets == "all-linear" else LlamaForCausalLM(LlamaConfig(**cfg)),
            LoraConfig(
                r=4, target_modules=targets if targets == "all-linear" else targets.split(",")
            ),
        )
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        assert lora_params(arch, req(lora_r=4, lora_targets=targets)) == trainable, targets


def test_full_recomputation_keeps_2sbhL():
    """Korthikanti: with full recomputation only each layer's 16-bit input, 2*s*b*h*L bytes, stays
    (plus the one layer being recomputed and the head)."""
    r = req(
        method="full", precision="bf16-true", batch_size=3, seq_len=256, grad_checkpointing=True
    )
    s, b, h, L = 256, 3, 4096, 32
    one_layer = s * b * layer_activation_bytes_per_token(LLAMA2_7B, r)
    head = s * b * (4 * h + 2 * h)
    assert base_bytes(r) == 2
    assert activation_bytes(LLAMA2_7B, r) - one_layer - head == 2 * s * b * h * L


def test_eager_attention_adds_the_as_over_h_term():
    """Eager keeps the fp32 softmax and its 16-bit copy: (4 + 2) * heads * s per token per layer;
    FlashAttention/SDPA keep no s x s matrix."""
    r = req(method="full", precision="bf16-mixed", attention="eager", seq_len=1024)
    assert attention_score_bytes(LLAMA2_7B, r) == 6 * 32 * 1024
    assert attention_score_bytes(LLAMA2_7B, req(attention="sdpa", seq_len=1024)) == 0
    assert attention_score_bytes(LLAMA2_7B, req(attention="flash", seq_len=1024)) == 0


def test_swiglu_keeps_more_than_gelu():
    """Per layer and token, a gated MLP keeps 3-4 intermediate tensors, GPT-2's GeLU MLP 2."""
    gelu = arch_from_config(
        {"model_type": "gpt2", "vocab_size": 100, "n_embd": 256, "n_layer": 2, "n_head": 4},
        name="g",
        where="t",
    )
    swiglu = arch_from_config(
        {
            "model_type": "llama",
            "vocab_size": 100,
            "hidden_size": 256,
            "intermediate_size": 1024,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        name="s",
        where="t",
    )
    r = req(method="full", precision="bf16-true")
    assert layer_activation_bytes_per_token(swiglu, r) > layer_activation_bytes_per_token(gelu, r)


def test_zero_stages_divide_like_transformer_math():
    llama3 = load_model_arch("meta-llama/Llama-3.1-8B")
    base = dict(method="full", precision="bf16-mixed", gpus=8, batch_size=1)
    z0, z1, z2, z3 = (estimate(llama3, req(zero=z, **base)).breakdown for z in range(4))
    assert z1["optimizer"] == pytest.approx(z0["optimizer"] / 8)
    assert z2["gradients"] == pytest.approx(z0["gradients"] / 2 / 8)  # z0 counts DDP's bucket copy
    assert z1["gradients"] == z0["gradients"] / 2  # ZeRO-1 keeps whole gradients, no DDP buckets
    assert z3["weights"] < z2["weights"] / 4


# ---------------------------------------------------------------------------
# activations: what autograd really saves, measured on a tiny model
# ---------------------------------------------------------------------------


def _saved_bytes_per_token_per_layer(method: str, dropout: float) -> tuple[float, object]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    def measure(layers: int) -> int:
        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=500,
            hidden_size=96,
            intermediate_size=256,
            num_hidden_layers=layers,
            num_attention_heads=6,
            num_key_value_heads=2,
            attn_implementation="sdpa",
        )
        model = LlamaForCausalLM(cfg)
        if method == "lora":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(
                model, LoraConfig(r=4, lora_dropout=dropout, target_modules="all-linear")
            )
        model.train()
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: dict[int, int] = {}

        def pack(t):
            st_ = t.untyped_storage()
            if st_.data_ptr() not in params:
                seen[st_.data_ptr()] = st_.nbytes()
            return t

        ids = torch.randint(0, 500, (2, 40))
        mask = torch.ones_like(ids)
        mask[0, :3] = 0  # padding: SDPA gets a mask and repeats K/V
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, attention_mask=mask, labels=ids)
        return sum(seen.values())

    per_layer = (measure(4) - measure(2)) / 2 / 80
    arch = arch_from_config(
        {
            "model_type": "llama",
            "vocab_size": 500,
            "hidden_size": 96,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 6,
            "num_key_value_heads": 2,
        },
        name="t",
        where="t",
    )
    return per_layer, arch


@pytest.mark.parametrize("method, dropout", [("full", 0.0), ("lora", 0.05), ("lora", 0.0)])
def test_layer_activations_match_autograds_saved_tensors(method, dropout):
    measured, arch = _saved_bytes_per_token_per_layer(method, dropout)
    r = req(method=method, precision="fp32", device="cpu", lora_r=4, lora_dropout=dropout)
    estimated = layer_activation_bytes_per_token(arch, r)
    assert estimated == pytest.approx(measured, rel=0.08)


# ---------------------------------------------------------------------------
# properties (hypothesis)
# ---------------------------------------------------------------------------

MODELS = [m for m in catalog_models() if m.num_params() < 20e9]
common = dict(
    arch=st.sampled_from(MODELS),
    precision=st.sampled_from(["fp32", "bf16-mixed", "bf16-true", "fp16-mixed"]),
    attention=st.sampled_from(["flash", "sdpa", "eager"]),
    gc=st.booleans(),
    optimizer=st.sampled_from(["adamw", "adamw-8bit", "sgd", "adafactor"]),
    device=st.sampled_from(["cuda", "cpu"]),
)
fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(
    **common,
    method=st.sampled_from(["full", "lora", "qlora", "inference"]),
    b=st.integers(1, 64),
    s=st.integers(16, 2048),
)
def test_memory_grows_with_batch_and_sequence(
    arch, precision, attention, gc, optimizer, device, method, b, s
):
    s = min(s, arch.max_position_embeddings - 16)  # gpt2's context is 1024

    def total(**kw):
        base = dict(
            method=method,
            precision=precision,
            attention=attention,
            grad_checkpointing=gc,
            optimizer=optimizer,
            device=device,
            batch_size=b,
            seq_len=s,
        )
        return estimate(arch, req(**{**base, **kw}))

    assert total(batch_size=b + 1).total >= total().total
    assert total(seq_len=s + 16).total >= total().total
    # the activations (or KV cache) really grow; the peak may be the optimizer step instead
    acts = total(batch_size=2 * b).breakdown["activations"]
    assert acts > total().breakdown["activations"]


@fast
@given(**common, method=st.sampled_from(["lora", "qlora"]), r=st.integers(1, 256))
def test_memory_grows_with_rank(arch, precision, attention, gc, optimizer, device, method, r):
    def total(rank):
        return estimate(
            arch,
            req(
                method=method,
                precision=precision,
                attention=attention,
                grad_checkpointing=gc,
                optimizer=optimizer,
                device=device,
                lora_r=rank,
            ),
        ).total

    assert total(r + 1) > total(r)


@fast
@given(
    **{
        **common,
        "arch": st.sampled_from([m for m in MODELS if m.num_params() > 1e9]),
        "precision": st.sampled_from(["bf16-mixed", "fp16-mixed", "fp32"]),
        "optimizer": st.sampled_from(["adamw", "adamw-8bit"]),
    },
    b=st.integers(1, 4),
    s=st.integers(16, 1024),
)
def test_qlora_le_lora_le_full(arch, precision, attention, gc, optimizer, device, b, s):
    """Mixed precision (the default on GPUs) with AdamW or 8-bit AdamW, fp32 with AdamW; models
    over 1B parameters, batches up to 4 x 1024 tokens. Outside that the order can really flip:
    LoRA's dropout gives every adapter its own copy of its input, which for small models, many
    tokens, or full fine-tuning with small states (bf16-true, 8-bit states over fp32 weights,
    SGD, Adafactor) outweighs full fine-tuning's gradients and optimizer states."""
    if precision == "fp32":
        optimizer = "adamw"

    def total(method):
        return estimate(
            arch,
            req(
                method=method,
                precision=precision,
                attention=attention,
                grad_checkpointing=gc,
                optimizer=optimizer,
                device=device,
                batch_size=b,
                seq_len=s,
            ),
        ).total

    assert total("qlora") <= total("lora") <= total("full")


@fast
@given(
    arch=common["arch"],
    method=st.sampled_from(["full", "lora", "qlora"]),
    gpus=st.sampled_from([2, 4, 8]),
    b=st.integers(1, 8),
    gc=st.booleans(),
)
def test_zero3_le_zero2_le_zero1_le_none_per_gpu(arch, method, gpus, b, gc):
    def total(zero):
        return estimate(
            arch, req(method=method, gpus=gpus, zero=zero, batch_size=b, grad_checkpointing=gc)
        ).total

    assert total(3) <= total(2) <= total(1) <= total(0)


# ---------------------------------------------------------------------------
# bad options
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, flag, words",
    [
        (dict(method="lora", lora_r=0), "--lora-r", "at least 1"),
        (dict(batch_size=-2), "--batch-size", "at least 1"),
        (dict(seq_len=10_000), "--seq-len", "4096"),  # Llama-2's context
        (dict(zero=3, gpus=1), "--zero", "--gpus 2"),
        (dict(method="sideways"), "--method", "full"),
        (dict(lora_targets="q_proj,nope"), "--lora-targets", "nope"),
    ],
)
def test_impossible_options_name_the_option(kw, flag, words):
    with pytest.raises(UserError) as err:
        estimate(LLAMA2_7B, req(**kw))
    assert flag in str(err.value) and words in str(err.value)


# ---------------------------------------------------------------------------
# recommendation, time, cost
# ---------------------------------------------------------------------------


def test_recommend_prefers_full_then_lora_then_qlora():
    small = load_model_arch("default")
    assert recommend(small, req(), 80).method == "full"
    llama3 = load_model_arch("meta-llama/Llama-3.1-8B")
    rec = recommend(llama3, req(seq_len=512), 24)
    assert (
        rec.method in ("lora", "qlora")
        and rec.fits
        and "full fine-tuning does not fit" in rec.reason
    )
    forced = recommend(llama3, req(seq_len=512), 24, force_method="qlora")
    assert forced.method == "qlora"
    assert forced.estimate.total <= 24 * GIB


def test_split_batch_keeps_the_effective_batch():
    assert split_batch(8, 6) == (4, 2)  # not 6 x 2 = 12
    assert split_batch(8, 8) == (8, 1) and split_batch(8, 20) == (8, 1)
    assert split_batch(12, 5) == (4, 3) and split_batch(7, 3) == (1, 7)


def test_recommendation_keeps_the_batch_asked_for_and_leaves_headroom():
    llama3 = load_model_arch("meta-llama/Llama-3.1-8B")
    r = req(method="qlora", seq_len=512, grad_checkpointing=True, batch_size=64)
    fits = max_batch(llama3, r, 24 * (1 - HEADROOM))
    assert 1 < fits < 64  # the case under test: the batch asked for does not fit
    rec = recommend(llama3, r, 24, force_method="qlora")
    b, accum = split_batch(64, fits)
    assert rec.batch_size == b and 64 % b == 0 and f"by {accum}" in rec.reason
    assert rec.estimate.total <= 24 * GIB * (1 - HEADROOM)
    assert "keeping 5% of the card free" in rec.reason
    small = recommend(load_model_arch("default"), req(batch_size=8), 80)
    assert small.batch_size == 8 and "up to" in small.reason  # not the largest that fits


def test_rent_table_under_a_cent_is_cheapest_per_hour_then_fastest():
    rows = rent_table(load_model_arch("default"), req(), tokens=1000)
    assert all(o.hours < 1 / 60 and o.cost_usd < 0.005 for o in rows)
    # every job costs under a cent: the cheapest card to rent first, then the fastest
    assert rows == sorted(rows, key=lambda o: (o.price_per_hour_usd, o.hours))


def test_max_batch_is_the_largest_that_fits():
    llama3 = load_model_arch("meta-llama/Llama-3.1-8B")
    r = req(method="qlora", seq_len=1024, grad_checkpointing=True)
    b = max_batch(llama3, r, 24)
    assert b >= 1
    assert estimate(llama3, req(**{**r.__dict__, "batch_size": b})).total <= 24 * GIB
    assert estimate(llama3, req(**{**r.__dict__, "batch_size": b + 1})).total > 24 * GIB


def test_nothing_fits_says_what_would():
    big = load_model_arch("meta-llama/Llama-3.1-70B")
    rec = recommend(big, req(seq_len=2048), 24)
    assert not rec.fits and rec.method is None
    assert rec.suggestions and any("GPU" in s for s in rec.suggestions)
    rec48 = recommend(big, req(seq_len=4096), 48, force_method="qlora")
    assert any("checkpointing" in s or "--seq-len" in s for s in rec48.suggestions)


def test_flops_follow_6N_and_4N():
    n = LLAMA2_7B.num_params()
    assert train_flops(LLAMA2_7B, req(method="full"), 1000) == 6 * n * 1000
    assert train_flops(LLAMA2_7B, req(method="lora"), 1000) == 4 * n * 1000
    assert train_flops(LLAMA2_7B, req(method="full", grad_checkpointing=True), 1000) == 8 * n * 1000


def test_rent_table_ranks_by_cost_and_every_row_fits():
    llama3 = load_model_arch("meta-llama/Llama-3.1-8B")
    rows = rent_table(llama3, req(method="qlora", seq_len=1024), tokens=20_000_000)
    assert rows == sorted(rows, key=lambda o: (round(o.cost_usd, 2), o.price_per_hour_usd, o.hours))
    assert {o.n_gpus for o in rows} >= {1, 8}
    for o in rows[:10]:
        r = req(
            method="qlora",
            seq_len=1024,
            gpus=o.n_gpus,
            zero=o.zero,
            grad_checkpointing=o.grad_checkpointing,
            batch_size=o.batch_size,
        )
        assert estimate(llama3, r).total <= o.memory_gib * GIB
        assert o.cost_usd == pytest.approx(o.hours * o.price_per_hour_usd)
    # 13B full fine-tuning (~20 bytes/parameter) fits on no single GPU: only nodes are offered
    big = rent_table(load_model_arch("meta-llama/Llama-2-13b-hf"), req(method="full"), tokens=10**8)
    assert big and all(o.n_gpus >= 2 for o in big)
    assert any(o.zero == 3 for o in big)


# ---------------------------------------------------------------------------
# from a run config
# ---------------------------------------------------------------------------


def test_request_from_run_config_maps_names():
    cfg = RunConfig()
    cfg.model.method = "qlora"
    cfg.model.attn_implementation = "flash_attention_2"
    cfg.model.gradient_checkpointing = True
    cfg.model.lora_target_modules = "q_proj,v_proj"
    cfg.training.optim = "paged_adamw_8bit"
    cfg.training.per_device_train_batch_size = 3
    cfg.data.max_seq_len = 1024
    cfg.distributed.distributed = "fsdp"
    cfg.distributed.num_processes = 4
    r = request_from_run_config(cfg, device="cuda")
    assert (r.method, r.precision, r.optimizer, r.batch_size, r.seq_len) == (
        "qlora",
        "bf16-mixed",
        "paged-adamw-8bit",
        3,
        1024,
    )
    assert (r.attention, r.grad_checkpointing, r.lora_targets, r.gpus, r.zero) == (
        "flash",
        True,
        "q_proj,v_proj",
        4,
        3,
    )
    assert request_from_run_config(cfg, device="Tesla T4").precision == "fp16-mixed"
    cpu = request_from_run_config(RunConfig(), device="cpu")
    assert cpu.precision == "fp32" and cpu.device == "cpu" and cpu.gpus == 1
    cfg.distributed.distributed = "zero2"
    assert request_from_run_config(cfg, device="cuda").zero == 2
    cfg.distributed.distributed = "ddp"
    assert request_from_run_config(cfg, device="cuda").zero == 0


def test_estimate_for_run_is_what_estimate_json_holds():
    out = estimate_for_run(RunConfig(), device="NVIDIA GeForce RTX 4090", gpu_mem_gib=23.6)
    assert out["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert out["fits"] is True and out["recommendation"]["fits"]
    assert out["total_bytes"] == pytest.approx(out["memory"]["total_gib"] * GIB, rel=1e-3)
    assert set(out["memory"]["breakdown_gib"]) == {
        "weights",
        "gradients",
        "optimizer",
        "activations",
        "logits",
        "overhead",
    }
    assert estimate_for_run(RunConfig(), device="cuda", gpu_mem_gib=None)["fits"] is None


def test_oom_advice_names_config_fields():
    cfg = RunConfig()
    cfg.model.model = "meta-llama/Llama-3.1-8B"
    cfg.model.method = "lora"
    cfg.training.per_device_train_batch_size = 16
    cfg.data.max_seq_len = 1024
    text = oom_advice(cfg, device="cuda", gpu_mem_gib=40)
    assert "per_device_train_batch_size = " in text and "gradient_accumulation_steps" in text
    cfg.model.method = "full"
    text = oom_advice(cfg, device="cuda", gpu_mem_gib=24)
    assert 'model.method = "lora"' in text or 'model.method = "qlora"' in text
    cfg.model.model = "meta-llama/Llama-3.1-70B"
    assert "smaller model" in oom_advice(cfg, device="cuda", gpu_mem_gib=8)
