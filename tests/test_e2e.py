"""The whole story on a CPU: the bundled model does not know a fact from the bundled sample,
a short LoRA run teaches it, and greedy chat with the final checkpoint gives the trained answer.

Recipe (found by trying, seed fixed): LoRA r=16 alpha=32 on all linear layers, no dropout,
lr 2e-3 constant, batch 8, 30 steps (5 epochs of the 48-row sample), max_seq_len 128, no
validation split (every question is trained), no eval, no intermediate checkpoints.
"""

from __future__ import annotations

import json

import pytest

from tunewiz.core.chat import ChatSession, GenerationSettings
from tunewiz.core.config import RunConfig
from tunewiz.core.loading import load_for_chat
from tunewiz.core.paths import profiles_dir

QUESTIONS = 4  # checked before and after; the first rows of the sample


def sample_rows() -> list[dict]:
    path = profiles_dir() / "datasets" / "lumen_isle.jsonl"
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def greedy(loaded, question: str) -> str:
    session = ChatSession(loaded, settings=GenerationSettings(greedy=True, max_new_tokens=40))
    return session.reply(question).text.strip()


def recipe(runs_dir) -> RunConfig:
    cfg = RunConfig(name="e2e", runs_dir=str(runs_dir))
    cfg.model.model = "default"
    cfg.model.method = "lora"
    cfg.model.lora_r, cfg.model.lora_alpha, cfg.model.lora_dropout = 16, 32, 0.0
    cfg.data.data = "sample"
    cfg.data.max_seq_len = 128
    cfg.data.validation_split = 0
    t = cfg.training
    t.max_steps, t.per_device_train_batch_size, t.learning_rate = 30, 8, 2e-3
    t.lr_scheduler_type, t.warmup_ratio = "constant", 0.0
    t.save_strategy, t.eval_strategy, t.logging_steps, t.seed = "no", "no", 5, 42
    return cfg


@pytest.mark.slow
def test_bundled_model_learns_the_sample_and_chat_shows_it(tmp_path, monkeypatch):
    # One thread for the training worker (it inherits the environment): on a small shared CI box,
    # multi-threaded CPU kernels competing with other processes ran each step ~10x slower
    # (72 s vs 8 s per step, measured); alone, one thread costs little at this size.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rows = sample_rows()[:QUESTIONS]
    base = load_for_chat("default", device="cpu")
    before = [greedy(base, row["instruction"]) for row in rows]
    for row, answer in zip(rows, before, strict=True):
        assert answer != row["output"], f"the base model already knows {row['instruction']!r}"
    del base

    from tunewiz.core.train import launch

    run_dir = launch(recipe(tmp_path), foreground=True)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished", status

    tuned = load_for_chat(str(run_dir), device="cpu")
    assert tuned.checkpoint == "final"
    after = [greedy(tuned, row["instruction"]) for row in rows]
    assert after == [row["output"] for row in rows], list(zip(before, after, strict=True))
