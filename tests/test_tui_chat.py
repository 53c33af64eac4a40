"""The chat screen: streaming into panes, cancel, literal text, compare, settings.

Fast tests inject a scripted model (loader + session) so that timing and text
are under the test's control; the real ones load the tiny model and a LoRA run
built with peft (tests/chat_runs.py) through tunewiz.core.loading.load_for_chat.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from textual.app import App
from textual.widgets import Input, Select

from tunewiz.tui.screens.chat import ChatScreen
from tunewiz.tui.widgets.chat_log import ChatLog, ChatMessage

MARKUP_REPLY = ["Use ", "[bold red]x[/]", " and ", "[link=http://e.x]y[/link]", "."]


class ScriptedSession:
    """Streams the loaded script's pieces; `gate` (a Semaphore) holds each piece until released."""

    def __init__(self, loaded, *, system=None, settings=None):
        self.loaded, self.system, self.settings = loaded, system, settings
        self.history: list = []
        self.notices: list[str] = []
        self.last_reply = None
        self.prompts: list[str] = []

    def set_system(self, text):
        self.system = text

    def reset(self):
        self.history.clear()

    def stream(self, text, *, cancel: threading.Event):
        self.prompts.append(text)
        sent = 0
        for piece in self.loaded.pieces:
            if self.loaded.gate is not None:  # one permit per piece
                while not self.loaded.gate.acquire(timeout=0.01):
                    if cancel.is_set():
                        break
            if cancel.is_set():
                break
            sent += 1
            yield piece
        self.history += [text, "".join(self.loaded.pieces[:sent])]
        self.last_reply = SimpleNamespace(tokens=sent)


def scripted(pieces, gate=None):
    loads: list = []

    def loader(target, checkpoint, runs_dir):
        loads.append(checkpoint)
        return SimpleNamespace(pieces=list(pieces), gate=gate, label=str(checkpoint))

    return loader, loads


class ChatApp(App):
    def __init__(self, screen_factory):
        super().__init__()
        self.screen_factory = screen_factory

    def on_mount(self) -> None:
        self.push_screen(self.screen_factory())


async def send(pilot, text: str) -> None:
    inp = pilot.app.screen.query_one("#chat-input", Input)
    inp.value = text
    inp.focus()
    await pilot.press("enter")


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def replies(screen, pane: str = "a") -> list[ChatMessage]:
    return [
        m for m in screen.query_one(f"#chat-pane-{pane}", ChatLog).messages if m.role == "assistant"
    ]


async def test_reply_streams_in_pieces_and_markup_stays_literal(tmp_path):
    loader, loads = scripted(MARKUP_REPLY)
    app = ChatApp(lambda: ChatScreen("some-model", loader=loader, session_factory=ScriptedSession))
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "how do I say [b]hi[/b]?")
        await settle(pilot)
        screen = app.screen
        (reply,) = replies(screen)
        assert reply.chunks == len(MARKUP_REPLY)
        shown = str(reply.render())
        assert "[bold red]x[/]" in shown and "[link=http://e.x]y[/link]" in shown
        user = [m for m in screen.query_one("#chat-pane-a", ChatLog).messages if m.role == "user"]
        assert "[b]hi[/b]" in str(user[0].render())
        assert "5 tokens" in reply.footer
        # the model is loaded once and kept for the next turn
        await send(pilot, "again")
        await settle(pilot)
        assert loads == [None] and len(replies(screen)) == 2


async def test_escape_cancels_a_reply_midway(tmp_path):
    gate = threading.Semaphore(0)
    loader, _ = scripted(["one ", "two ", "three"], gate=gate)
    app = ChatApp(lambda: ChatScreen("m", loader=loader, session_factory=ScriptedSession))
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "count")
        gate.release()  # let the first piece through, hold the rest
        reply = None
        for _ in range(500):
            await pilot.pause(0.01)
            found = replies(app.screen)
            if found and found[0].chunks >= 1:
                reply = found[0]
                break
        assert reply is not None
        assert app.screen.generating
        await pilot.press("escape")
        await settle(pilot)
        assert not app.screen.generating
        assert reply.chunks == 1 and reply.body == "one " and "stopped" in reply.footer
        # Esc again, now idle, does not pop the only screen
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)


async def test_settings_panel_validates_and_applies(tmp_path):
    loader, _ = scripted(["ok"])
    app = ChatApp(lambda: ChatScreen("m", loader=loader, session_factory=ScriptedSession))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.press("f2")
        await pilot.pause()
        assert not screen.query_one("#chat-settings").has_class("-hidden")
        screen.query_one("#set-temperature", Input).value = "0.2"
        screen.query_one("#set-max_new_tokens", Input).value = "0"
        screen.query_one("#set-system", Input).value = "Answer in [red]one[/] word."
        await pilot.pause()
        assert screen.settings.temperature == 0.2
        assert screen.settings.max_new_tokens == 256  # 0 rejected, previous value kept
        help_line = screen.query_one("#help-max_new_tokens")
        assert help_line.has_class("-error") and "at least 1" in str(help_line.render())
        screen.query_one("#set-greedy").focus()  # below the fold at 80x24: keyboard reaches it
        await pilot.press("space")
        await pilot.pause()
        assert screen.settings.greedy is True
        await send(pilot, "hi")
        await settle(pilot)
        session = screen._sessions["a"][1]
        assert session.system == "Answer in [red]one[/] word."
        assert session.settings.temperature == 0.2 and session.settings.greedy


def test_tiny_model_streams_a_real_reply(tiny_model_dir):
    """The real path: tunewiz.core.loading.load_for_chat + tunewiz.core.chat.ChatSession in a worker."""
    import asyncio

    async def run():
        app = ChatApp(lambda: ChatScreen(str(tiny_model_dir)))
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            screen.query_one("#set-max_new_tokens", Input).value = "24"
            screen.query_one("#set-greedy").value = True
            await pilot.pause()
            await send(pilot, "Hello there")
            await settle(pilot)
            (reply,) = replies(screen)
            assert reply.chunks >= 2, reply.body  # arrived in pieces, not at once
            session = screen._sessions["a"][1]
            assert reply.body == session.last_reply.text
            notes = [m.body for m in screen.query_one(ChatLog).messages if m.role == "notice"]
            assert any(n.startswith("loaded ") for n in notes)
            assert "/" not in screen.query_one(ChatLog).border_title  # a name, not a path

    asyncio.run(run())


@pytest.mark.slow
def test_compare_lora_checkpoint_with_base_side_by_side(tmp_path, tiny_model_dir):
    import asyncio

    from chat_runs import make_run

    run = make_run(tmp_path / "runs", tiny_model_dir, steps=(2, 4))

    async def run_app():
        app = ChatApp(lambda: ChatScreen(str(run), runs_dir=run.parent))
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            assert screen.checkpoint == "final"
            values = [v for _, v in screen.query_one("#chat-model", Select)._options]
            assert values == ["checkpoint-2", "checkpoint-4", "final", "base"]
            screen.query_one("#set-max_new_tokens", Input).value = "12"
            await pilot.pause()
            await pilot.press("f3")  # compare with the base model
            await pilot.pause()
            assert screen.compare_with == "base"
            assert not screen.query_one("#chat-pane-b").has_class("-hidden")
            await send(pilot, "Hi")
            await settle(pilot)
            (a,) = replies(screen, "a")
            (b,) = replies(screen, "b")
            assert a.chunks >= 1 and b.chunks >= 1
            # same prompt, same seed: sessions sampled with the compare seed
            sa, sb = screen._sessions["a"][1], screen._sessions["b"][1]
            assert sa.settings.seed == sb.settings.seed == 0
            assert sa.loaded.checkpoint == "final" and sb.loaded.checkpoint == "base"
            assert sa.loaded.method == "lora"
            # switch pane A to another checkpoint: next turn loads it
            screen.query_one("#chat-model", Select).value = "checkpoint-2"
            await pilot.pause()
            await send(pilot, "Again")
            await settle(pilot)
            assert screen._sessions["a"][1].loaded.checkpoint == "checkpoint-2"
            assert len(replies(screen, "b")) == 2

    asyncio.run(run_app())


def test_a_failing_load_shows_an_error_not_a_traceback():
    import asyncio

    from tunewiz.core.errors import UserError

    def loader(target, checkpoint, runs_dir):
        raise UserError("could not load the model 'nope'", hint="give a local folder")

    async def run():
        app = ChatApp(lambda: ChatScreen("nope", loader=loader, session_factory=ScriptedSession))
        async with app.run_test(size=(80, 24)) as pilot:
            await send(pilot, "hi")
            await settle(pilot)
            (reply,) = replies(app.screen)
            assert reply.footer == "(failed)"
            assert not app.screen.generating
            assert any("could not load" in str(n.message) for n in app._notifications)

    asyncio.run(run())


def fake_run(root: Path) -> Path:
    """A run folder with two adapter checkpoints (contents never loaded: the loader is scripted)."""
    run = root / "demo-run"
    run.mkdir()
    (run / "config.toml").write_text('name = "demo-run"\n')
    for step, ev in ((20, 2.31), (40, 2.12)):
        ckpt = run / f"checkpoint-{step}"
        ckpt.mkdir()
        (ckpt / "adapter_config.json").write_text("{}")
        (ckpt / "adapter_model.safetensors").write_bytes(b"")  # weights: never loaded here
        history = [{"step": step, "loss": 2.0}, {"step": step, "eval_loss": ev}]
        (ckpt / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    return run


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_chat_snapshot(snap_compare, size):
    loader, _ = scripted(MARKUP_REPLY)
    app = ChatApp(
        lambda: ChatScreen("SmolLM2-135M-Instruct", loader=loader, session_factory=ScriptedSession)
    )

    async def before(pilot):
        pilot.app.screen.query_one("#chat-input").cursor_blink = False  # a blink is a clock
        await send(pilot, "Say something with [brackets]")
        await settle(pilot)
        for m in replies(pilot.app.screen):
            m.finish("5 tokens")  # the measured rate varies: pin the footer

    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_chat_compare_snapshot(snap_compare, tmp_path, size):
    run = fake_run(tmp_path)
    loader, _ = scripted(MARKUP_REPLY)
    app = ChatApp(
        lambda: ChatScreen(
            str(run), runs_dir=tmp_path, loader=loader, session_factory=ScriptedSession
        )
    )

    async def before(pilot):
        for inp in pilot.app.screen.query(Input):
            inp.cursor_blink = False  # a blink is a clock
        await pilot.press("f3")
        if size[0] >= 120:
            await pilot.press("f2")
        await send(pilot, "Say something with [brackets]")
        await settle(pilot)
        for pane in ("a", "b"):
            for m in replies(pilot.app.screen, pane):
                m.finish("5 tokens")
        pilot.app.screen.query_one("#chat-input").focus()
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=before)


async def test_a_run_without_checkpoints_talks_to_its_base_model(tmp_path):
    run = tmp_path / "fresh-run"
    run.mkdir()
    (run / "config.toml").write_text('name = "fresh-run"\n')
    loader, loads = scripted(["hi"])
    app = ChatApp(
        lambda: ChatScreen(
            str(run), runs_dir=tmp_path, loader=loader, session_factory=ScriptedSession
        )
    )
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert screen.checkpoint == "base"
        assert screen.query_one("#chat-model", Select).value == "base"
        await send(pilot, "hello")
        await settle(pilot)
        assert loads == ["base"] and replies(screen)[0].body == "hi"


def test_opening_chat_and_live_screens_imports_no_torch(tmp_path):
    """Both screens open without torch/transformers: only the chat worker loads them."""
    import subprocess
    import sys
    import textwrap

    run = fake_run(tmp_path)
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from textual.app import App
        from tunewiz.tui.screens.chat import ChatScreen
        from tunewiz.tui.screens.train_live import TrainLiveScreen

        class A(App):
            def on_mount(self):
                self.push_screen(TrainLiveScreen(Path({str(run)!r})))
                self.push_screen(ChatScreen({str(run)!r}, runs_dir=Path({str(tmp_path)!r})))

        async def main():
            app = A()
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.pause()
                assert type(app.screen).__name__ == "ChatScreen"
        asyncio.run(main())
        heavy = [m for m in ("torch", "transformers", "peft") if m in sys.modules]
        print("HEAVY", heavy)
        """
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


async def test_leaving_the_screen_stops_a_reply_in_progress():
    gate = threading.Semaphore(0)  # never released: the reply would wait forever
    loader, _ = scripted(["never"], gate=gate)
    app = ChatApp(lambda: ChatScreen("m", loader=loader, session_factory=ScriptedSession))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await send(pilot, "hi")
        await pilot.pause(0.05)
        assert screen.generating
        await app.pop_screen()
        await pilot.pause()
        assert screen.cancel_event.is_set()
        await asyncio.wait_for(app.workers.wait_for_complete(), 10)  # the worker really ends
