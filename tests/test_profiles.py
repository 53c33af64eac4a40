"""GPU and model profiles: the shipped files validate, counts match transformers, bad input is named."""

from __future__ import annotations

import json
import sys

import pytest

from tunewiz.core import profiles
from tunewiz.core.errors import UserError
from tunewiz.core.profiles import (
    EXACT_FAMILIES,
    arch_from_config,
    catalog_models,
    find_gpu,
    load_gpus,
    load_model_arch,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture()
def user_home(tmp_path, monkeypatch):
    """A TUNEWIZ_HOME of our own, so user gpus.toml files do not leak between tests."""
    monkeypatch.setenv("TUNEWIZ_HOME", str(tmp_path))
    (tmp_path / "config").mkdir()
    return tmp_path


# ---------------------------------------------------------------------------
# GPUs
# ---------------------------------------------------------------------------


def test_shipped_gpus_cover_what_people_rent(user_home):
    gpus = load_gpus()
    assert len(gpus) >= 20
    names = {g.name for g in gpus}
    for needed in (
        "T4",
        "V100 16GB",
        "V100 32GB",
        "A10G",
        "L4",
        "RTX 3090",
        "RTX 4090",
        "RTX 5090",
        "RTX A6000",
        "L40S",
        "A100 40GB",
        "A100 80GB",
        "H100 PCIe",
        "H100 SXM",
        "H200",
        "B200",
        "MI300X",
    ):
        assert needed in names
    for g in gpus:
        assert g.memory_gib > 0 and g.bf16_tflops > 0 and g.price_per_hour_usd > 0
        assert len(g.price_date) >= 7 and g.price_source
    assert not find_gpu("T4").bf16 and find_gpu("H100").bf16


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("4090", "RTX 4090"),
        ("rtx 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("h100-sxm", "H100 SXM"),
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA A100 80GB PCIe", "A100 80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100 40GB"),
        ("Tesla T4", "T4"),
        ("l40s", "L40S"),
    ],
)
def test_find_gpu_is_forgiving(typed, expected, user_home):
    assert find_gpu(typed).name == expected


def test_unknown_gpu_lists_close_names(user_home):
    with pytest.raises(UserError) as err:
        find_gpu("RTX 4099")
    assert "RTX 4090" in str(err.value) and "--gpu" in str(err.value)


def test_user_file_overrides_price_and_adds_a_gpu(user_home):
    (user_home / "config" / "gpus.toml").write_text(
        '[[gpu]]\nname = "rtx 4090"\nprice_per_hour_usd = 0.31\nprice_date = "2026-01"\n'
        'price_source = "my rack"\n\n'
        '[[gpu]]\nname = "Lab Card"\nmemory_gib = 20\nbf16_tflops = 50\n'
        'price_per_hour_usd = 0\nprice_date = "2026-01"\nprice_source = "owned"\n'
    )
    rtx = find_gpu("4090")
    assert rtx.price_per_hour_usd == 0.31 and rtx.price_source == "my rack"
    assert rtx.memory_gib == 24  # untouched fields keep the shipped values
    assert rtx.source.endswith("gpus.toml") and "config" in rtx.source
    lab = find_gpu("lab card")
    assert lab.memory_gib == 20 and lab.price_per_hour_usd == 0


@pytest.mark.parametrize(
    "text, field",
    [
        ('[[gpu]]\nname = "x"\nmemory_gib = "lots"\n', "memory_gib"),
        ('[[gpu]]\nname = "New"\nmemory_gib = 8\n', "bf16_tflops"),  # a new GPU needs every field
        ('[[gpu]]\nname = "T4"\nmemroy_gib = 8\n', "memroy_gib"),
        ('[[gpu]]\nname = "T4"\nprice_per_hour_usd = -1\n', "price_per_hour_usd"),
        ('[[gpu]]\nname = "T4"\nmemory_gib = 0\n', "memory_gib"),
        ("[[gpu]\nname = 1\n", None),  # not TOML at all
    ],
)
def test_broken_user_gpus_file_names_file_and_field(user_home, text, field):
    path = user_home / "config" / "gpus.toml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_gpus()
    msg = str(err.value)
    assert str(path) in msg
    if field:
        assert field in msg


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------


def test_catalog_has_the_popular_models():
    names = {m.name for m in catalog_models()}
    assert len(names) >= 30
    for needed in (
        "meta-llama/Llama-2-7b-hf",
        "meta-llama/Llama-3.1-8B",
        "mistralai/Mistral-7B-v0.1",
        "Qwen/Qwen2.5-7B",
        "google/gemma-2-9b",
        "microsoft/Phi-3-mini-4k-instruct",
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "gpt2",
        "distilgpt2",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "meta-llama/Llama-2-13b-hf",
        "meta-llama/Llama-2-70b-hf",
        "meta-llama/Llama-3.2-1B",
        "meta-llama/Llama-3.2-3B",
        "Qwen/Qwen2.5-0.5B",
        "Qwen/Qwen2.5-72B",
        "google/gemma-2-2b",
        "google/gemma-2-27b",
        "mistralai/Mixtral-8x7B-v0.1",
    ):
        assert needed in names
    assert {m.family for m in catalog_models()} == set(EXACT_FAMILIES)


def _meta_param_count(model_type: str, cfg: dict) -> int:
    import torch
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    config = CONFIG_MAPPING[model_type](**cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def _catalog_raw() -> dict:
    return tomllib.loads((profiles.paths.profiles_dir() / "models.toml").read_text())


@pytest.mark.slow
def test_every_catalog_model_counts_exactly_like_transformers():
    """The real configs, built on the meta device (no memory), one per distinct shape."""
    raw = _catalog_raw()
    seen = set()
    for arch in catalog_models():
        cfg = dict(raw[arch.name])
        model_type = cfg.pop("model_type")
        key = (model_type, tuple(sorted(cfg.items())))
        if key in seen:
            continue
        seen.add(key)
        assert arch.num_params() == _meta_param_count(model_type, cfg), arch.name


def test_well_known_totals():
    """Published parameter counts (model cards / PEFT printouts)."""
    known = {
        "meta-llama/Llama-3.1-8B": 8_030_261_248,
        "mistralai/Mistral-7B-v0.1": 7_241_732_096,
        "gpt2": 124_439_808,
        "meta-llama/Llama-2-7b-hf": 6_738_415_616,
        "mistralai/Mixtral-8x7B-v0.1": 46_702_792_704,
    }
    for name, total in known.items():
        assert load_model_arch(name).num_params() == total, name


TRIMMED = {
    "llama": dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    ),
    "mistral": dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
    ),
    "qwen2": dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    ),
    "gemma": dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=32,
    ),
    "gemma2": dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=24,
    ),
    "phi3": dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        pad_token_id=0,
    ),
    "gpt2": dict(vocab_size=300, n_embd=64, n_layer=2, n_head=4, n_positions=128),
    "mixtral": dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
    ),
    "llama-bias": dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attention_bias=True,
        mlp_bias=True,
    ),
}


@pytest.mark.parametrize("family", sorted(TRIMMED))
def test_trimmed_configs_count_exactly(family):
    """Small configs exercise every family's code path (biases, GQA, head_dim, tying, MoE)."""
    model_type = family.split("-")[0]
    cfg = TRIMMED[family]
    arch = arch_from_config({"model_type": model_type, **cfg}, name=family, where="test")
    assert arch.num_params() == _meta_param_count(model_type, cfg)


def test_config_json_from_transformers_loads(tmp_path):
    """A config.json written by transformers itself (all its defaults) reads the same."""
    from transformers import Qwen2Config

    cfg = Qwen2Config(**{k: v for k, v in TRIMMED["qwen2"].items()})
    cfg.save_pretrained(tmp_path)
    arch = load_model_arch(str(tmp_path))  # the folder
    assert arch.family == "qwen2" and arch.qkv_bias
    assert load_model_arch(str(tmp_path / "config.json")).num_params() == arch.num_params()
    assert arch.num_params() == _meta_param_count("qwen2", TRIMMED["qwen2"])


def test_names_resolve_case_insensitively_and_bare():
    assert load_model_arch("META-LLAMA/llama-3.1-8b").name == "meta-llama/Llama-3.1-8B"
    assert load_model_arch("Llama-3.1-8B").name == "meta-llama/Llama-3.1-8B"
    assert load_model_arch("default").name == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_bundled_model_folder_matches_catalog(default_model_dir):
    local = load_model_arch(str(default_model_dir))
    assert local.num_params() == load_model_arch("default").num_params() == 134_515_008


def test_unknown_model_lists_closest_names():
    with pytest.raises(UserError) as err:
        load_model_arch("Lama-3.1-8B")
    assert "meta-llama/Llama-3.1-8B" in str(err.value)


def test_hub_id_offline_says_so_and_suggests_local_config(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        load_model_arch("someone/not-a-catalog-model")
    msg = str(err.value)
    assert "offline" in msg and "config.json" in msg


def test_malformed_config_json_names_file_and_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "model_type": "llama",\n  "hidden_size": 64,,\n}')
    with pytest.raises(UserError) as err:
        load_model_arch(str(path))
    assert f"{path}:3" in str(err.value)


@pytest.mark.parametrize(
    "cfg, field",
    [
        (
            {
                "model_type": "llama",
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 96,
            },
            "vocab_size",
        ),
        (
            {
                "model_type": "llama",
                "vocab_size": 10,
                "hidden_size": -64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 96,
            },
            "hidden_size",
        ),
        ({"vocab_size": 10}, "model_type"),
        (
            {
                "model_type": "llama",
                "vocab_size": 10,
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 3,
                "intermediate_size": 96,
            },
            "num_key_value_heads",
        ),
    ],
)
def test_missing_or_bad_field_names_file_and_field(tmp_path, cfg, field):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(UserError) as err:
        load_model_arch(str(path))
    assert str(path) in str(err.value) and field in str(err.value)


def test_folder_without_config_json(tmp_path):
    with pytest.raises(UserError) as err:
        load_model_arch(str(tmp_path))
    assert "config.json" in str(err.value) and str(tmp_path) in str(err.value)
