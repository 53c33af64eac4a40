"""The data screen's Augment… review: generate (scripted model), keep or drop each variant,
accept into a new file that becomes the run's data; Esc and failures write nothing."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from textual.widgets import Input

from tests.tui_pilot import settle
from tunewiz.core.data import SAMPLE_DATASET
from tunewiz.core.errors import UserError
from tunewiz.tui import backend
from tunewiz.tui.app import make_app
from tunewiz.tui.screens.augment import AugmentScreen, parse_choices
from tunewiz.tui.screens.data import DataScreen


def scripted(chats: list[list[dict]], temperature: float) -> list[str]:
    """Stands in for the model: a rephrasing per temperature, an empty one at 1.0."""
    out = []
    for p in (chat[-1]["content"] for chat in chats):
        q = p.split("Question: ", 1)[1].split("\n")[0]
        if "reverse question" in p:
            out.append(f"Reverse of: {q}")
        elif temperature == 1.0:
            out.append("")  # dropped by core and counted as empty
        else:
            out.append(f"Rephrased at {temperature}: {q}")
    return out


@pytest.fixture
def facts(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "facts.jsonl"
    path.parent.mkdir()
    path.write_text("".join(SAMPLE_DATASET.read_text().splitlines(keepends=True)[:3]))
    return path


def wizard(tmp_path: Path):
    return make_app(
        tmp_path / "state", tmp_path / "runs", resume=False, detect_gpus=False, start_at="data"
    )


def status(app) -> str:
    return str(app.screen.query_one("#aug-status").render())


async def open_augment(app, pilot, data: Path) -> AugmentScreen:
    await settle(app, pilot)
    field = app.screen.query_one("#data-path", Input)
    field.value = str(data)
    await pilot.press("enter")
    await settle(app, pilot)
    await pilot.press("ctrl+g")
    await pilot.pause()
    assert isinstance(app.screen, AugmentScreen)
    app.screen.query_one("#aug-rows", Input).value = "2"
    return app.screen


async def test_review_uncheck_one_and_accept(tmp_path, facts, monkeypatch):
    loaded: list[str] = []
    monkeypatch.setattr(backend, "augment_generator", lambda m: loaded.append(m) or scripted)
    before = facts.read_text()
    app = wizard(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_augment(app, pilot, facts)
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert loaded == [app.wizard.get("model.model")]  # the run's model by default
        counts = str(screen.query_one("#aug-counts").render())
        assert counts == "6 of 6 variants kept · dropped: 2 empty"
        table = screen.query_one("#aug-table")
        assert app.focused is table and table.row_count == 6
        await pilot.press("down", "space")  # row 1's second rephrasing: dropped
        assert str(screen.query_one("#aug-counts").render()).startswith("5 of 6 variants kept")
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, DataScreen)
        out = facts.with_name("facts.augmented.jsonl")
        assert app.screen.query_one("#data-path", Input).value == str(out)
        assert app.wizard.get("data.data") == str(out)
        assert "8 of 8 rows usable" in str(app.screen.query_one("#data-status").render())
    made = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r.get("augmented_from"), r.get("augmentation")) for r in made] == [
        (None, None),
        ("facts.jsonl:1", "rephrase-0"),
        ("facts.jsonl:1", "reverse"),
        (None, None),
        ("facts.jsonl:2", "rephrase-0"),
        ("facts.jsonl:2", "rephrase-1"),
        ("facts.jsonl:2", "reverse"),
        (None, None),
    ]
    originals = before.splitlines()
    assert [json.dumps(r) for r in made if "augmented_from" not in r] == originals
    assert made[1]["instruction"] == "Rephrased at 0.3: " + json.loads(originals[0])["instruction"]
    assert made[1]["output"] == json.loads(originals[0])["output"]
    assert facts.read_text() == before  # the user's file is never written


async def test_escape_while_generating_writes_nothing(tmp_path, facts, monkeypatch):
    reached, release = threading.Event(), threading.Event()
    calls: list[float] = []

    def slow(chats: list[list[dict]], temperature: float) -> list[str]:
        calls.append(temperature)
        reached.set()
        release.wait(10)  # the model is busy when Esc is pressed
        return scripted(chats, temperature)

    monkeypatch.setattr(backend, "augment_generator", lambda m: slow)
    app = wizard(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_augment(app, pilot, facts)
        await pilot.press("ctrl+r")
        assert reached.wait(5)
        await pilot.press("escape")
        release.set()
        await settle(app, pilot)
        assert status(app) == "stopped; nothing was written"
        assert calls == [0.3]  # no generation after Esc
        assert screen.query_one("#aug-table").row_count == 0
        await pilot.press("ctrl+s")  # nothing to accept
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, DataScreen)
        assert app.wizard.get("data.data") == str(facts)
    assert sorted(p.name for p in facts.parent.iterdir()) == ["facts.jsonl"]


async def test_a_model_that_cannot_load_is_a_message(tmp_path, facts, monkeypatch):
    from tunewiz.tui.widgets.error_dialog import ErrorDialog

    def offline(model: str):
        raise UserError("not in the local cache and the hub cannot be reached", where=model)

    monkeypatch.setattr(backend, "augment_generator", offline)
    app = wizard(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_augment(app, pilot, facts)
        screen.query_one("#aug-model", Input).value = "someone/elsewhere"
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert isinstance(app.screen, ErrorDialog)
        assert "someone/elsewhere: not in the local cache" in str(app.screen.message)
    assert sorted(p.name for p in facts.parent.iterdir()) == ["facts.jsonl"]


def test_form_values_are_checked_with_the_field_named():
    ok = parse_choices(" default ", "2", "0.3, 1", "5", True)
    assert (ok.model, ok.variants, ok.temperatures, ok.rows) == ("default", 2, (0.3, 1.0), 5)
    for args, where in [
        (("default", "2", "hot", "5", True), "temperatures"),
        (("default", "2", "3", "5", True), "temperatures"),
        (("default", "x", "0.3", "5", True), "variants"),
        (("default", "0", "0.3", "5", False), "variants"),
        (("default", "2", "0.3", "0", True), "rows"),
        (("", "2", "0.3", "5", True), "model"),
    ]:
        with pytest.raises(UserError) as err:
            parse_choices(*args)
        assert err.value.where == where


async def test_data_without_questions_is_said_before_a_model_loads(tmp_path, monkeypatch):
    from tunewiz.tui.widgets.error_dialog import ErrorDialog

    loaded: list[str] = []
    monkeypatch.setattr(backend, "augment_generator", lambda m: loaded.append(m) or scripted)
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"text": "Lumen Isle lies west of the mainland."}\n')
    app = wizard(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        app.wizard.set("data.task", "text")
        await open_augment(app, pilot, notes)
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert isinstance(app.screen, ErrorDialog)
        assert "text data has none to rephrase" in str(app.screen.message)
    assert loaded == []
