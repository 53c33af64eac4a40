"""The live training panel: loss chart, progress, memory, load, log and checkpoints.

It only READS the run directory (the trainer is its own process), so leaving
the screen or the app never stops training and reopening replays the whole
history. One timer drives everything; each tick reads only what changed (see
tui.widgets.run_feed), so a run that logs every step does not make it lag.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Log, ProgressBar, Static

from tunewiz.core import runs
from tunewiz.core.errors import UserError
from tunewiz.core.text import visible
from tunewiz.tui.widgets.confirm import Confirm
from tunewiz.tui.widgets.loss_chart import LossChart, series
from tunewiz.tui.widgets.resource_meter import ResourceMeter, Sampler, bar
from tunewiz.tui.widgets.run_feed import (
    CheckpointWatcher,
    LogFollower,
    StatusWatcher,
    format_bytes,
    format_pair,
)

STATE_STYLE = {
    "starting": "yellow",
    "preparing": "yellow",
    "running": "green",
    "finished": "bold green",
    "stopped": "yellow",
    "failed": "bold red",
    "died": "bold red",
}
LIVENESS_EVERY = 4  # ticks between pid checks: a killed trainer writes no status
SYNC_CATCH_UP_BYTES = 1_000_000  # about 5k logged steps: parsed within the first frame


@dataclass
class MetricsDigest:
    """What the panel keeps of a batch of metrics rows (pure: computed in any thread)."""

    count: int
    series: tuple
    latest: dict
    best_eval: float | None
    first_timed: tuple[float, float] | None


def summarize(rows: list[dict]) -> MetricsDigest:
    latest: dict = {}
    best = None
    first = None
    for row in rows:
        ev = row.get("eval_loss")
        if isinstance(ev, (int, float)) and (best is None or ev < best):
            best = ev
        if first is None and row.get("elapsed_s") is not None and row.get("step"):
            first = (row["step"], row["elapsed_s"])
    # the newest value of each metric: walk back only until every key was seen
    keys = set().union(*(r.keys() for r in rows[-50:])) if rows else set()
    for row in reversed(rows):
        for key, value in row.items():
            if value is not None and key not in latest:
                latest[key] = value
        if keys <= latest.keys():
            break
    return MetricsDigest(len(rows), series(rows), latest, best, first)


class ConfirmStop(Confirm):
    """Yes/no before stopping: a stop saves a checkpoint and ends the run."""

    def __init__(self, run_name: str):
        question = Text.assemble(
            "Stop run ",
            (visible(run_name, newlines=False), "bold"),
            "?\nIt saves a checkpoint and ends; you can chat with it afterwards.",
        )
        super().__init__(question, yes="Stop", no="Keep training")
        self.run_name = run_name


class TrainLiveScreen(Screen):
    CSS_PATH = "train_live.tcss"
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    BINDINGS = [
        Binding("s", "stop", "Stop"),
        Binding("d", "detach", "Detach"),
        Binding("c", "chat", "Chat"),
        Binding("e", "evaluate", "Evaluate"),
        Binding("escape", "detach", "Back", show=False),
    ]

    def __init__(
        self,
        run_dir: Path,
        *,
        sampler: Sampler | None = None,
        poll_interval: float = 0.5,
        name: str | None = None,
    ):
        super().__init__(name=name)
        self.run_dir = Path(run_dir)
        self.poll_interval = poll_interval
        self._sampler = sampler
        self._metrics = runs.MetricsTail(self.run_dir / runs.METRICS_FILE)
        self._log = LogFollower(self.run_dir / runs.LOG_FILE)
        self._status = StatusWatcher(self.run_dir)
        self._ckpts = CheckpointWatcher(self.run_dir)
        self._estimate: int | None = None
        self.info: runs.RunInfo = runs.RunInfo(name=self.run_dir.name, path=self.run_dir)
        self.latest: dict = {}  # newest value of every metric seen
        self.best_eval: float | None = None
        self.first_timed: tuple[float, float] | None = None  # (step, elapsed_s) of the first row
        self.rows_seen = 0
        self.ticks = 0
        self.catching_up = False

    # -- layout ---------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="live-title")
        with Horizontal(id="live-progress-row"):
            yield ProgressBar(total=None, show_eta=False, id="live-progress")
            yield Static(id="live-eta")
        with Horizontal(id="live-main"):
            yield LossChart(id="live-chart")
            with Vertical(id="live-side"):
                yield Static(id="live-stats")
                yield Static(id="live-memory")
                yield ResourceMeter(self._sampler, id="live-resources")
                yield Static(id="live-checkpoints")
        yield Log(max_lines=400, id="live-log")
        yield Footer()

    def on_mount(self) -> None:
        self._estimate = runs.read_estimate_bytes(self.run_dir)
        try:
            history = os.stat(self.run_dir / runs.METRICS_FILE).st_size
        except OSError:
            history = 0
        if history > SYNC_CATCH_UP_BYTES:
            # a long run's history takes a while to parse: read it off the UI thread
            self.catching_up = True
            self.catch_up()
        self.poll()  # a short history is shown whole in the first frame
        if not self.rows_seen:
            self.show_stats()  # the panel's frame, with dashes until the first log
        self.set_interval(self.poll_interval, self.poll)
        log = self.query_one("#live-log", Log)
        self.call_after_refresh(log.scroll_end, animate=False)

    # -- polling --------------------------------------------------------------

    def poll(self) -> None:
        """One tick: read what changed in the run directory and show it."""
        self.ticks += 1
        rows = [] if self.catching_up else self._metrics.read_new()
        if rows:
            self.apply_metrics(rows)
        changed = self._status.poll()
        live = self.info.state in runs.LIVE_STATES
        if changed or self.ticks == 1 or (live and self.ticks % LIVENESS_EVERY == 0):
            info = runs.read_run(self.run_dir)
            if changed or info.state != self.info.state or self.ticks == 1:
                ended = self.ticks > 1 and live and info.state not in runs.LIVE_STATES
                self.info = info
                self.show_status()
                if ended:
                    self.notify(f"The run has {info.state}. Press c to chat with it.")
        lines = self._log.read_new()
        if lines:
            log = self.query_one("#live-log", Log)
            # follow the tail unless the user focused the log to scroll back and read
            log.write_lines(lines, scroll_end=not log.has_focus or log.is_vertical_scroll_end)
        # a checkpoint folder without its trainer state is still being written: look
        # again now and then (listing reads every trainer_state.json)
        recheck = self._ckpts.incomplete and live and self.ticks % LIVENESS_EVERY == 0
        if self._ckpts.poll(force=recheck):
            self.show_checkpoints()
        if rows:
            self.show_stats()
        self.query_one(LossChart).flush()  # a redraw held back by the rate limit

    @work(thread=True, exclusive=True, group="live-catch-up")
    def catch_up(self) -> None:
        # only this thread reads the metrics tail while catching_up is set; the
        # rows are digested here too, so the UI thread only appends lists
        digest = summarize(self._metrics.read_new())
        self.app.call_from_thread(self._caught_up, digest)

    def _caught_up(self, digest: MetricsDigest) -> None:
        self.catching_up = False
        self.merge(digest)
        self.show_stats()

    def apply_metrics(self, rows: list[dict]) -> None:
        self.merge(summarize(rows))

    def merge(self, d: MetricsDigest) -> None:
        self.rows_seen += d.count
        self.query_one(LossChart).add_series(*d.series)
        self.latest.update(d.latest)
        if d.best_eval is not None and (self.best_eval is None or d.best_eval < self.best_eval):
            self.best_eval = d.best_eval
        if self.first_timed is None:
            self.first_timed = d.first_timed

    # -- derived figures --------------------------------------------------------

    @property
    def step(self) -> int:
        return int(max(self.latest.get("step") or 0, self.info.step or 0))

    @property
    def total_steps(self) -> int:
        return self.info.total_steps  # checked by tunewiz.core.runs.read_run, unlike the raw status

    def eta_s(self) -> float | None:
        """From logged elapsed times (rate over the logged steps), else core's estimate."""
        if self.info.state not in runs.LIVE_STATES:
            return None
        total, step = self.total_steps, self.step
        last_step, last_t = self.latest.get("step"), self.latest.get("elapsed_s")
        if self.first_timed and last_step and last_t is not None and total:
            s0, t0 = self.first_timed
            if last_step > s0:
                return max(0.0, (total - step) * (last_t - t0) / (last_step - s0))
            if last_step:
                return max(0.0, (total - step) * last_t / last_step)
        return self.info.eta_s

    # -- rendering --------------------------------------------------------------

    def show_status(self) -> None:
        info = self.info
        title = Text()
        title.append(f"● {info.state}", style=STATE_STYLE.get(info.state, ""))
        title.append("  ")
        title.append(visible(info.name, newlines=False), style="bold")
        details = [d for d in (info.method, info.model and Path(info.model).name) if d]
        if details:
            title.append(visible("  · " + " · ".join(details), newlines=False), style="dim")
        # the title has room for one more line: what is wrong with the folder comes first
        for problem in (info.damaged and f"damaged: {info.damaged}", info.error):
            if problem:
                title.append("\n")
                title.append(visible(problem), style="red")
        self.query_one("#live-title", Static).update(title)
        self.show_progress()

    def show_progress(self) -> None:
        bar_widget = self.query_one("#live-progress", ProgressBar)
        if self.info.state == "preparing":
            self.show_preparing(bar_widget)
            return
        total = self.total_steps
        if total:
            bar_widget.update(total=total, progress=min(self.step, total))
        eta = self.eta_s()
        parts = [f"step {self.step}/{total or '?'}"]
        if self.latest.get("epoch") is not None:
            parts.append(f"epoch {self.latest['epoch']:.2f}")
        if eta is not None:
            parts.append(f"ETA {runs.format_duration(eta)}")
        if self.catching_up:
            parts.append("reading the history…")
        _update(self.query_one("#live-eta", Static), " · ".join(parts), lines=1)

    def show_preparing(self, bar_widget: ProgressBar) -> None:
        """Before the first step the run tokenizes its data: rows done of the total, ETA."""
        info = self.info
        if info.rows_total:
            bar_widget.update(total=info.rows_total, progress=min(info.rows_done, info.rows_total))
        done, total = info.rows_done, info.rows_total
        of = f"/{total} rows ({100 * done / total:.0f}%)" if total else " rows"
        parts = [f"preparing the data: {done}{of}"]
        if info.eta_s is not None:
            parts.append(f"ETA {runs.format_duration(info.eta_s)}")
        self.query_one("#live-eta", Static).update(" · ".join(parts))

    def show_stats(self) -> None:
        m = self.latest
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold")
        grid.add_column()

        def num(key: str, fmt: str) -> str:
            value = m.get(key)
            return format(value, fmt) if isinstance(value, (int, float)) else "–"

        grid.add_row("loss", num("loss", ".4f"))
        if "rewards/chosen" in m:  # a preference objective (dpo / orpo / kto): its own metrics
            grid.add_row(
                "reward", f"chosen {num('rewards/chosen', '+.3f')}  rejected "
                f"{num('rewards/rejected', '+.3f')}",
            )  # fmt: skip
            margin = "margin " + num("rewards/margins", "+.3f")
            if "rewards/accuracies" in m:
                margin += "  accuracy " + num("rewards/accuracies", ".0%")
            grid.add_row("", margin)
        eval_line = num("eval_loss", ".4f")
        if self.best_eval is not None:
            eval_line += f" (best {self.best_eval:.4f})"
        grid.add_row("eval", eval_line)
        grid.add_row("lr", num("learning_rate", ".2e") + "  tok/s " + num("tokens_per_s", ",.0f"))
        grid.add_row("time", runs.format_duration(m.get("elapsed_s"), missing="–"))
        _update(self.query_one("#live-stats", Static), grid, lines=4)
        self.show_memory()
        self.show_progress()

    def show_memory(self) -> None:
        peak, est = self.latest.get("peak_mem_bytes"), self._estimate
        text = Text()
        text.append("mem  ", style="bold")
        if est and isinstance(peak, (int, float)):
            frac = peak / est
            text.append(bar(frac, 8), style="red" if frac > 1 else "cyan")
            text.append(f" {format_pair(peak, est)} est")
        else:
            text.append(format_bytes(peak))
            if est:
                text.append(f" (estimate {format_bytes(est)})")
        _update(self.query_one("#live-memory", Static), text, lines=1)

    def show_checkpoints(self) -> None:
        rows = self._ckpts.rows
        text = Text()
        text.append(f"checkpoints ({len(rows)})", style="bold")
        if not rows:
            text.append("\n none yet", style="dim")
        for row in rows[-6:]:
            text.append("\n " + row.name)
            if row.eval_loss is not None:
                text.append(f" {row.eval_loss:.3f}", style="dim")
            tags = [t for t in ("best", "last", "final") if t in row.tags]
            if tags:
                text.append(" " + ",".join(tags), style="green")
        self.query_one("#live-checkpoints", Static).update(text)

    # -- actions ----------------------------------------------------------------

    def action_stop(self) -> None:
        if self.info.state not in runs.LIVE_STATES:
            self.notify(f"The run is not running ({self.info.state}).", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.stop()

        self.app.push_screen(ConfirmStop(self.info.name), answered)

    def stop(self) -> None:
        try:
            runs.stop_run(self.run_dir)
        except UserError as exc:
            self._error(exc)
            return
        self.notify("Stop requested: the run saves a checkpoint and ends.")

    def action_detach(self) -> None:
        # The trainer is its own process: leaving only stops watching it.
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()

    def latest_checkpoint(self) -> str | None:
        rows = self._ckpts.rows
        for tag in ("final", "last"):
            for row in reversed(rows):
                if tag in row.tags:
                    return row.name
        return rows[-1].name if rows else None

    def action_chat(self) -> None:
        name = self.latest_checkpoint()
        if name is None:
            self.notify("No checkpoint yet: chat opens once the run has saved one.")
            return
        from tunewiz.tui.screens.chat import ChatScreen

        self.app.push_screen(ChatScreen(str(self.run_dir), name, runs_dir=self.run_dir.parent))

    def action_evaluate(self) -> None:
        from tunewiz.tui.screens import evaluate_screen

        self.app.push_screen(evaluate_screen(self.run_dir))

    def _error(self, exc: Exception) -> None:
        show = getattr(self.app, "show_error", None)
        if show is not None:
            show(exc)
        else:
            self.notify(str(exc), severity="error")


def _update(widget: Static, content, *, lines: int) -> None:
    """Update a widget that always shows `lines` lines: once it has that height, without a
    layout pass (a layout pass per step was most of the CPU a watching wizard used)."""
    widget.update(content, layout=widget.size.height != lines)
