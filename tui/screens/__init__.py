"""Screen registry: the wizard's five screens, and the live/chat screens (built separately).

The imports of the live and chat screens are guarded here, in one place, so the
wizard keeps working while those modules are missing or broken.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static

#: How often the live panel reads the run folder: once a second is as fast as anyone reads
#: a loss, and it keeps the watching wizard under 3% of a core (README, "Watch a run live").
LIVE_POLL_S = 1.0


def wizard_screen(step: str) -> Screen:
    if step == "start":
        from tui.screens.start import StartScreen

        return StartScreen()
    if step == "task":
        from tui.screens.task import TaskScreen

        return TaskScreen()
    if step == "data":
        from tui.screens.data import DataScreen

        return DataScreen()
    if step == "model":
        from tui.screens.model import ModelScreen

        return ModelScreen()
    if step == "settings":
        from tui.screens.settings import SettingsScreen

        return SettingsScreen()
    raise ValueError(f"unknown wizard step {step!r}")


def live_screen(run_dir: Path) -> Screen:
    try:
        from tui.screens.train_live import TrainLiveScreen
    except ImportError as exc:
        return Unavailable(f"The live training panel is not available ({exc}).\nRun: {run_dir}")
    return TrainLiveScreen(run_dir, poll_interval=LIVE_POLL_S)


def chat_screen(
    target: str, checkpoint: str | None = None, runs_dir: Path | None = None, prompt: str = ""
) -> Screen:
    try:
        from tui.screens.chat import ChatScreen
    except ImportError as exc:
        return Unavailable(f"The chat screen is not available ({exc}).")
    return ChatScreen(target, checkpoint=checkpoint, runs_dir=runs_dir, prompt=prompt)


def evaluate_screen(run_dir: Path) -> Screen:
    try:
        from tui.screens.evaluate import EvaluateScreen
    except ImportError as exc:
        return Unavailable(f"The Evaluate screen is not available ({exc}).\nRun: {run_dir}")
    return EvaluateScreen(run_dir)


class Unavailable(Screen):
    BINDINGS = [("escape", "app.pop_screen", "Back")]

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def compose(self) -> ComposeResult:
        yield Static(self.message, markup=False)
        yield Footer()
