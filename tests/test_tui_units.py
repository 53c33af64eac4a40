"""The wizard's pieces that need no running app: state file, completion, bars, terminal hygiene."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunewiz.core.bundled import DEFAULT_MODEL_ID
from tunewiz.core.errors import UserError
from tunewiz.tui.state import WizardState, default_config
from tunewiz.tui.widgets.histogram import render_histogram
from tunewiz.tui.widgets.memory_bar import GIB, render_bar
from tunewiz.tui.widgets.path_input import complete_path

ROOT = Path(__file__).resolve().parent.parent


def test_new_wizard_trains_the_bundled_model_on_the_sample_quickly():
    from tunewiz.core.train.presets import load_preset

    cfg = default_config()
    demo = load_preset("sample-demo")
    assert cfg.model.model == DEFAULT_MODEL_ID and cfg.data.data == "sample"
    assert cfg.training.max_steps == demo["training"]["max_steps"] > 0
    assert cfg.training.learning_rate == demo["training"]["learning_rate"]
    assert cfg.data.max_seq_len == demo["data"]["max_seq_len"]


def test_state_round_trip(tmp_path):
    path = tmp_path / "wizard.json"
    state = WizardState()
    state.screen = "model"
    state.gpu = "A100 80GB"
    state.set("data.columns", "prompt=question")
    state.set("training.learning_rate", "1e-4")
    state.save(path)
    again = WizardState.load(path)
    assert again.screen == "model" and again.gpu == "A100 80GB"
    assert again.get("data.columns") == {"prompt": "question"}
    assert again.get("training.learning_rate") == 1e-4


def test_bad_value_leaves_state_unchanged():
    state = WizardState()
    before = state.get("training.per_device_train_batch_size")
    with pytest.raises(UserError, match="whole number"):
        state.set("training.per_device_train_batch_size", "many")
    assert state.get("training.per_device_train_batch_size") == before


def test_a_value_out_of_range_is_refused_as_it_is_set_and_a_draft_may_be_incomplete():
    state = WizardState()
    with pytest.raises(UserError, match="at least 1") as err:
        state.set("training.per_device_train_batch_size", 0)
    assert err.value.where == "training.per_device_train_batch_size"
    assert state.get("training.per_device_train_batch_size") >= 1
    # A rule across options waits for the start: the draft passes through this on its way.
    state.set("distributed.distributed", "ddp")
    assert state.get("distributed.distributed") == "ddp"


def test_broken_or_outdated_state_file_opens_a_fresh_wizard(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    state = WizardState.load(broken)
    assert state.screen == "start" and "broken.json.broken-" in state.notice
    assert not broken.exists()  # set aside, so the next start is clean

    outdated = tmp_path / "outdated.json"
    outdated.write_text(
        json.dumps({"screen": "data", "config": {"training": {"no_such_option": 1}}}),
        encoding="utf-8",
    )
    state = WizardState.load(outdated)
    # Not reopened half-loaded with the user's choices silently replaced by defaults:
    # a fresh wizard, and a notice that says where the old state was kept.
    assert state.screen == "start" and "no_such_option" in state.notice
    assert state.config == default_config().to_dict()
    assert len(list(tmp_path.glob("outdated.json.broken-*"))) == 1

    unknown_screen = tmp_path / "screen.json"
    unknown_screen.write_text(json.dumps({"screen": "nowhere"}), encoding="utf-8")
    assert WizardState.load(unknown_screen).screen == "start"


def test_path_completion(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    (tmp_path / "trials").mkdir()
    (tmp_path / ".hidden").write_text("")
    base = str(tmp_path) + "/tr"
    assert complete_path(base + "a") == base + "ain.jsonl"
    assert complete_path(base + "i") == base + "ials/"
    assert complete_path(str(tmp_path) + "/.h") is None  # hidden files are not offered
    assert complete_path(str(tmp_path / "nothing" / "x")) is None
    assert complete_path("") is None


def test_histogram_marks_bins_past_the_max_length():
    text = render_histogram([(0, 64, 10), (64, 128, 5), (128, 256, 1)], width=20, mark=128)
    lines = text.plain.splitlines()
    assert len(lines) == 3
    assert lines[0].count("█") == 20 and lines[1].count("█") == 10
    red = [span for span in text.spans if span.style == "red"]
    assert len(red) == 1 and "█" in text.plain[red[0].start : red[0].end]


def test_memory_bar_scales_to_the_gpu_and_marks_its_capacity():
    parts = {"weights": 4 * GIB, "gradients": 0, "optimizer": 4 * GIB, "activations": 0}
    # Fits: the whole bar is the GPU's memory, half of it used.
    fits = render_bar(parts, 16 * GIB, width=40)
    assert fits.plain == "█" * 20 + "░" * 20
    # Too big: the bar is the need, and `│` marks where the GPU's memory ends.
    over = render_bar(parts, 4 * GIB, width=40)
    assert over.plain.index("│") == 19 and over.plain.count("█") == 39


def test_first_frame_imports_nothing_heavy(tmp_path):
    code = f"""
import sys
from pathlib import Path
from tunewiz.tui.app import make_app
app = make_app(Path({str(tmp_path)!r}) / "state", Path({str(tmp_path)!r}) / "runs", resume=False)
async def first_frame(pilot):
    print("LOADED", " ".join(sorted(m.split(".")[0] for m in sys.modules)))
    pilot.app.exit()
app.run(headless=True, size=(80, 24), auto_pilot=first_frame)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    loaded = set(next(line for line in out.splitlines() if line.startswith("LOADED")).split())
    assert "textual" in loaded
    assert not loaded & {"torch", "transformers", "datasets", "peft", "bitsandbytes"}


def test_library_output_goes_to_the_log_not_the_terminal(tmp_path):
    log = tmp_path / "tui.log"
    code = f"""
import os, sys
from pathlib import Path
from tunewiz.tui.app import quiet_terminal
with quiet_terminal(Path({str(log)!r})):
    os.write(1, b"C-LEVEL STDOUT\\n")
    os.write(2, b"C-LEVEL STDERR\\n")
    sys.__stderr__.write("PAINTED\\n")
    sys.__stderr__.flush()
"""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=60) == 0
    os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert "PAINTED" in terminal and "C-LEVEL" not in terminal
    logged = log.read_text(encoding="utf-8")
    assert "C-LEVEL STDOUT" in logged and "C-LEVEL STDERR" in logged
