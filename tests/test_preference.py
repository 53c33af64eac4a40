"""Preference tuning end to end on the CPU with a tiny Llama: dpo / orpo / kto, stop/resume, QLoRA.

The preference set is made here: one prompt, a short chosen answer and a
different rejected one. A few steps at a high learning rate must move the
chosen-over-rejected reward margin up (the first logged step is the starting
model, where the margin is 0 for dpo/kto).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_train import launch_with_env, wait_done, wait_step
from tunewiz.core import runs
from tunewiz.core.config import RunConfig

WAIT_S = 300


def pairs(n: int = 8) -> list[dict]:
    return [
        {
            "prompt": f"What is the colour of box {i}?",
            "chosen": f"Box {i} is blue.",
            "rejected": f"I refuse to talk about box {i}, it is a silly question.",
        }
        for i in range(n)
    ]


def pref_cfg(tmp: Path, model: Path, name: str, objective: str, method="lora", **training):
    data = tmp / "pairs.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps(r) + "\n" for r in pairs()))
    cfg = RunConfig()
    cfg.name, cfg.runs_dir = name, str(tmp / "runs")
    cfg.model.model, cfg.model.method = str(model), method
    cfg.data.data, cfg.data.validation_split, cfg.data.max_seq_len = str(data), 0, 64
    t = cfg.training
    t.objective = objective
    t.max_steps, t.per_device_train_batch_size = 6, 2
    t.learning_rate = 5e-3 if method != "full" else 1e-3
    t.lr_scheduler_type, t.warmup_ratio = "constant", 0.0
    t.save_steps = t.eval_steps = 100
    for key, value in training.items():
        cfg.set(key, value)
    return cfg


def wait(run_dir: Path, timeout: float) -> str:
    return wait_done(run_dir, timeout).state


def metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / runs.METRICS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def started(tiny_model_dir, tmp_path_factory):
    """Start the runs at once (two cores: they overlap); each test waits for its own."""
    tmp = tmp_path_factory.mktemp("pref")
    out = {}
    for name, objective, method in (
        ("dpo-lora", "dpo", "lora"),
        ("orpo-lora", "orpo", "lora"),
        ("kto-lora", "kto", "lora"),
        ("dpo-full", "dpo", "full"),
    ):
        # KTO logs a margin only for batches holding good and bad answers: bigger batches.
        batch = 4 if objective == "kto" else 2
        cfg = pref_cfg(tmp, tiny_model_dir, name, objective, method)
        cfg.training.per_device_train_batch_size = batch
        if objective == "orpo":  # ORPO's reward is beta x the mean log-prob: make it visible
            cfg.training.beta = 1.0
        out[name] = launch_with_env(cfg)
    return out


@pytest.mark.parametrize("name", ["dpo-lora", "kto-lora", "dpo-full"])
def test_reward_margin_grows(started, name):
    run_dir = started[name]
    assert wait(run_dir, WAIT_S) == "finished", (run_dir / runs.LOG_FILE).read_text()[-3000:]
    rows = [r for r in metrics(run_dir) if "rewards/margins" in r]
    assert len(rows) >= 3
    if name.startswith("dpo"):  # the first step scores the starting model: no margin yet
        assert rows[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert rows[-1]["rewards/margins"] > 0.05
    assert {"rewards/chosen", "rewards/rejected", "loss", "tokens_seen"} <= rows[-1].keys()
    assert (run_dir / "final" / "config.json").exists() or (
        run_dir / "final" / "adapter_config.json"
    ).exists()
    status = runs.read_status(run_dir)
    assert status["objective"] == name.split("-")[0]
    assert status["last_reward_margin"] == pytest.approx(rows[-1]["rewards/margins"])


def test_orpo_prefers_chosen(started):
    run_dir = started["orpo-lora"]
    assert wait(run_dir, WAIT_S) == "finished", (run_dir / runs.LOG_FILE).read_text()[-3000:]
    rows = [r for r in metrics(run_dir) if "rewards/margins" in r]
    # ORPO's reward is beta * the average log-prob: the margin starts near 0 and must rise.
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"] + 0.05
    assert rows[-1]["rewards/accuracies"] == 1.0
    assert "nll_loss" in rows[-1]


def test_stop_and_resume_reproduce_losses(tiny_model_dir, tmp_path):
    from tunewiz.core.train import resume

    full = launch_with_env(pref_cfg(tmp_path, tiny_model_dir, "whole", "dpo", max_steps=6))
    cut = launch_with_env(pref_cfg(tmp_path, tiny_model_dir, "cut", "dpo", max_steps=6))
    wait_step(cut, 2)
    runs.stop_run(cut)
    assert wait(cut, WAIT_S) == "stopped"
    stopped_at = runs.read_status(cut)["step"]
    assert 2 <= stopped_at < 6
    resume(cut)
    assert wait(cut, WAIT_S) == "finished", (cut / runs.LOG_FILE).read_text()[-3000:]
    assert wait(full, WAIT_S) == "finished"
    a = {r["step"]: r["loss"] for r in metrics(full) if "loss" in r}
    b = {r["step"]: r["loss"] for r in metrics(cut) if "loss" in r}
    assert sorted(b) == sorted(a) == list(range(1, 7))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-6), step


def test_dpo_qlora_on_cpu_completes(tiny_model_dir, tmp_path):
    cfg = pref_cfg(tmp_path, tiny_model_dir, "qlora", "dpo", "qlora", max_steps=2)
    run_dir = launch_with_env(cfg)
    assert wait(run_dir, WAIT_S) == "finished", (run_dir / runs.LOG_FILE).read_text()[-3000:]
    assert (run_dir / "final" / "adapter_config.json").exists()
    assert [r["step"] for r in metrics(run_dir) if "loss" in r] == [1, 2]


@pytest.mark.parametrize("name", ["dpo-lora", "dpo-full"])
def test_chat_loads_preference_runs(started, name):
    """Preference runs save final/ like SFT runs: chat (and so compare/eval) load them."""
    import torch

    from tunewiz.core.loading import load_for_chat

    run_dir = started[name]
    assert wait(run_dir, WAIT_S) == "finished"
    loaded = load_for_chat(str(run_dir), "final", device="cpu")
    ids = loaded.tokenizer("Box 1", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = loaded.model.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 3
