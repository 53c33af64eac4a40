"""One line that says where in the wizard the user is."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

STEPS = ("Start", "Task", "Data", "Model & memory", "Settings")


class StepBar(Static):
    DEFAULT_CSS = """
    StepBar { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, current: int) -> None:
        super().__init__(self.render_steps(current))

    @staticmethod
    def render_steps(current: int) -> Text:
        text = Text("tunewiz  ", style="bold")
        for i, name in enumerate(STEPS):
            if i:
                text.append(" › ", style="dim")
            style = "bold reverse" if i == current else ("" if i < current else "dim")
            text.append(f"{i + 1} {name}", style=style)
        return text
