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
    (ckpt / "adapter_model.safetensors").write_bytes(b"")  # weights: never loaded here
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
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json"):
        (tmp_path / "final" / name).write_text("{}")
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


# -- one rule of "complete" for every reader ---------------------------------------

# What a checkpoint-N folder holds in each hostile case, and whether it is complete.
HOSTILE_CHECKPOINTS = {
    "complete": ({"adapter_config.json", "adapter_model.safetensors", "trainer_state.json"}, True),
    "no_weights": ({"adapter_config.json", "trainer_state.json"}, False),
    "no_config": ({"adapter_model.safetensors", "trainer_state.json"}, False),
    # killed mid-save: the weights are there, trainer_state.json (written last) is not
    "half_written": ({"adapter_config.json", "adapter_model.safetensors", "optimizer.pt"}, False),
    # saved to the end, damaged since: the weights are whole, the losses unknown
    "corrupt_state": (
        {"adapter_config.json", "adapter_model.safetensors", "trainer_state.json"},
        True,
    ),
    "empty": (set(), False),
}


def write_files(folder: Path, names: set[str], state: str = '{"global_step": 2}') -> None:
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_text(state if name == "trainer_state.json" else "{}")


@pytest.mark.parametrize("kind", HOSTILE_CHECKPOINTS)
def test_resume_chat_and_the_live_panel_agree_on_complete_checkpoints(tmp_path, kind):
    from tunewiz.core.checkpoints import (
        checkpoint_complete,
        last_complete_checkpoint,
        resume_checkpoint,
    )
    from tunewiz.tui.widgets.run_feed import list_checkpoint_rows

    fake_checkpoint(tmp_path, 1, HISTORY[:1])
    names, complete = HOSTILE_CHECKPOINTS[kind]
    state = '{"global_st' if kind == "corrupt_state" else '{"global_step": 2}'
    write_files(tmp_path / "checkpoint-2", names, state)

    assert checkpoint_complete(tmp_path / "checkpoint-2") is complete
    expected = ["checkpoint-1", "checkpoint-2"] if complete else ["checkpoint-1"]
    assert [c.name for c in list_checkpoints(tmp_path)] == expected  # chat, eval, export
    assert [r.name for r in list_checkpoint_rows(tmp_path)] == expected  # the live panel
    assert last_complete_checkpoint(tmp_path) == tmp_path / expected[-1]
    assert resolve_checkpoint(tmp_path, "last").name == expected[-1]
    # Resume also needs a trainer_state.json it can read: the Trainer restores the step from it.
    resumes_from = "checkpoint-1" if kind == "corrupt_state" else expected[-1]
    assert resume_checkpoint(tmp_path) == tmp_path / resumes_from


@pytest.mark.parametrize(
    ("names", "complete"),
    [
        ({"adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json"}, True),
        ({"config.json", "model-00001-of-00002.safetensors", "tokenizer_config.json"}, True),
        ({"config.json", "pytorch_model.bin", "tokenizer_config.json"}, True),
        ({"adapter_config.json", "tokenizer_config.json"}, False),  # no weights
        ({"config.json", "training_args.bin", "tokenizer_config.json"}, False),  # not weights
        ({"adapter_config.json", "adapter_model.safetensors"}, False),  # tokenizer not yet saved
    ],
)
def test_chat_and_a_run_without_status_agree_on_a_complete_final(tmp_path, names, complete):
    from tunewiz.core import runs
    from tunewiz.core.checkpoints import final_complete

    (tmp_path / "config.toml").write_text("name = 'x'\n")
    write_files(tmp_path / "final", names)
    assert final_complete(tmp_path / "final") is complete
    assert any(c.name == "final" for c in list_checkpoints(tmp_path)) is complete
    # status.json lost: the run is finished exactly when final/ is complete
    assert (runs.read_run(tmp_path).state == "finished") is complete
