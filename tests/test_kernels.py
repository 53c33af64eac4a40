"""Fused kernels: the choice of Liger and attention, its mapping into the trainer, and the
estimator's Liger terms against numbers worked by hand."""

from __future__ import annotations

import pytest

from tunewiz.core import kernels
from tunewiz.core.config import RunConfig
from tunewiz.core.errors import UserError
from tunewiz.core.estimate import EstimateRequest, estimate, max_batch
from tunewiz.core.estimate import liger as liger_terms
from tunewiz.core.estimate.memory import layer_activation_bytes_per_token, logits_bytes
from tunewiz.core.kernels import DeviceFacts
from tunewiz.core.profiles import load_model_arch

CPU = DeviceFacts(cuda=False, liger_installed=True, flash_attn_installed=True)
A100 = DeviceFacts(cuda=True, capability=(8, 0), liger_installed=True, flash_attn_installed=True)
T4 = DeviceFacts(cuda=True, capability=(7, 5), liger_installed=True, flash_attn_installed=True)
BARE_A100 = DeviceFacts(cuda=True, capability=(8, 0))
LLAMA3 = load_model_arch("meta-llama/Llama-3.1-8B")


# -- the choice -------------------------------------------------------------------------


def test_liger_auto_is_on_only_on_cuda_for_a_supported_model_with_the_package():
    assert kernels.use_liger("auto", model_type="llama", facts=A100) is True
    assert kernels.use_liger("auto", model_type="llama", facts=CPU) is False
    assert kernels.use_liger("auto", model_type="llama", facts=BARE_A100) is False
    assert kernels.use_liger("auto", model_type="gpt2", facts=A100) is False
    assert kernels.use_liger("false", model_type="llama", facts=A100) is False
    assert kernels.use_liger("true", model_type="qwen2", facts=A100) is True


@pytest.mark.parametrize(
    ("facts", "model_type", "message"),
    [
        (CPU, "llama", "need a CUDA GPU"),
        (BARE_A100, "llama", "liger-kernel package"),
        (A100, "gpt2", "no kernels for gpt2"),
    ],
)
def test_liger_true_where_it_cannot_run_is_refused_with_the_reason(facts, model_type, message):
    with pytest.raises(UserError, match=message) as err:
        kernels.use_liger("true", model_type=model_type, facts=facts)
    assert err.value.where == "model.liger_kernel"


def test_attention_auto_takes_flash_on_ampere_with_the_package_else_sdpa():
    assert kernels.attention("auto", facts=A100) == "flash_attention_2"
    assert kernels.attention("auto", facts=T4) == "sdpa"
    assert kernels.attention("auto", facts=CPU) == "sdpa"
    assert kernels.attention("auto", facts=BARE_A100) == "sdpa"
    assert kernels.attention("eager", facts=A100) == "eager"


@pytest.mark.parametrize(
    ("facts", "message"),
    [(T4, "compute capability 8.0"), (CPU, "needs a CUDA GPU"), (BARE_A100, "flash-attn package")],
)
def test_flash_attention_where_it_cannot_run_is_refused(facts, message):
    with pytest.raises(UserError, match=message) as err:
        kernels.attention("flash_attention_2", facts=facts)
    assert err.value.where == "model.attn_implementation"


def test_liger_option_reads_toml_booleans_and_rejects_other_values():
    cfg = RunConfig.from_dict({"model": {"liger_kernel": True}})
    assert cfg.model.liger_kernel == "true"
    cfg = RunConfig.from_dict({"model": {"liger_kernel": "false"}})
    assert cfg.model.liger_kernel == "false"
    with pytest.raises(UserError, match="not one of auto, true, false"):
        RunConfig.from_dict({"model": {"liger_kernel": "maybe"}})
    assert 'liger_kernel = "auto"' in RunConfig().to_toml()


# -- mapping into the trainer (on this CPU) ----------------------------------------------


def test_training_arguments_carry_use_liger_kernel(tmp_path):
    from tunewiz.core.train.args import build_training_args, training_kwargs

    cfg = RunConfig()
    kw = training_kwargs(cfg, tmp_path, precision="bf16", has_eval=False, cuda=True, liger=True)
    assert kw["use_liger_kernel"] is True
    args = build_training_args(cfg, tmp_path, precision="fp32", has_eval=False)
    assert args.use_liger_kernel is False  # auto on a CPU
    cfg.model.liger_kernel = "true"
    with pytest.raises(UserError, match="CUDA GPU") as err:
        build_training_args(cfg, tmp_path, precision="fp32", has_eval=False)
    assert err.value.where == "model.liger_kernel"


def test_launcher_refuses_liger_true_on_this_cpu_before_starting():
    from tunewiz.core.train.preflight import check_optional_packages

    cfg = RunConfig()
    cfg.model.liger_kernel = "true"
    with pytest.raises(UserError, match="CUDA GPU"):
        check_optional_packages(cfg)


class _Loaded(Exception):
    pass


@pytest.mark.parametrize(
    ("facts", "setting", "expected"),
    [(A100, "auto", "flash_attention_2"), (T4, "auto", "sdpa"), (CPU, "eager", "eager")],
)
def test_model_loading_asks_for_the_chosen_attention(monkeypatch, facts, setting, expected):
    import transformers

    from tunewiz.core.train.model import load_for_training

    seen: dict = {}

    def fake_from_pretrained(path, **kwargs):
        seen.update(kwargs)
        raise _Loaded

    monkeypatch.setattr(kernels, "probe", lambda: facts)
    installed = {"flash_attn": facts.flash_attn_installed, "liger_kernel": facts.liger_installed}
    monkeypatch.setattr(kernels, "package_installed", installed.__getitem__)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    cfg = RunConfig()
    cfg.model.attn_implementation = setting
    with pytest.raises(_Loaded):
        load_for_training(cfg, "unused", precision="fp32")
    assert seen["attn_implementation"] == expected


# -- the estimator's Liger terms, worked by hand -----------------------------------------


def test_the_default_choice_needs_no_torch_without_the_kernel_packages(monkeypatch):
    """The launcher's checks must answer in ~2 s: without liger-kernel and flash-attn, `auto`
    means sdpa and no Liger on any device, so deciding imports nothing heavy."""
    import subprocess
    import sys

    code = (
        "import sys; from tunewiz.core import kernels; from tunewiz.core.config import ModelConfig; "
        "print(kernels.for_run(ModelConfig()), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["('sdpa',", "False)", "False"]
    # with a package present the device decides, so the facts are gathered (torch imported)
    monkeypatch.setattr(kernels, "package_installed", lambda name: name == "flash_attn")
    probed = []
    monkeypatch.setattr(kernels, "probe", lambda: probed.append(1) or DeviceFacts(cuda=False))
    assert kernels.for_run(RunConfig().model) == ("sdpa", False) and probed == [1]


def test_fused_cross_entropy_chunk_follows_liger():
    # Llama-3: V=128256, H=4096 -> inc_factor ceil(31.3)=32; BT=4096 -> 4096/32 = 128 rows.
    assert liger_terms.flce_chunk_tokens(4096, 128256, 4096) == 128
    # 1000 tokens / 32 = 31.25 -> 32 -> next power of two 32
    assert liger_terms.flce_chunk_tokens(1000, 128256, 4096) == 32
    # tiny batches: never more rows than tokens
    assert liger_terms.flce_chunk_tokens(3, 1000, 4096) == 3


def test_logits_term_with_fused_cross_entropy_is_one_chunk_not_the_vocabulary():
    req = EstimateRequest(method="lora", batch_size=2, seq_len=2048, precision="bf16-mixed")
    assert logits_bytes(LLAMA3, req) == 12 * 128256 * 4096  # 5.87 GiB of fp32 buffers
    lig = EstimateRequest(
        method="lora", batch_size=2, seq_len=2048, precision="bf16-mixed", liger=True
    )
    # 128 x 128256 bf16 logits + 4096 x 4096 bf16 grad_input + 4096 fp32 losses
    assert logits_bytes(LLAMA3, lig) == 128 * 128256 * 2 + 4096 * 4096 * 2 + 4 * 4096
    full = EstimateRequest(method="full", batch_size=2, seq_len=2048, liger=True)
    # full fine-tuning also computes the fp32 lm_head gradient inside the forward pass
    assert logits_bytes(LLAMA3, full) == (
        128 * 128256 * 2 + 4096 * 4096 * 4 + 4 * 4096 + 4 * 128256 * 4096
    )


def test_liger_norm_and_swiglu_keep_fewer_activations_per_layer():
    req = EstimateRequest(method="lora", precision="bf16-mixed", lora_dropout=0.0)
    lig = EstimateRequest(method="lora", precision="bf16-mixed", lora_dropout=0.0, liger=True)
    h, i = 4096, 14336
    # two RMSNorms: 4h (fp32 copy) -> 2h + 4 (bf16 input + fp32 rstd) each;
    # SwiGLU: gate, silu(gate), up -> gate, up: one bf16 tensor of width i fewer
    saved = 2 * (4 * h - (2 * h + 4)) + 2 * i
    assert layer_activation_bytes_per_token(LLAMA3, req) - layer_activation_bytes_per_token(
        LLAMA3, lig
    ) == pytest.approx(saved)


def test_the_same_card_fits_a_larger_batch_with_liger():
    req = EstimateRequest(method="lora", seq_len=2048, grad_checkpointing=True)
    plain = max_batch(LLAMA3, req, 24)
    fused = max_batch(LLAMA3, EstimateRequest(**{**req.__dict__, "liger": True}), 24)
    assert plain >= 1 and fused >= 1.5 * plain


def test_estimator_refuses_liger_on_cpu_and_for_unsupported_models():
    with pytest.raises(UserError, match="CUDA GPU"):
        estimate(LLAMA3, EstimateRequest(device="cpu", precision="fp32", liger=True))
    gpt2 = load_model_arch("gpt2")
    with pytest.raises(UserError, match="gpt2"):
        estimate(gpt2, EstimateRequest(liger=True))


def test_run_estimate_uses_liger_when_the_run_will(monkeypatch):
    from tunewiz.core.estimate.for_run import request_from_run_config

    cfg = RunConfig()
    cfg.model.liger_kernel = "true"
    assert request_from_run_config(cfg, device="cuda").liger is True
    assert request_from_run_config(cfg, device="cpu").liger is False
    cfg.model.liger_kernel = "auto"
    monkeypatch.setattr(kernels, "package_installed", lambda name: False)
    assert request_from_run_config(cfg, device="cuda").liger is False
    monkeypatch.setattr(kernels, "package_installed", lambda name: True)
    assert request_from_run_config(cfg, device="cuda").liger is True
