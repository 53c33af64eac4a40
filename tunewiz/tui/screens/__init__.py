"""Screen registry: the wizard's five screens, and the live/chat screens (built separately).

Each screen's module is imported when the screen is first shown, so the first
frame does not wait for the others.
"""

from __future__ import annotations

from pathlib import Path

from textual.screen import Screen

#: How often the live panel reads the run folder: once a second is as fast as anyone reads
#: a loss, and it keeps the watching wizard under 3% of a core (README, "Watch a run live").
LIVE_POLL_S = 1.0


def wizard_screen(step: str) -> Screen:
    if step == "start":
        from tunewiz.tui.screens.start import StartScreen

        return StartScreen()
    if step == "task":
        from tunewiz.tui.screens.task import TaskScreen

        return TaskScreen()
    if step == "data":
        from tunewiz.tui.screens.data import DataScreen

        return DataScreen()
    if step == "model":
        from tunewiz.tui.screens.model import ModelScreen

        return ModelScreen()
    if step == "settings":
        from tunewiz.tui.screens.settings import SettingsScreen

        return SettingsScreen()
    raise ValueError(f"unknown wizard step {step!r}")


def live_screen(run_dir: Path) -> Screen:
    from tunewiz.tui.screens.train_live import TrainLiveScreen

    return TrainLiveScreen(run_dir, poll_interval=LIVE_POLL_S)


def chat_screen(
    target: str, checkpoint: str | None = None, runs_dir: Path | None = None, prompt: str = ""
) -> Screen:
    from tunewiz.tui.screens.chat import ChatScreen

    return ChatScreen(target, checkpoint=checkpoint, runs_dir=runs_dir, prompt=prompt)


def evaluate_screen(run_dir: Path) -> Screen:
    from tunewiz.tui.screens.evaluate import EvaluateScreen

    return EvaluateScreen(run_dir)
