"""The Evaluate screen: a saved evaluation shown (summary, chart, rows), filters, tags, chat on
a row, a run in a cancellable worker, the keys that reach it, and snapshots.

The saved evaluation is built by tunewiz.core.eval's own summarise/write_all from scripted
generations, so the screen reads exactly what `tunewiz eval` writes, and no model loads.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import DataTable, Input, ProgressBar, Select, Static

from tunewiz.core.eval.generate import Generation
from tunewiz.core.eval.plan import EvalRequest, Plan
from tunewiz.core.eval.prompts import EvalItem
from tunewiz.core.eval.report import load_eval, write_all
from tunewiz.core.eval.run import Outputs
from tunewiz.core.eval.summary import summarise
from tunewiz.tui.screens.evaluate import WORSE, EvaluateScreen

ITEMS = [
    EvalItem("What is the capital of Lumen Isle?", "The capital is Harrowmere.", where="eval:1"),
    EvalItem("What is 2+2?", "Four.", where="eval:2"),
    EvalItem("Who rules Lumen Isle?", "The Tide Council.", split="train", where="train:1"),
]
SAID = {
    "base": ["Nova Haven", "Four.", "The [bold]king[/]"],
    "checkpoint-10": ["The capital is Harrowmere.", "Four.", "The Tide Council."],
    "checkpoint-20": ["The capital is Harrowmere.", "The Tide Council.", "The Tide Council."],
}


def fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    (run / "config.toml").write_text('name = "demo"\n')
    for step, loss in ((10, 1.9), (20, 2.1)):
        ckpt = run / f"checkpoint-{step}"
        ckpt.mkdir()
        (ckpt / "adapter_config.json").write_text("{}")
        (ckpt / "adapter_model.safetensors").write_bytes(b"")  # weights: never loaded here
        history = [{"step": step, "loss": 2.0}, {"step": step, "eval_loss": loss}]
        (ckpt / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    req = EvalRequest(str(run), runs_dir=str(run.parent))
    plan = Plan(
        req,
        run,
        list(SAID),
        {"checkpoint-10": 1.9, "checkpoint-20": 2.1},
        {"checkpoint-10": 10, "checkpoint-20": 20},
        None,
        None,
        run / "eval" / "20260101-000000",
    )
    out = Outputs(plan, ITEMS, [("train:1", "The Tide Council.")], [(0.0, 0)])
    for model, texts in SAID.items():
        out.gens[model] = {(0.0, 0): [Generation(t, 5, True) for t in texts]}
    result = summarise(out)
    result.summary["created"], result.summary["seconds"] = "2026-01-01T00:00:00", 1.0
    write_all(result, plan.out_dir)
    return run


class EvalApp(App):
    def __init__(self, run: Path):
        super().__init__()
        self.run_dir = run

    def on_mount(self) -> None:
        self.push_screen(EvaluateScreen(self.run_dir))


async def test_saved_evaluation_is_shown_with_verdict_deltas_and_chart(tmp_path):
    run = fake_run(tmp_path)
    async with EvalApp(run).run_test(size=(120, 40)) as pilot:
        screen = pilot.app.screen
        verdict = str(screen.query_one("#ev-verdict", Static).render())
        assert "Keep checkpoint-10" in verdict and "right on 1/1 training" in verdict
        table = screen.query_one("#ev-summary", DataTable)
        assert [str(c.label) for c in table.columns.values()][1:] == list(SAID)
        cells = [table.get_row_at(i) for i in range(table.row_count)]
        exact = next(r for r in cells if r[0].plain == "heldout exact match")
        assert exact[2].plain == "1.000 +0.500" and exact[2].spans[-1].style == "green"
        assert exact[3].plain == "0.500" or exact[3].spans[-1].style in ("red", "green")
        chart = screen.query_one("#ev-chart", Static).render()
        assert "★ keep" in str(chart) and "checkpoint-10" in str(chart)


async def test_rows_filter_by_got_worse_and_category(tmp_path):
    run = fake_run(tmp_path)
    async with EvalApp(run).run_test(size=(120, 40)) as pilot:
        screen = pilot.app.screen
        screen.query_one("#ev-filter", Select).value = WORSE
        await pilot.pause()
        # checkpoint-20 answers "What is 2+2?" with a training answer; the base was right
        assert [r["id"] for r in screen.visible_rows()] == [2]
        screen.query_one("#ev-filter", Select).value = "copied_training_answer"
        await pilot.pause()
        assert [r["id"] for r in screen.visible_rows()] == [2]
        screen.query_one("#ev-filter", Select).value = "wrong"
        await pilot.pause()
        assert [r["id"] for r in screen.visible_rows()] == [1, 2, 3]
        assert screen.query_one("#ev-rows", DataTable).row_count == 3
        screen.query_one("#ev-filter", Select).value = ""
        await pilot.pause()
        assert screen.query_one("#ev-rows", DataTable).row_count == 3


async def test_a_row_opens_side_by_side_literally_and_takes_tags(tmp_path):
    run = fake_run(tmp_path)
    async with EvalApp(run).run_test(size=(120, 40)) as pilot:
        screen = pilot.app.screen
        screen.query_one("#ev-tabs").active = "ev-tab-rows"
        table = screen.query_one("#ev-rows", DataTable)
        table.focus()
        table.move_cursor(row=2)
        await pilot.pause()
        panes = {p.border_title: str(p.render()) for p in screen.query(".ev-pane")}
        assert panes["base (greedy)"].startswith("The [bold]king[/]")  # literal, not bold
        assert set(panes) == {"prompt", "reference", "base (greedy)", "checkpoint-10 (greedy)"}
        await pilot.press("t")
        field = screen.query_one("#ev-tag", Input)
        field.value = "hallucination"
        await pilot.press("enter")
        saved = load_eval(run / "eval" / "20260101-000000")
        assert next(r for r in saved.rows if r["id"] == 3)["tags"] == ["hallucination"]
        assert saved.summary["tags"] == {"hallucination": 1}
        await pilot.press("x")
        saved = load_eval(run / "eval" / "20260101-000000")
        assert next(r for r in saved.rows if r["id"] == 3)["tags"] == []
        # the automatic categories were never touched by tagging
        assert any(c["name"] == "wrong" for o in saved.rows[2]["outputs"] for c in o["categories"])


async def test_c_on_a_row_opens_chat_on_that_checkpoint_with_that_prompt(tmp_path):
    from tunewiz.tui.screens.chat import ChatScreen

    run = fake_run(tmp_path)
    async with EvalApp(run).run_test(size=(120, 40)) as pilot:
        screen = pilot.app.screen
        screen.query_one("#ev-tabs").active = "ev-tab-rows"
        screen.query_one("#ev-rows", DataTable).focus()
        await pilot.press("c")
        await pilot.pause()
        chat = pilot.app.screen
        assert isinstance(chat, ChatScreen)
        assert chat.checkpoint == "checkpoint-10"
        assert chat.query_one("#chat-input", Input).value == ITEMS[0].prompt


async def test_running_shows_progress_and_escape_cancels(tmp_path, monkeypatch):
    from tunewiz.core.eval import EvalCancelled
    from tunewiz.tui import backend

    run = fake_run(tmp_path)
    seen: dict = {}
    reached = threading.Event()

    def fake_evaluate(req, progress, cancel):
        seen["req"] = req
        progress(3, 12, "base")
        reached.set()
        if not cancel.wait(10):
            raise AssertionError("not cancelled")
        raise EvalCancelled()

    monkeypatch.setattr(backend, "evaluate", fake_evaluate)
    async with EvalApp(run).run_test(size=(120, 40)) as pilot:
        screen = pilot.app.screen
        screen.query_one("#ev-temps", Input).value = "0,0.7"
        await pilot.press("ctrl+r")
        reached.wait(5)
        await pilot.pause()
        assert screen.query_one("#ev-progress", ProgressBar).progress == 3
        assert "base: 3/12 prompts" in str(screen.query_one("#ev-status").render())
        await pilot.press("escape")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert "stopped" in str(screen.query_one("#ev-status").render())
        assert seen["req"].temperatures == [0.0, 0.7] and seen["req"].checkpoints == ["all"]
        assert isinstance(pilot.app.screen, EvaluateScreen)


async def test_a_failed_evaluation_shows_a_message_not_a_traceback(tmp_path, monkeypatch):
    from tunewiz.tui.app import make_app

    run = fake_run(tmp_path)
    app = make_app(tmp_path / "state", run.parent, resume=False, detect_gpus=False)
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(EvaluateScreen(run))
        await pilot.pause()
        app.screen.query_one("#ev-checkpoints", Input).value = "99"
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        from tunewiz.tui.widgets.error_dialog import ErrorDialog

        assert isinstance(app.screen, ErrorDialog)
        assert "no checkpoint '99'" in str(app.screen.message)


async def test_v_on_the_start_screen_and_ctrl_e_in_chat_open_it(tmp_path):
    from tunewiz.tui.app import make_app

    run = fake_run(tmp_path)
    (run / "status.json").write_text(json.dumps({"state": "finished"}))
    app = make_app(tmp_path / "state", run.parent, resume=False, detect_gpus=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("v")
        await pilot.pause()
        assert isinstance(app.screen, EvaluateScreen) and app.screen.run_dir == run
        await pilot.press("c")  # chat on the first row ...
        await pilot.pause()
        await pilot.press("ctrl+e")  # ... and back to an Evaluate screen from the chat
        await pilot.pause()
        assert isinstance(app.screen, EvaluateScreen)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_evaluate_snapshot(snap_compare, tmp_path, size):
    run = fake_run(tmp_path)

    async def before(pilot):
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False  # a blink is a clock
        pilot.app.screen.query_one("#ev-status").update("showing 20260101-000000")
        await pilot.pause()

    assert snap_compare(EvalApp(run), terminal_size=size, run_before=before)


async def test_e_in_the_live_panel_opens_it_on_that_run(tmp_path):
    from test_tui_live import LiveApp
    from test_tui_live import make_run as make_live_run

    run = make_live_run(tmp_path)
    app = LiveApp(run)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(app.screen, EvaluateScreen) and app.screen.run_dir == run
        assert "Ctrl+R runs the evaluation" in str(app.screen.query_one("#ev-status").render())
