"""`tunewiz estimate`: tables, the --json schema, bad input as messages, and no heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunewiz.cli import estimate as cli_estimate
from tunewiz.cli import main
from tunewiz.core.estimate import memory

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft", "datasets", "bitsandbytes", "textual")


def run_json(capsys, *argv: str) -> dict:
    assert main(["estimate", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_estimate_json_loads_no_heavy_library():
    code = (
        "import contextlib, io, sys\n"
        "from tunewiz.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    rc = main(['estimate', 'meta-llama/Llama-3.1-8B', '--gpu', 'RTX 4090', '--json'])\n"
        "assert rc == 0\n"
        "print(' '.join(sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    loaded = {name.split(".")[0] for name in out.split()}
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_json_schema(capsys):
    out = run_json(
        capsys,
        "meta-llama/Llama-3.1-8B",
        "--gpu",
        "RTX 4090",
        "--method",
        "qlora",
        "--seq-len",
        "1024",
        "--batch-size",
        "1",
        "--tokens",
        "5000000",
    )
    assert out["params_total"] == 8_030_261_248
    assert out["params_trainable"] == 41_943_040
    assert out["method"] == "qlora"
    mem = out["memory"]
    assert set(mem["breakdown_gib"]) == {
        "weights",
        "gradients",
        "optimizer",
        "activations",
        "logits",
        "overhead",
    }
    assert mem["total_gib"] > 0 and all(v >= 0 for v in mem["breakdown_gib"].values())
    assert out["fits"] is True
    rec = out["recommendation"]
    assert rec["method"] == "qlora" and rec["batch_size"] >= 1 and rec["reason"]
    assert out["time"]["hours"] > 0 and out["time"]["cost_usd"] > 0
    assert out["tokens"] == 5_000_000 and not out["tokens_assumed"]
    assert out["rent"] and out["rent"][0]["cost_usd"] <= out["rent"][-1]["cost_usd"]


def test_without_a_gpu_fits_is_null(capsys, monkeypatch):
    monkeypatch.setattr(cli_estimate, "detect_gpu", lambda: None)
    out = run_json(capsys, "gpt2")
    assert out["fits"] is None and out["recommendation"] is None and out["gpu"] is None
    assert set(out["methods"]) == {"full", "lora", "qlora"}


def test_auto_method_prefers_full_when_it_fits(capsys):
    out = run_json(capsys, "gpt2", "--gpu-mem", "80")
    assert out["method"] == "full" and out["fits"]
    out = run_json(capsys, "meta-llama/Llama-3.1-8B", "--gpu-mem", "24", "--seq-len", "512")
    assert out["method"] in ("lora", "qlora")


def test_dataset_tokens_times_epochs(capsys):
    out = run_json(capsys, "gpt2", "--gpu", "T4", "--dataset-tokens", "1000000", "--epochs", "3")
    assert out["tokens"] == 3_000_000
    assert out["request"]["precision"] == "fp16-mixed"  # a T4 has no bf16


def test_cpu_device(capsys):
    out = run_json(capsys, "default", "--device", "cpu", "--method", "lora")
    assert out["device"] == "cpu" and out["request"]["precision"] == "fp32"
    assert out["rent"]  # what to rent is always for GPUs


def test_table_output(capsys):
    assert main(["estimate", "meta-llama/Llama-3.1-8B", "--gpu", "RTX 4090"]) == 0
    text = capsys.readouterr().out
    for word in (
        "Peak memory",
        "weights",
        "gradients",
        "optimizer",
        "activations",
        "logits",
        "overhead",
        "Recommendation",
        "What to rent",
        "fits RTX 4090?",
    ):
        assert word in text


def test_inference(capsys):
    out = run_json(
        capsys,
        "meta-llama/Llama-3.1-8B",
        "--method",
        "inference",
        "--quant",
        "nf4",
        "--gpu",
        "RTX 4090",
        "--seq-len",
        "8192",
    )
    assert out["method"] == "inference" and out["params_trainable"] == 0 and out["fits"]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["Lama-3.1-8B"], "meta-llama/Llama-3.1-8B"),
        (["gpt2", "--method", "lora", "--lora-r", "0"], "--lora-r"),
        (["gpt2", "--batch-size", "-1"], "--batch-size"),
        (["gpt2", "--seq-len", "4096"], "1024"),
        (["gpt2", "--zero", "3"], "--gpus 2"),
        (["gpt2", "--gpu", "RTX 9999"], "RTX"),
        (["gpt2", "--gpu-mem", "0"], "--gpu-mem"),
        (["gpt2", "--tokens", "10", "--dataset-tokens", "5"], "--tokens"),
    ],
)
def test_bad_input_is_a_message_not_a_traceback(argv, words):
    out = subprocess.run(
        [sys.executable, "-m", "tunewiz", "estimate", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "error:" in out.stderr and words in out.stderr


def test_cli_choices_are_cores():
    """One copy of each choice list: the CLI's flags offer exactly what the estimator prices."""
    assert cli_estimate.ESTIMATE_METHODS is memory.ESTIMATE_METHODS
    assert "freeze" in cli_estimate.ESTIMATE_METHODS
    assert cli_estimate.OPTIMIZERS is memory.OPTIMIZERS


def test_every_flag_offers_cores_choices_and_defaults():
    """No choice list or default of the estimator is retyped in the CLI (the batch excepted)."""
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    cli_estimate.register(sub)
    actions = {a.dest: a for a in sub.choices["estimate"]._actions}
    core = {
        "method": memory.ESTIMATE_METHODS,
        "objective": memory.OBJECTIVES,
        "precision": memory.ESTIMATE_PRECISIONS,
        "optimizer": memory.OPTIMIZERS,
        "attention": memory.ATTENTIONS,
        "quant": memory.QUANTS,
        "zero": memory.ZERO_STAGES,
        "device": memory.DEVICES,
    }
    assert {d for d, a in actions.items() if a.choices} == set(core)
    for dest, choices in core.items():
        assert actions[dest].choices is choices, dest
    defaults = memory.EstimateRequest()
    for dest, action in actions.items():
        # method and precision default to None: the report chooses them
        if dest in defaults.__dict__ and dest not in ("batch_size", "method", "precision"):
            assert action.default == getattr(defaults, dest), dest
    assert actions["batch_size"].default == 4
    assert actions["method"].default is None and actions["precision"].default is None
