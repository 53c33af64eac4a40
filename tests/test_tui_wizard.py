"""Pilot tests that walk the wizard as a user would, on the bundled sample and a tiny model."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from textual.widgets import (
    DataTable,
    Input,
    RadioButton,
    Select,
    Static,
    Switch,
    TabbedContent,
)

from tests.tui_pilot import screen_text, settle
from tunewiz.core import runs
from tunewiz.core.config import RunConfig
from tunewiz.core.data.pipeline import PREVIEW_ROWS
from tunewiz.tui.app import make_app
from tunewiz.tui.widgets.error_dialog import ErrorDialog
from tunewiz.tui.widgets.option_form import OptionRow, format_value


def bad_rows_file(folder: Path, data_files: Path) -> Path:
    """40 alpaca rows (the first with markup in it), one line of broken JSON, one empty answer."""
    rows = json.loads((data_files / "alpaca.json").read_text(encoding="utf-8"))[:40]
    rows[0]["instruction"] = "Say [bold]hi[/bold], then " + rows[0]["instruction"]
    path = folder / "bad.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i, row in enumerate(rows):
            if i == 5:
                fh.write("{not json\n")
            if i == 9:
                fh.write(json.dumps({"instruction": "Say [bold]hi[/bold]", "output": ""}) + "\n")
            fh.write(json.dumps(row) + "\n")
    return path


def screen_name(app) -> str:
    return type(app.screen).__name__


def notifications(app) -> str:
    return "\n".join(n.message for n in app._notifications)


def static_text(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def set_input(pilot, selector: str, value: str, submit: bool = False) -> None:
    field = pilot.app.screen.query_one(selector, Input)
    field.focus()
    field.value = value
    if submit:
        await pilot.press("enter")
    await settle(pilot.app, pilot)


def wait_for_end(run_dir: Path, limit_s: float = 180) -> runs.RunInfo:
    # Not a timing assertion: the detached run must not outlive the test.
    end = time.monotonic() + limit_s
    info = runs.read_run(run_dir)
    while info.state in runs.LIVE_STATES and time.monotonic() < end:
        time.sleep(0.5)
        info = runs.read_run(run_dir)
    if info.state in runs.LIVE_STATES:
        runs.stop_run(run_dir)
    return info


@pytest.mark.slow
async def test_walk_from_task_to_training(tmp_path, data_files, tiny_model_dir):
    bad = bad_rows_file(tmp_path, data_files)
    app = make_app(tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert screen_name(app) == "StartScreen"
        assert "No runs yet" in screen_text(app)

        # Task: arrows change the task, Enter goes on.
        await pilot.press("n")
        assert screen_name(app) == "TaskScreen"
        await pilot.press("down")
        assert app.wizard.config["data"]["task"] == "chat"
        await pilot.press("up", "enter")
        await settle(app, pilot)
        assert screen_name(app) == "DataScreen"
        assert app.wizard.config["data"]["task"] == "instruction"

        # Data: the bundled sample is scanned at once...
        assert app.screen.report is not None and app.screen.report.rows_ok > 0
        # ...then a file with two bad rows.
        await set_input(pilot, "#data-path", str(bad), submit=True)
        report = app.screen.report
        assert (report.rows_total, report.rows_ok) == (42, 40)
        assert "2 with problems" in static_text(app, "#data-status")
        app.screen.query_one(TabbedContent).active = "tab-problems"
        await pilot.pause()
        problems = app.screen.query_one("#problems", DataTable)
        wheres = [str(problems.get_row_at(i)[0]) for i in range(problems.row_count)]
        assert "bad.jsonl:6" in wheres and any(w.startswith("bad.jsonl:11") for w in wheres)
        await set_input(pilot, "#problems-filter", "invalid_json")
        assert problems.row_count == 1
        await set_input(pilot, "#problems-filter", "")

        # "stop" refuses to go on, and says where the first bad row is.
        await pilot.click("#stop")
        assert app.wizard.config["data"]["on_bad_rows"] == "stop"
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog)
        assert "bad.jsonl:6" in screen_text(app)
        await pilot.press("escape")
        await pilot.click("#skip")
        assert app.wizard.config["data"]["on_bad_rows"] == "skip"

        # The preview lists the first rows that passed, their text as typed, never as markup.
        app.screen.query_one(TabbedContent).active = "tab-preview"
        await settle(app, pilot)
        preview = app.screen.query_one("#preview", DataTable)
        assert preview.row_count == PREVIEW_ROWS
        assert "Say [bold]hi[/bold], then" in " ".join(str(c) for c in preview.get_row_at(0))

        await pilot.press("ctrl+n")
        await settle(app, pilot)
        assert screen_name(app) == "ModelScreen"

        # Model & memory: the tiny model, a catalog GPU, and a live estimate.
        await set_input(pilot, "#model-name", str(tiny_model_dir), submit=True)
        app.screen.query_one("#gpu", Select).value = "RTX 4090"
        await settle(app, pilot)
        assert app.wizard.gpu == "RTX 4090"
        memory = static_text(app, "#memory")
        assert "of 24 GiB on RTX 4090" in memory and "fits" in memory
        labels = [str(b.label) for b in app.screen.query(RadioButton)]
        assert sum("★ recommended" in label for label in labels) == 1
        before = app.screen.last_estimate.total
        await set_input(pilot, "#opt-training-per_device_train_batch_size", "16")
        assert app.wizard.config["training"]["per_device_train_batch_size"] == 16
        assert app.screen.last_estimate.total > before
        assert static_text(app, "#memory") != memory
        await set_input(pilot, "#opt-training-per_device_train_batch_size", "2")
        rent = app.screen.query_one("#rent", DataTable)
        assert rent.row_count > 0

        await pilot.press("ctrl+n")
        await settle(app, pilot)
        assert screen_name(app) == "SettingsScreen"

        # Settings: a very short run; the config shown is the file that gets written.
        app.screen.query_one(TabbedContent).active = "tab-training"
        await pilot.pause()
        await set_input(pilot, "#opt-training-max_steps", "2")
        await set_input(pilot, "#opt-training-eval_steps", "2")
        toml_text = app.screen.query_one("#toml").text
        assert "max_steps = 2" in toml_text and str(tiny_model_dir) in toml_text
        command = static_text(app, "#command")
        assert "tunewiz train " in command

        await pilot.press("ctrl+t")
        await settle(app, pilot)
        assert screen_name(app) == "TrainLiveScreen"
        run_dirs = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
        assert len(run_dirs) == 1
        written = (tmp_path / "runs" / f"{run_dirs[0].name}.toml").read_text(encoding="utf-8")
        assert written == toml_text
        cfg = RunConfig.load(run_dirs[0] / "config.toml")
        assert cfg.training.max_steps == 2 and cfg.data.on_bad_rows == "skip"
        assert cfg.model.model == str(tiny_model_dir)
        # Reopened later, the wizard shows the runs; the next run gets a name of its own.
        assert app.wizard.screen == "start" and app.wizard.get("name") == ""
    info = wait_for_end(run_dirs[0])
    assert info.state == "finished", info.error


async def test_closed_wizard_reopens_where_it_was(tmp_path):
    state, runs_dir = tmp_path / "state", tmp_path / "runs"
    app = make_app(state, runs_dir, resume=False, detect_gpus=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n", "down", "enter")
        await settle(app, pilot)
        assert screen_name(app) == "DataScreen"
        await set_input(pilot, "#data-columns", "prompt=question,response=answer")
        app.screen.read_choices()
    saved = json.loads((state / "wizard.json").read_text(encoding="utf-8"))
    assert saved["screen"] == "data" and saved["config"]["data"]["task"] == "chat"

    again = make_app(state, runs_dir, detect_gpus=False)
    async with again.run_test(size=(80, 24)) as pilot:
        await settle(again, pilot)
        assert screen_name(again) == "DataScreen"
        assert again.screen.query_one("#data-columns", Input).value == (
            "prompt=question,response=answer"
        )
        await pilot.press("escape")  # Back keeps the choice made on the task screen
        assert screen_name(again) == "TaskScreen"
        assert again.screen.query_one("#tasks").highlighted == 1


async def test_unreadable_data_is_said_in_place_and_the_screen_stays_usable(tmp_path):
    app = make_app(tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n", "enter")
        await settle(app, pilot)
        assert "48 of 48 rows usable" in static_text(app, "#data-status")
        await set_input(pilot, "#data-path", str(tmp_path / "missing.jsonl"), submit=True)
        assert screen_name(app) == "DataScreen"  # no dialog: the error is in place
        status = static_text(app, "#data-status")
        assert status.startswith("✗") and "missing.jsonl: data file not found" in status
        text = screen_text(app)
        assert "Traceback" not in text and "48 of 48" not in text  # nothing stale
        assert app.screen.report is None and not app.screen.query_one("#preview").row_count
        assert app.screen.query_one("#data-path", Input).value.endswith("missing.jsonl")
        await pilot.press("ctrl+n")  # never a dead end: on to Model & memory
        await settle(app, pilot)
        assert screen_name(app) == "ModelScreen"
        await pilot.press("escape")
        assert screen_name(app) == "DataScreen"


async def test_a_bug_in_a_worker_goes_to_the_log(tmp_path, monkeypatch):
    from tunewiz.tui import backend

    def broken(name):
        raise RuntimeError("estimator exploded")

    monkeypatch.setattr(backend, "load_arch", broken)
    app = make_app(
        tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False, start_at="model"
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert screen_name(app) == "ModelScreen"  # a notification, not a dialog taking keys
        said = notifications(app)
        assert "RuntimeError: estimator exploded" in said and "Traceback" not in said
    logged = (tmp_path / "state" / "tui.log").read_text(encoding="utf-8")
    assert "Traceback" in logged and "estimator exploded" in logged


async def test_start_opens_a_running_run_in_its_live_panel(tmp_path):
    run_dir = tmp_path / "runs" / "busy"
    run_dir.mkdir(parents=True)
    RunConfig(name="busy").save(run_dir / "config.toml")
    runs.write_status(
        run_dir, state="running", pid=os.getpid(), host=runs.this_host(), step=3, total_steps=10
    )
    app = make_app(tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        text = screen_text(app)
        assert "busy" in text and "running" in text and "3/10" in text
        await pilot.press("o")
        await pilot.pause()
        assert screen_name(app) == "TrainLiveScreen"
        assert app.screen.run_dir == run_dir


async def test_preset_changes_every_form_and_the_config(tmp_path):
    app = make_app(
        tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False, start_at="settings"
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert screen_name(app) == "SettingsScreen"
        quick = app.wizard.config["training"]["max_steps"]
        await pilot.click("#preset-thorough")
        await pilot.pause()
        cfg = app.wizard.run_config()
        assert app.wizard.preset == "thorough"
        assert cfg.training.max_steps != quick
        # Every option row on every tab shows the value the preset gave it.
        rows = list(app.screen.query(OptionRow))
        assert {r.section for r in rows} >= {"model", "data", "training"}
        for row in rows:
            expected = getattr(getattr(cfg, row.option.section), row.option.name)
            control = app.screen.query_one(f"#opt-{row.option.section}-{row.option.name}")
            if isinstance(control, Switch):
                assert control.value == bool(expected), row.dotted
            elif isinstance(control, Select):
                assert control.value == expected, row.dotted
            else:
                assert control.value == format_value(expected), row.dotted
        assert f"max_steps = {cfg.training.max_steps}" in app.screen.query_one("#toml").text


async def test_bad_option_value_is_refused_where_it_was_typed(tmp_path):
    app = make_app(
        tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False, start_at="settings"
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        app.screen.query_one(TabbedContent).active = "tab-training"
        await pilot.pause()
        before = app.wizard.config["training"]["learning_rate"]
        await set_input(pilot, "#opt-training-learning_rate", "fast")
        assert app.wizard.config["training"]["learning_rate"] == before
        row = app.screen.query_one("#row-training-learning_rate")
        assert row.has_class("-invalid") and "expected a number" in screen_text(app)


async def test_a_run_name_a_terminal_cannot_show_is_refused_not_a_crash(tmp_path):
    app = make_app(
        tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False, start_at="settings"
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await set_input(pilot, "#run-name", "mine")
        await set_input(pilot, "#run-name", "bell\x07")  # pasted, say
        assert app.wizard.get("name") == "mine" and app.is_running
        assert "printable" in " ".join(n.message for n in app._notifications)


async def test_dataset_text_is_shown_literally(tmp_path):
    rows = [
        {"instruction": f"Explain [bold]markup[/bold] #{i}", "output": f"Use [red]{i}[/red]"}
        for i in range(6)
    ]
    path = tmp_path / "markup.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    app = make_app(
        tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False, start_at="data"
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await set_input(pilot, "#data-path", str(path), submit=True)
        app.screen.query_one(TabbedContent).active = "tab-preview"
        await settle(app, pilot)
        text = screen_text(app)
        assert "[bold]markup[/bold] #0" in text  # in the preview table, as typed
        assert "Use [red]0[/red]" in text  # in the masking preview, as typed


async def test_data_preview_marks_tool_parts_left_out(tmp_path):
    """The bundled model's template cannot express tools: the masking preview shows where the
    call and its result were, so the answer does not look invented."""
    row = {
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "1", "function": {"name": "get_weather", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "1", "content": "-4"},
            {"role": "assistant", "content": "It is -4 in Oslo."},
        ]
    }
    path = tmp_path / "tools.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    app = make_app(
        tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False, start_at="data"
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        app.wizard.set("data.task", "chat")
        await set_input(pilot, "#data-path", str(path), submit=True)
        app.screen.query_one(TabbedContent).active = "tab-preview"
        await settle(app, pilot)
        masking = static_text(app, "#masking")
        question, call, result, answer = (
            masking.index(s)
            for s in ("Oslo?", "[tool call removed]", "[function result removed]", "It is -4")
        )
        assert question < call < result < answer
        assert "left out of the text" in static_text(app, "#masking-help")
        # The user's own row shows the call (not `assistant: None`).
        assert "[calls]" in screen_text(app) and "None" not in screen_text(app)
        assert "cannot express tools" in static_text(app, "#data-evidence")


def test_data_masking_text_says_removed_parts_literally():
    from tunewiz.tui.screens.data import masking_text

    text = masking_text([("a", False), ("b", True)], [(1, "tool call"), (9, "[x]")])
    assert text.plain == "a[tool call removed]b[[x] removed]"
    assert [s.style for s in text.spans][1] == "dim italic yellow"
