"""Listing and resolving a run's checkpoints from the files the Trainer writes (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewiz.core.checkpoints import list_checkpoints, resolve_checkpoint
from tunewiz.core.errors import UserError


def fake_checkpoint(run: Path, step: int, history: list[dict], best: str | None = None) -> Path:
    ckpt = run / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_config.json").write_text("{}")
    state = {
        "global_step": step,
        "epoch": step / 10,
        "log_history": history,
        "best_model_checkpoint": best,
    }
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    return ckpt


HISTORY = [
    {"step": 10, "epoch": 1.0, "loss": 2.0},
    {"step": 10, "epoch": 1.0, "eval_loss": 1.8},
    {"step": 20, "epoch": 2.0, "loss": 1.0},
    {"step": 20, "epoch": 2.0, "eval_loss": 1.5},
    {"step": 30, "epoch": 3.0, "loss": 0.5},
    {"step": 30, "epoch": 3.0, "eval_loss": 1.6},
]


def test_losses_and_tags_come_from_each_checkpoints_own_state(tmp_path):
    fake_checkpoint(tmp_path, 10, HISTORY[:2])
    fake_checkpoint(tmp_path, 20, HISTORY[:4], best=str(tmp_path / "checkpoint-20"))
    fake_checkpoint(tmp_path, 30, HISTORY, best=str(tmp_path / "checkpoint-20"))
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "adapter_config.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(json.dumps(r) for r in HISTORY) + '\n{"step": 3'
    )

    cks = list_checkpoints(tmp_path)
    assert [c.name for c in cks] == ["checkpoint-10", "checkpoint-20", "checkpoint-30", "final"]
    c10, c20, c30, final = cks
    assert (c10.step, c10.epoch, c10.train_loss, c10.eval_loss) == (10, 1.0, 2.0, 1.8)
    assert (c20.train_loss, c20.eval_loss) == (1.0, 1.5)
    assert c20.tags == {"best"} and c30.tags == {"last"} and final.tags == {"final"}
    assert (final.step, final.train_loss, final.eval_loss) == (30, 0.5, 1.6)
    assert "[best]" in c20.describe() and "eval 1.5000" in c20.describe()


def test_best_falls_back_to_lowest_eval_loss_when_trainer_recorded_none(tmp_path):
    fake_checkpoint(tmp_path, 10, HISTORY[:2])
    fake_checkpoint(tmp_path, 20, HISTORY[:4])
    fake_checkpoint(tmp_path, 30, HISTORY)
    assert resolve_checkpoint(tmp_path, "best").name == "checkpoint-20"
    assert resolve_checkpoint(tmp_path, "last").name == "checkpoint-30"


def test_resolve_by_number_or_name_and_unfinished_checkpoints_are_ignored(tmp_path):
    fake_checkpoint(tmp_path, 10, HISTORY[:2])
    (tmp_path / "checkpoint-20").mkdir()  # being written: no config yet
    assert resolve_checkpoint(tmp_path, "10").path == tmp_path / "checkpoint-10"
    assert resolve_checkpoint(tmp_path, "checkpoint-10").step == 10
    assert [c.name for c in list_checkpoints(tmp_path)] == ["checkpoint-10"]


def test_unknown_checkpoint_lists_what_exists(tmp_path):
    fake_checkpoint(tmp_path, 10, HISTORY[:2])
    with pytest.raises(UserError) as err:
        resolve_checkpoint(tmp_path, "final")
    assert "final" in err.value.message
    assert "checkpoint-10 (best,last)" in err.value.hint


def test_empty_run_says_nothing_was_saved(tmp_path):
    with pytest.raises(UserError, match="no checkpoint") as err:
        resolve_checkpoint(tmp_path, "last")
    assert "saved no checkpoint" in err.value.hint


def test_checkpoints_module_is_light():
    import subprocess
    import sys

    code = "import tunewiz.core.checkpoints, tunewiz.core.chat, sys; print(' '.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert not {"torch", "transformers", "peft"} & {m.split(".")[0] for m in out.split()}
