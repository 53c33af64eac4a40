"""Horizontal bars of a histogram: readable at 80 columns, drawn with block characters."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

BLOCKS = " ▏▎▍▌▋▊▉█"


def render_histogram(
    bins: list[tuple[int, int, int]], width: int = 40, mark: int | None = None
) -> Text:
    """One line per bin: `from-to │████ rows`; bins at or past `mark` (e.g. the max length) in red."""
    text = Text()
    if not bins:
        return Text("no rows", style="dim")
    top = max(n for _, _, n in bins) or 1
    label_w = max(len(f"{a}-{b}") for a, b, _ in bins)
    for a, b, n in bins:
        eighths = round(n / top * width * 8)
        full, part = divmod(eighths, 8)
        bar = "█" * full + (BLOCKS[part] if part else "")
        style = "red" if mark is not None and b > mark else "cyan"
        text.append(f"{a}-{b}".rjust(label_w) + " │", style="dim")
        text.append(bar, style=style)
        text.append(f" {n}\n")
    text.rstrip()
    return text


class Histogram(Static):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.bins: list[tuple[int, int, int]] = []
        self.mark: int | None = None

    def set_bins(self, bins: list[tuple[int, int, int]], mark: int | None = None) -> None:
        self.bins, self.mark = list(bins), mark
        self.refresh_bars()

    def refresh_bars(self) -> None:
        width = max(10, (self.size.width or 60) - 20)
        self.update(render_histogram(self.bins, width, self.mark))

    def on_resize(self) -> None:
        if self.bins:
            self.refresh_bars()
