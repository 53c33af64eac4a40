"""Training and evaluation loss over steps, drawn with plotext.

Points are kept whole (reopening a run shows the full history) but drawn
decimated to about two points per character column, so a run that logs every
step for hours costs the same to draw as a short one.
"""

from __future__ import annotations

import time

from textual_plotext import PlotextPlot


def decimate(xs: list, ys: list, limit: int) -> tuple[list, list]:
    """At most `limit` evenly spaced points, always keeping the newest one."""
    n = len(xs)
    if n <= limit or limit < 2:
        return xs, ys
    stride = n / (limit - 1)
    idx = [int(i * stride) for i in range(limit - 1)] + [n - 1]
    return [xs[i] for i in idx], [ys[i] for i in idx]


def series(rows: list[dict]) -> tuple[list, list, list, list]:
    """(steps, losses, eval steps, eval losses) of metrics rows; rows without a step are skipped."""
    steps, losses, eval_steps, eval_losses = [], [], [], []
    for row in rows:
        step = row.get("step")
        if step is None:
            continue
        loss = row.get("loss")
        if isinstance(loss, (int, float)):
            steps.append(step)
            losses.append(float(loss))
        eval_loss = row.get("eval_loss")
        if isinstance(eval_loss, (int, float)):
            eval_steps.append(step)
            eval_losses.append(float(eval_loss))
    return steps, losses, eval_steps, eval_losses


class LossChart(PlotextPlot):
    """Loss curves; feed it metrics rows with `add_rows`."""

    DEFAULT_CSS = """
    LossChart {
        min-height: 6;
    }
    """

    def __init__(
        self, *, min_interval: float = 2.0, id: str | None = None, classes: str | None = None
    ):
        super().__init__(id=id, classes=classes)
        self.steps: list[float] = []
        self.losses: list[float] = []
        self.eval_steps: list[float] = []
        self.eval_losses: list[float] = []
        self.min_interval = min_interval
        self.redraws = 0
        self._pending = False
        self._drawn_at = float("-inf")  # the first points are drawn at once

    @property
    def point_count(self) -> int:
        return len(self.steps) + len(self.eval_steps)

    def add_rows(self, rows: list[dict]) -> bool:
        """Take new metrics rows; True (and a redraw) when any carried a loss."""
        return self.add_series(*series(rows))

    def add_series(self, steps, losses, eval_steps, eval_losses) -> bool:
        """Append points already split by `series` (e.g. in a worker thread)."""
        self.steps += steps
        self.losses += losses
        self.eval_steps += eval_steps
        self.eval_losses += eval_losses
        added = bool(steps or eval_steps)
        if added:
            self._pending = True
            self.flush()
        return added

    def flush(self) -> None:
        """Redraw if points arrived, at most once per `min_interval` (call it every tick).

        Drawing is the panel's dearest step (tens of ms); a run logging many
        steps a second gains nothing from more than one redraw a second.
        """
        now = time.monotonic()
        if self._pending and now - self._drawn_at >= self.min_interval:
            self._pending = False
            self._drawn_at = now
            self.redraws += 1
            self.refresh()

    def render(self):
        plt = self.plt
        plt.clear_data()
        limit = max(2, self.size.width * 2)
        if self.steps:
            xs, ys = decimate(self.steps, self.losses, limit)
            plt.plot(xs, ys, label="train", marker="braille")
        if self.eval_steps:
            xs, ys = decimate(self.eval_steps, self.eval_losses, limit)
            plt.plot(xs, ys, label="eval", marker="dot" if len(xs) < 40 else "braille")
        plt.xlabel("step")
        if not self.point_count:
            plt.title("waiting for the first logged loss…")
        else:
            plt.title("")
        return super().render()
