"""Screen 1, Start: begin a new run or open an existing one (a running run opens its live panel)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Static

from core.runs import LIVE_STATES, format_duration
from tui import backend
from tui.screens.base import WizardScreen

INTRO = (
    "Fine-tune a language model on your own data: pick a task, load data, check that it fits "
    "in memory, train, then chat with the result. The bundled model and sample dataset are "
    "preselected, so Next all the way trains a small model on a CPU in a few minutes."
)


class StartScreen(WizardScreen):
    STEP = "start"
    CSS_PATH = "start.tcss"
    BINDINGS = [
        Binding("n", "new_run", "New run"),
        Binding("enter", "open_run", "Open run", show=False),
        Binding("o", "open_run", "Open run"),
        Binding("e", "evaluate_run", "Evaluate"),
        Binding("r", "refresh", "Refresh"),
        Binding("ctrl+n", "new_run", "Next", show=False),
        Binding("escape", "back", "Back", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        with Vertical(id="start-body"):
            yield Static(INTRO, id="intro", markup=False)
            with Horizontal(id="start-buttons"):
                yield Button("New run", id="new", variant="primary")
                yield Button("Open run", id="open")
            yield Static("Runs in " + str(self.app.runs_dir), id="runs-title", markup=False)
            yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
            yield Static("", id="no-runs", markup=False)

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        table.add_columns("Run", "State", "Progress", "Last loss", "Best eval", "Time")
        self.runs: list = []
        self.action_refresh()
        self.set_interval(2.0, self.action_refresh)

    def action_refresh(self) -> None:
        try:
            runs = backend.list_runs(self.app.runs_dir)
        except OSError:
            runs = []
        table = self.query_one("#runs", DataTable)
        keep = table.cursor_row
        table.clear()
        for run in runs:
            steps = f"{run.step}/{run.total_steps}" if run.total_steps else str(run.step)
            table.add_row(
                Text(run.name),
                Text(run.state, style="bold" if run.state in LIVE_STATES else ""),
                steps,
                _num(run.last_loss),
                _num(run.best_eval_loss),
                format_duration(run.elapsed_s),
                key=str(run.path),
            )
        self.runs = runs
        if runs:
            table.move_cursor(row=min(keep, len(runs) - 1))
        self.query_one("#no-runs", Static).update(
            "" if runs else "No runs yet. Press n (or click New run) to set one up."
        )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "new":
            self.action_new_run()
        elif event.button.id == "open":
            self.action_open_run()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.open(Path(str(event.row_key.value)))

    def action_new_run(self) -> None:
        self.app.new_run()

    def action_open_run(self) -> None:
        table = self.query_one("#runs", DataTable)
        if not self.runs:
            self.notify("There are no runs to open yet.", severity="warning")
            return
        row = max(0, table.cursor_row)
        self.open(self.runs[row].path)

    def action_evaluate_run(self) -> None:
        if not self.runs:
            self.notify("There are no runs to evaluate yet.", severity="warning")
            return
        from tui.screens import evaluate_screen

        row = max(0, self.query_one("#runs", DataTable).cursor_row)
        self.app.push_screen(evaluate_screen(self.runs[row].path))

    def open(self, run_dir: Path) -> None:
        # Any run opens in the live panel: it shows the whole history of a
        # finished run too, and is where chat on its checkpoints starts.
        self.app.open_live(run_dir)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
