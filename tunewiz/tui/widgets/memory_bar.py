"""The memory estimate as one bar: weights, gradients, optimizer, activations, overhead vs the GPU."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

GIB = 2**30
PARTS = (
    ("weights", "weights", "blue"),
    ("gradients", "grads", "magenta"),
    ("optimizer", "optim", "yellow"),
    ("activations", "activ", "green"),
    ("logits", "logits", "cyan"),
    ("overhead", "other", "bright_black"),
)


def breakdown_of(est) -> dict[str, float]:
    """Bytes per part from an Estimate (a `breakdown` mapping/object, or attributes on it)."""
    src = getattr(est, "breakdown", est)
    out = {}
    for key, _, _ in PARTS:
        value = src.get(key) if isinstance(src, dict) else getattr(src, key, None)
        out[key] = float(value or 0)
    return out


def total_of(est) -> float:
    for obj in (est, getattr(est, "breakdown", None)):
        if obj is None:
            continue
        value = obj.get("total") if isinstance(obj, dict) else getattr(obj, "total", None)
        if value is None:
            value = getattr(obj, "total_bytes", None)
        if value is not None:
            return float(value)
    return sum(breakdown_of(est).values())


def render_bar(parts: dict[str, float], capacity: float | None, width: int) -> Text:
    """Segments scaled so the larger of (total, capacity) fills `width`; `│` marks the capacity."""
    total = sum(parts.values())
    scale_to = max(total, capacity or 0) or 1
    cells = []
    for key, _, color in PARTS:
        n = round(parts.get(key, 0) / scale_to * width)
        cells += [color] * n
    cap_at = round(capacity / scale_to * width) if capacity else None
    text = Text()
    for i in range(width):
        if cap_at is not None and i == cap_at - 1 and cap_at < width:
            text.append("│", style="bold red" if capacity and total > capacity else "bold")
        elif i < len(cells):
            text.append("█", style=cells[i])
        else:
            text.append("░", style="bright_black")
    return text


def render_legend(parts: dict[str, float]) -> Text:
    text = Text()
    for key, label, color in PARTS:
        if parts.get(key, 0) <= 0:
            continue
        # One line even at 80 columns: the bar and its legend must stay in view.
        text.append("█", style=color)
        text.append(f"{label} {_gib(parts[key])} ")
    text.rstrip()
    return text


def _gib(n: float) -> str:
    gib = n / GIB
    return f"{gib:.2f}" if gib < 10 else f"{gib:.1f}" if gib < 100 else f"{gib:.0f}"


class MemoryBar(Static):
    DEFAULT_CSS = """
    MemoryBar { height: 3; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.parts: dict[str, float] = {}
        self.capacity: float | None = None
        self.device = ""

    def show(self, est, capacity_bytes: float | None, device: str) -> None:
        self.parts, self.capacity, self.device = breakdown_of(est), capacity_bytes, device
        self.total = total_of(est)
        self.redraw()

    def redraw(self) -> None:
        if not self.parts:
            self.update(Text("no estimate yet", style="dim"))
            return
        width = max(10, (self.size.width or 70) - 2)
        head = Text()
        head.append(f"{_gib(self.total)} GiB", style="bold")
        head.append(" (sizes in GiB below)" if not self.capacity else "", style="dim")
        if self.capacity:
            pct = self.total / self.capacity * 100
            head.append(f" of {self.capacity / GIB:.0f} GiB on {self.device} ({pct:.0f}%) ")
            if self.total <= self.capacity:
                head.append("fits", style="bold green")
            else:
                head.append("does not fit", style="bold red")
        else:
            head.append(f" on {self.device}")
        self.update(
            Text("\n").join(
                [head, render_bar(self.parts, self.capacity, width), render_legend(self.parts)]
            )
        )

    def on_resize(self) -> None:
        if self.parts:
            self.redraw()
