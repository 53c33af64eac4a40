"""SVG snapshots of the wizard's screens at 80x24 and 120x40 (pytest-textual-snapshot).

Everything on screen is fixed: a temporary working folder with known files, a
relative runs folder, a run with a fixed status, a catalog GPU instead of the
machine's own, and the bundled sample scanned before the picture is taken.
Regenerate after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tui_pilot import settle
from tunewiz.core import runs
from tunewiz.core.config import RunConfig
from tunewiz.tui.app import make_app

SIZES = [(80, 24), (120, 40)]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-data.jsonl").write_text('{"prompt": "hi", "completion": "hello"}\n')
    (tmp_path / "notes").mkdir()
    run_dir = tmp_path / "runs" / "smol-facts"
    run_dir.mkdir(parents=True)
    RunConfig(name="smol-facts").save(run_dir / "config.toml")
    runs.write_status(
        run_dir,
        state="finished",
        created_at=1_700_000_000.0,
        started_at=1_700_000_000.0,
        ended_at=1_700_000_125.0,
        step=30,
        total_steps=30,
        last_loss=1.2345,
        best_eval_loss=1.4321,
    )
    return tmp_path


def wizard_at(workdir: Path, step: str):
    # The state folder lives outside the working folder: the data screen's file tree shows
    # the working folder, and the state is written while the tree lists it.
    state_dir = workdir.parent / f"{workdir.name}-state"
    app = make_app(state_dir, Path("runs"), resume=False, detect_gpus=False, start_at=step)
    app.wizard.gpu = "RTX 4090"
    return app


async def settled(pilot) -> None:
    await settle(pilot.app, pilot)
    steady_cursors(pilot.app)
    await pilot.pause()


def steady_cursors(app) -> None:
    # A blinking cursor would make the picture depend on the moment it is taken.
    from textual.widgets import Input, TextArea

    for widget in app.screen.query("Input, TextArea").results((Input, TextArea)):
        widget.cursor_blink = False


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("step", ["start", "task", "data", "model", "settings"])
def test_screen(snap_compare, workdir, step, size):
    assert snap_compare(wizard_at(workdir, step), terminal_size=size, run_before=settled)


def test_data_tokens_tab(snap_compare, workdir):
    async def tokens_tab(pilot) -> None:
        await settle(pilot.app, pilot)
        pilot.app.screen.query_one("#data-tabs").active = "tab-tokens"
        await settled(pilot)

    assert snap_compare(wizard_at(workdir, "data"), terminal_size=(120, 40), run_before=tokens_tab)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_estimate_only(snap_compare, workdir, size):
    """Start, `e`: Model & memory straight away, with the data-to-price field."""

    async def estimate(pilot) -> None:
        await settled(pilot)
        await pilot.press("e")
        await settled(pilot)
        pilot.app.clear_notifications()  # the preset notice would time the picture

    app = make_app(workdir.parent / "estimate-state", Path("runs"), resume=False, detect_gpus=False)
    app.wizard.gpu = "RTX 4090"
    assert snap_compare(app, terminal_size=size, run_before=estimate)


def test_augment_review(snap_compare, workdir, monkeypatch):
    """Data, Ctrl+G, Ctrl+R with a scripted model: the sample's first rows beside their variants."""
    from tests.test_tui_augment import scripted
    from tunewiz.tui import backend

    monkeypatch.setattr(backend, "augment_generator", lambda model: scripted)

    async def review(pilot) -> None:
        await settle(pilot.app, pilot)
        await pilot.press("ctrl+g")
        await settled(pilot)
        pilot.app.screen.query_one("#aug-rows").value = "3"
        await pilot.press("ctrl+r")
        await settled(pilot)
        await pilot.press("down", "space")  # one variant dropped: its mark shows
        await settled(pilot)

    assert snap_compare(wizard_at(workdir, "data"), terminal_size=(120, 40), run_before=review)
