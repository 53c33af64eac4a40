"""tunewiz.core.estimate.report: a ReportRequest in, the numbers `tunewiz estimate` shows out."""

from __future__ import annotations

import pytest

from tunewiz.core.errors import UserError
from tunewiz.core.estimate import (
    EstimateRequest,
    estimate,
    recommend,
    rent_table,
    train_hours,
)
from tunewiz.core.estimate import report as report_mod
from tunewiz.core.estimate.memory import with_
from tunewiz.core.estimate.report import (
    DEFAULT_TOKENS,
    ReportRequest,
    build_report,
    default_precision,
)
from tunewiz.core.profiles import find_gpu, load_model_arch

LLAMA = "meta-llama/Llama-3.1-8B"
OPTIONS = EstimateRequest(batch_size=1, seq_len=512)


def no_gpu() -> None:
    return None


def not_asked() -> None:
    raise AssertionError("the detector is asked only when no GPU was named")


def test_catalog_gpu_report_is_the_core_functions_put_together():
    arch = load_model_arch(LLAMA)
    gpu = find_gpu("RTX 4090")
    r = build_report(
        ReportRequest(LLAMA, OPTIONS, gpu="RTX 4090", tokens=5_000_000), detect=not_asked
    )
    asked = with_(OPTIONS, method="lora", precision="bf16-mixed")  # a 4090 has bf16
    rec = recommend(arch, asked, gpu.memory_gib)
    assert r.recommendation == rec and rec.method == "lora"  # full does not fit 24 GiB
    shown = with_(asked, method=rec.method)
    assert r.request == shown
    assert r.estimate == estimate(arch, shown)
    assert r.methods == {
        m: estimate(arch, with_(asked, method=m)) for m in ("full", "lora", "qlora")
    }
    assert r.fits is True and r.methods["full"].fits(gpu.memory_gib) is False
    assert r.gpu is not None and (r.gpu.name, r.gpu.memory_gib, r.gpu.detected) == (
        "RTX 4090",
        gpu.memory_gib,
        False,
    )
    assert (r.tokens, r.tokens_assumed) == (5_000_000, False)
    hours = train_hours(arch, shown, 5_000_000, gpu, 1)
    assert r.time is not None and r.time.hours == hours > 0
    assert r.time.cost_usd == pytest.approx(hours * gpu.price_per_hour_usd)
    assert r.rent == rent_table(arch, shown, 5_000_000) and r.rent
    assert r.without_liger is None


def test_json_object_keys_and_values():
    r = build_report(
        ReportRequest("gpt2", EstimateRequest(batch_size=1), gpu="T4", tokens=1_000_000),
        detect=not_asked,
    )
    d = r.to_dict()
    assert list(d) == [
        "model",
        "model_source",
        "params_total",
        "params_trainable",
        "method",
        "precision",
        "device",
        "gpus",
        "zero",
        "batch_size",
        "seq_len",
        "peak_phase",
        "exact_params",
        "notes",
        "memory",
        "gpu",
        "fits",
        "recommendation",
        "methods",
        "request",
        "tokens",
        "tokens_assumed",
        "time",
        "rent",
    ]
    assert d["request"] == r.request.__dict__ and d["request"]["precision"] == "fp16-mixed"
    assert d["memory"] == r.estimate.to_dict()["memory"]
    assert d["methods"]["full"]["fits"] is r.methods["full"].fits(r.gpu.memory_gib)
    assert d["time"]["cost_usd"] == round(r.time.cost_usd, 2) and d["time"]["gpu"] == "T4"
    assert d["rent"] == [o.to_dict() for o in r.rent]
    # full fits a T4 at batch 1: the time and the rent table are for full, not the LoRA default
    assert d["method"] == d["request"]["method"] == "full" == r.recommendation.method
    assert r.rent == rent_table(r.arch, r.request, 1_000_000)
    assert r.time.hours == train_hours(r.arch, r.request, 1_000_000, find_gpu("T4"), 1)


def test_without_a_gpu_nothing_is_recommended_and_lora_is_shown():
    r = build_report(ReportRequest("gpt2"), detect=no_gpu)
    assert r.gpu is None and r.recommendation is None and r.fits is None and r.time is None
    assert r.request.method == "lora" and r.request.precision == "bf16-mixed"
    assert (r.tokens, r.tokens_assumed) == (DEFAULT_TOKENS, True)
    assert r.rent  # what to rent needs no GPU here


def test_detected_gpu_outside_the_catalog_has_memory_but_no_price():
    r = build_report(ReportRequest("gpt2"), detect=lambda: ("Mystery Accelerator", 40.0, 2))
    assert r.gpu is not None and r.gpu.detected and r.gpu.profile is None
    assert r.gpu.memory_gib == 40.0 and r.recommendation is not None
    assert r.time is None  # no speed or price to compute it from


def test_forced_method_inference_and_liger():
    r = build_report(ReportRequest(LLAMA, method="inference", gpu="RTX 4090"), detect=not_asked)
    assert list(r.methods) == ["inference"] and r.recommendation is None
    assert r.time is None and r.rent == []
    liger = build_report(
        ReportRequest(LLAMA, with_(OPTIONS, liger=True), method="lora", gpu_mem_gib=24),
        detect=not_asked,
    )
    plain = liger.without_liger
    assert plain is not None and list(plain.methods) == ["lora"]
    assert plain.methods["lora"] == estimate(
        load_model_arch(LLAMA), with_(liger.request, liger=False)
    )
    assert plain.methods["lora"].total > liger.estimate.total
    assert plain.recommendation is not None and "without_liger" in liger.to_dict()


def test_cpu_device_is_held_against_this_machines_ram(monkeypatch):
    monkeypatch.setattr(report_mod, "machine_ram_gib", lambda: 64.0)
    r = build_report(
        ReportRequest("gpt2", EstimateRequest(device="cpu"), method="lora"), detect=not_asked
    )
    assert r.gpu is not None and (r.gpu.name, r.gpu.memory_gib) == ("this machine's RAM", 64.0)
    assert r.request.precision == "fp32" and r.recommendation is not None


def test_dataset_tokens_times_epochs():
    r = build_report(ReportRequest("gpt2", dataset_tokens=1_000_000, epochs=2.5), detect=no_gpu)
    assert (r.tokens, r.tokens_assumed) == (2_500_000, False)


@pytest.mark.parametrize(
    "fields, where",
    [
        ({"tokens": 10, "dataset_tokens": 5}, "--tokens"),
        ({"tokens": 0}, "--tokens"),
        ({"dataset_tokens": 5, "epochs": 0.0}, "--dataset-tokens"),
        ({"gpu_mem_gib": 0.0}, "--gpu-mem"),
    ],
)
def test_bad_request_names_its_flag(fields, where):
    with pytest.raises(UserError) as err:
        build_report(ReportRequest("gpt2", **fields), detect=no_gpu)
    assert err.value.where == where


def test_default_precision():
    assert default_precision("cpu", True) == "fp32"
    assert default_precision("cuda", True) == "bf16-mixed"
    assert default_precision("cuda", False) == "fp16-mixed"


def test_fits_is_for_the_batch_asked_the_recommendation_may_split_it():
    r = build_report(
        ReportRequest(LLAMA, with_(OPTIONS, batch_size=4), gpu="RTX 4090"), detect=not_asked
    )
    rec = r.recommendation
    assert rec is not None and rec.fits and rec.batch_size is not None and rec.batch_size < 4
    assert r.request.batch_size == 4 and r.fits is False


def test_forced_freeze_is_recommended_in_words():
    """--method freeze with a GPU crashed (no label for freeze in the recommendation's words)."""
    r = build_report(
        ReportRequest("gpt2", OPTIONS, method="freeze", gpu_mem_gib=24), detect=not_asked
    )
    assert r.recommendation is not None and r.recommendation.method == "freeze"
    assert r.recommendation.reason.startswith("freeze fits in 24 GiB at batch 1")
