"""Warnings about settings that do not suit the data scanned, each with its fix."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class DataChecks(Static):
    """Hidden while there is nothing to say; one yellow line per warning."""

    DEFAULT_CSS = """
    DataChecks { height: auto; padding: 0 1; color: $warning; display: none; }
    DataChecks.-shown { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)

    def show(self, warnings: list[str]) -> None:
        text = Text()
        for i, warning in enumerate(warnings):
            text.append(("\n" if i else "") + "⚠ " + warning)
        self.set_class(bool(warnings), "-shown")
        self.update(text)
