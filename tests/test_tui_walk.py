"""Pilot tests for the dead ends a new user met (issue 10): the estimate-only path offline,
a broken saved state, reopening after a launch, a second run, dialogs and typing.

Offline is made to fail fast, never by a real network call: HF_HUB_OFFLINE=1 and an
unroutable endpoint (port 9 on this machine, which refuses at once).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from tests.tui_pilot import screen_text, settle
from tunewiz.core import runs
from tunewiz.core.config import RunConfig
from tunewiz.tui.app import make_app

LLAMA = "meta-llama/Llama-3.1-8B"


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")


def name(app) -> str:
    return type(app.screen).__name__


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def type_into(pilot, selector: str, value: str) -> None:
    field = pilot.app.screen.query_one(selector, Input)
    field.focus()
    field.value = value
    await pilot.press("enter")
    await settle(pilot.app, pilot)


async def test_estimate_only_offline_catalog_model(tmp_path, offline, default_model_dir):
    state, runs_dir = tmp_path / "state", tmp_path / "runs"
    app = make_app(state, runs_dir, resume=False, detect_gpus=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert "Estimate a model before renting" in screen_text(app)
        await pilot.press("e")
        await settle(app, pilot)
        assert name(app) == "ModelScreen" and app.wizard.estimate_only

        await type_into(pilot, "#model-name", LLAMA)
        assert app.screen.arch is not None and app.screen.arch.name == LLAMA
        assert "GiB" in screen_text(app)  # the memory estimate, without any tokenizer
        rent = text_of(app, "#rent-title")
        assert "no data counted: 1,000,000 tokens as an example" in rent

        # Data counted offline: the model's tokenizer is not here, so approximately.
        await type_into(pilot, "#count-data", "sample")
        count = text_of(app, "#count-status")
        assert "≈" in count and "approximate (±25%)" in count and "HF_HUB_OFFLINE" in count
        assert app.wizard.data_tokens > 0 and "≈" in text_of(app, "#rent-title")
        assert "data tokens ×" in text_of(app, "#rent-title")

        await pilot.press("ctrl+n")  # on to Settings, and back again
        await settle(app, pilot)
        assert name(app) == "SettingsScreen"
        await pilot.press("escape")
        assert name(app) == "ModelScreen"

    # A restart reopens the estimate, cleanly, without task and data screens underneath.
    again = make_app(state, runs_dir, detect_gpus=False)
    async with again.run_test(size=(120, 40)) as pilot:
        await settle(again, pilot)
        assert name(again) == "ModelScreen" and again.screen.arch.name == LLAMA
        assert "≈" in text_of(again, "#count-status")
        await pilot.press("escape")
        assert name(again) == "StartScreen"


def test_an_unreachable_hub_is_known_in_seconds(monkeypatch):
    from tunewiz.core import models

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # refuses at once, no network
    monkeypatch.setattr(models, "_hub_checked", None)
    started = time.monotonic()
    why = models.hub_unreachable()
    assert why and "127.0.0.1" in why and time.monotonic() - started < 10
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert models.hub_unreachable() == "HF_HUB_OFFLINE is set"


def test_an_uncached_hub_tokenizer_fails_fast_with_what_to_do(monkeypatch):
    from tunewiz.core.errors import UserError
    from tunewiz.core.loading import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        load_tokenizer("someone/not-downloaded-model")
    assert "HF_HUB_OFFLINE" in err.value.message and "local model folder" in err.value.hint


async def test_offline_hub_model_on_the_data_screen_is_counted_approximately(
    tmp_path, offline, default_model_dir
):
    app = make_app(tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False)
    app.wizard.set("model.model", "someone/not-downloaded-model")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n", "enter")
        await settle(app, pilot)
        assert name(app) == "DataScreen"
        status = text_of(app, "#data-status")
        assert "48 of 48 rows usable" in status and "≈" in status
        assert "approximate" in text_of(app, "#data-evidence")
        await pilot.press("ctrl+n")
        await settle(app, pilot)
        assert name(app) == "ModelScreen"
        reason = text_of(app, "#reason")  # an unknown model, said in place
        assert "cannot be reached" in reason and not app.screen.query_one("#memory-panel").display
        await pilot.press("ctrl+n")  # still not a dead end
        await settle(app, pilot)
        assert name(app) == "SettingsScreen"
        for back in ("ModelScreen", "DataScreen", "TaskScreen", "StartScreen"):
            await pilot.press("escape")
            assert name(app) == back


async def test_a_broken_saved_state_is_set_aside_with_a_notice(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "wizard.json").write_text(
        json.dumps({"screen": "data", "config": {"data": {"no_such_option": 1}}}), encoding="utf-8"
    )
    app = make_app(state, tmp_path / "runs", detect_gpus=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert name(app) == "StartScreen"
        said = "\n".join(n.message for n in app._notifications)
        assert "could not be read" in said and "wizard.json.broken-" in said
    assert len(list(state.glob("wizard.json.broken-*"))) == 1


def fake_run(runs_dir: Path, run_name: str, state: str, **status) -> Path:
    run_dir = runs_dir / run_name
    run_dir.mkdir(parents=True)
    RunConfig(name=run_name).save(run_dir / "config.toml")
    runs.write_status(run_dir, state=state, pid=os.getpid(), host=runs.this_host(), **status)
    return run_dir


async def test_reopened_after_a_launch_the_start_screen_selects_that_run(tmp_path, monkeypatch):
    from tunewiz.tui import backend

    runs_dir = tmp_path / "runs"
    fake_run(runs_dir, "older", "finished", step=5, total_steps=5)

    def launch(cfg):  # the training process itself is not what is tested here
        return fake_run(runs_dir, cfg.name, "running", step=1, total_steps=10)

    monkeypatch.setattr(backend, "launch", launch)
    state = tmp_path / "state"
    app = make_app(state, runs_dir, resume=False, detect_gpus=False, start_at="settings")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+t")
        await settle(app, pilot)
        assert name(app) == "TrainLiveScreen"
        await pilot.press("escape")  # back from the live panel: the start screen
        assert name(app) == "StartScreen"
        launched = app.wizard.selected_run
        assert launched and launched != "older"

    again = make_app(state, runs_dir, detect_gpus=False)
    async with again.run_test(size=(80, 24)) as pilot:
        await settle(again, pilot)
        assert name(again) == "StartScreen"
        table = again.screen.query_one("#runs", DataTable)
        assert again.focused is table
        assert again.screen.runs[table.cursor_row].name == launched
        await pilot.press("up")  # from the first row up to the buttons, and back down
        assert again.focused.id == "new"
        await pilot.press("down")
        assert again.focused is table
        await pilot.press("enter")
        await pilot.pause()
        assert name(again) == "TrainLiveScreen" and again.screen.run_dir.name == launched
        runs.write_status(runs_dir / launched, state="stopped")


async def test_a_second_run_asks_first_saying_what_is_running(tmp_path, monkeypatch):
    from tunewiz.tui import backend
    from tunewiz.tui.widgets.confirm import Confirm

    runs_dir = tmp_path / "runs"
    fake_run(runs_dir, "busy", "running", step=3, total_steps=10)
    launched: list = []
    monkeypatch.setattr(backend, "launch", lambda cfg: launched.append(cfg) or runs_dir / "x")
    app = make_app(
        tmp_path / "state", runs_dir, resume=False, detect_gpus=False, start_at="settings"
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert isinstance(app.screen, Confirm)
        assert "busy (running, step 3/10)" in screen_text(app)
        await pilot.press("n")
        await settle(app, pilot)
        assert name(app) == "SettingsScreen" and not launched
    runs.write_status(runs_dir / "busy", state="stopped")


async def test_a_failed_start_leaves_no_config_file(tmp_path, monkeypatch):
    from tunewiz.core.errors import UserError
    from tunewiz.tui import backend

    def launch(cfg):
        raise UserError("no room")

    monkeypatch.setattr(backend, "launch", launch)
    runs_dir = tmp_path / "runs"
    app = make_app(
        tmp_path / "state", runs_dir, resume=False, detect_gpus=False, start_at="settings"
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+t")
        await settle(app, pilot)
        assert "no room" in "\n".join(n.message for n in app._notifications)
        assert name(app) == "SettingsScreen"
    assert not list(runs_dir.glob("*.toml"))


async def test_a_background_error_does_not_take_the_users_typing(tmp_path, monkeypatch):
    from tunewiz.tui import backend

    def broken(name):
        time.sleep(0.3)  # fails while the user is typing
        raise RuntimeError("estimator exploded")

    monkeypatch.setattr(backend, "load_arch", broken)
    app = make_app(
        tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False, start_at="model"
    )
    async with app.run_test(size=(80, 24)) as pilot:
        search = app.screen.query_one("#catalog-search", Input)
        search.focus()
        await pilot.press(*"llama")
        await settle(app, pilot)
        await pilot.press(*"-3")
        assert "estimator exploded" in "\n".join(n.message for n in app._notifications)
        assert app.focused is search and search.value == "llama-3"


async def test_preset_values_are_checked_against_a_tiny_file(tmp_path):
    rows = [{"instruction": f"Say {i}", "output": " ".join(["word"] * 200)} for i in range(4)]
    path = tmp_path / "four.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    app = make_app(
        tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False, start_at="data"
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        app.wizard.set("data.validation_file", "")
        app.wizard.set("data.validation_split", 4)
        await type_into(pilot, "#data-path", str(path))
        checks = text_of(app, "#data-checks")  # 4 rows held out; sample-demo cuts at 128
        assert "validation_split = 4 holds out 3 of 4 rows, so training sees only 1" in checks
        assert "max_seq_len = 128 cuts 4 of 4 rows (100%)" in checks
        assert "max_seq_len = 256" in checks
        await pilot.press("ctrl+n", "ctrl+n")
        await settle(app, pilot)
        assert name(app) == "SettingsScreen"
        assert "training sees only 1" in text_of(app, "#settings-checks")
        app.wizard.set("data.validation_split", 0)
        app.screen.show_config()
        assert "validation_split" not in text_of(app, "#settings-checks")


async def test_preview_shows_any_row_in_the_users_own_columns(tmp_path):
    rows = [
        {"question": f"Question {i}?", "answer": f"Answer number {i}, " + "long " * 30}
        for i in range(1, 8)
    ]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    app = make_app(
        tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False, start_at="data"
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await type_into(pilot, "#data-path", str(path))
        app.screen.query_one("#data-tabs").active = "tab-preview"
        await type_into(pilot, "#row-number", "6")
        table = app.screen.query_one("#preview", DataTable)
        cells = {str(table.get_row_at(i)[0]): str(table.get_row_at(i)[1]) for i in range(2)}
        assert cells["question"] == "Question 6?"  # the user's column names, the whole value
        assert cells["answer"] == rows[5]["answer"]
        assert "of 7 · qa.jsonl:6" in text_of(app, "#row-where")
        assert "Answer number 6" in text_of(app, "#masking")
        await pilot.press("down")  # Up / Down step through the rows
        await settle(app, pilot)
        assert "qa.jsonl:7" in text_of(app, "#row-where")


async def test_the_file_tree_starts_in_the_data_folder(tmp_path):
    folder = tmp_path / "datasets"
    folder.mkdir()
    (folder / "mine.jsonl").write_text('{"prompt": "hi", "completion": "hello"}\n')
    app = make_app(
        tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False, start_at="data"
    )
    app.wizard.set("data.data", str(folder / "mine.jsonl"))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert Path(app.screen.query_one("#data-tree").path) == folder


async def test_one_scan_at_a_time_and_the_newest_wins(tmp_path, monkeypatch):
    from tunewiz.tui import backend

    paths = []
    for n in (3, 5):
        path = tmp_path / f"rows{n}.jsonl"
        path.write_text(
            "".join(json.dumps({"prompt": f"q{i}", "completion": "a"}) + "\n" for i in range(n))
        )
        paths.append(path)
    active, most = [0], [0]
    real = backend.inspect_data

    def watched(*args, **kwargs):
        active[0] += 1
        most[0] = max(most[0], active[0])
        try:
            time.sleep(0.2)  # long enough for the next scan to be asked for meanwhile
            return real(*args, **kwargs)
        finally:
            active[0] -= 1

    monkeypatch.setattr(backend, "inspect_data", watched)
    app = make_app(
        tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False, start_at="data"
    )
    async with app.run_test(size=(120, 40)) as pilot:
        field = app.screen.query_one("#data-path", Input)
        for path in paths:  # asked for while the first scan (the sample) still runs
            field.value = str(path)
            app.screen.action_scan()
        await settle(app, pilot)
        assert most[0] == 1
        assert "5 of 5 rows usable" in text_of(app, "#data-status")


async def test_a_dialog_gives_the_focus_back_where_it_was(tmp_path):
    from tunewiz.tui.widgets.error_dialog import ErrorDialog

    app = make_app(
        tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False, start_at="data"
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        columns = app.screen.query_one("#data-columns", Input)
        columns.focus()
        await pilot.press(*"prompt")  # not a mapping: a dialog says so
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog)
        await pilot.press("escape")
        await pilot.pause()
        assert app.focused is columns and columns.value == "prompt"
        await pilot.press(*"=question")  # typing goes on where it was
        assert columns.value == "prompt=question"


async def test_own_data_replaces_the_samples_held_out_questions_and_says_so(tmp_path):
    """sample-demo validates on the sample's held-out island questions: with the user's own
    file they would measure nothing, so part of the user's data is held out instead."""
    rows = [{"instruction": f"Say {i}", "output": f"{i}"} for i in range(40)]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    app = make_app(
        tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False, start_at="data"
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.wizard.get("data.validation_file") == "sample-heldout"  # the preset's
        await type_into(pilot, "#data-path", str(path))
        assert app.wizard.get("data.validation_file") == ""
        assert app.wizard.get("data.validation_split") == 0.1
        assert any("held-out questions" in n.message for n in app._notifications)
