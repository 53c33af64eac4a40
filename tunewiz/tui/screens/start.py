"""Screen 1, Start: begin a new run, estimate a model before renting, or open an existing run.

Focus starts in the run table when there are runs (Enter opens one); Up from its
first row reaches the buttons and Down from a button comes back.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Static

from tunewiz.core.runs import LIVE_STATES, format_duration, format_loss, list_runs
from tunewiz.core.text import visible
from tunewiz.tui.screens.base import WizardScreen

INTRO = (
    "Fine-tune a language model on your own data: pick a task, load data, check that it fits "
    "in memory, train, then chat with the result. The bundled model and sample dataset are "
    "preselected, so Next all the way trains a small model on a CPU in a few minutes."
)


NAME_WIDTH = 28  # the Time column stays visible at 80 columns


class RunsTable(DataTable):
    """The runs; Up from the first row moves to the buttons above."""

    def action_cursor_up(self) -> None:
        if self.cursor_row <= 0:
            self.screen.query_one("#new", Button).focus()
        else:
            super().action_cursor_up()


class StartScreen(WizardScreen):
    STEP = "start"
    CSS_PATH = "start.tcss"
    BINDINGS = [
        Binding("n", "new_run", "New run"),
        Binding("e", "estimate", "Estimate only"),
        Binding("enter", "open_run", "Open run", show=False),
        Binding("o", "open_run", "Open run"),
        Binding("v", "evaluate_run", "Evaluate"),
        Binding("r", "refresh", "Refresh"),
        Binding("ctrl+n", "new_run", "Next", show=False),
        Binding("escape", "back", "Back", show=False),
        Binding("down", "to_table", show=False),
        Binding("left", "app.focus_previous", show=False),
        Binding("right", "app.focus_next", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        with Vertical(id="start-body"):
            yield Static(INTRO, id="intro", markup=False)
            with Horizontal(id="start-buttons"):
                yield Button("New run", id="new", variant="primary")
                yield Button("Estimate a model before renting", id="estimate")
                yield Button("Open run", id="open")
            yield Static("Runs in " + shown_path(self.app.runs_dir), id="runs-title", markup=False)
            yield RunsTable(id="runs", cursor_type="row", zebra_stripes=True)
            yield Static("", id="no-runs", markup=False)

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        table.add_columns("Run", "State", "Progress", "Last loss", "Best eval", "Time")
        self.runs: list = []
        self.action_refresh()
        self.select_run(self.wizard.selected_run)
        (table if self.runs else self.query_one("#new", Button)).focus()
        self.set_interval(2.0, self.refresh_if_shown)

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        if self.is_mounted and self.wizard.selected_run:  # back from a run just launched
            self.action_refresh()
            self.select_run(self.wizard.selected_run)

    def refresh_if_shown(self) -> None:
        # Under the live panel the table is not seen: reading every run then is wasted CPU.
        if self.is_current:
            self.action_refresh()

    def select_run(self, name: str) -> None:
        for i, run in enumerate(self.runs):
            if run.name == name:
                self.query_one("#runs", DataTable).move_cursor(row=i)

    def action_refresh(self) -> None:
        try:
            runs = list_runs(self.app.runs_dir)
        except OSError:
            runs = []
        table = self.query_one("#runs", DataTable)
        keep = table.cursor_row
        table.clear()
        for run in runs:
            steps = run.progress_text()
            table.add_row(
                Text(_short(visible(run.name, newlines=False), NAME_WIDTH)),
                Text(run.state, style="bold" if run.state in LIVE_STATES else ""),
                steps,
                format_loss(run.last_loss),
                format_loss(run.best_eval_loss),
                format_duration(run.elapsed_s),
                key=str(run.path),
            )
        self.runs = runs
        if runs:
            table.move_cursor(row=min(keep, len(runs) - 1))
        damaged = [
            f"{visible(r.name, newlines=False)}: damaged: {r.damaged}" for r in runs if r.damaged
        ]
        self.query_one("#no-runs", Static).update(
            Text(visible("\n".join(damaged)), style="red")
            if damaged
            else ""
            if runs
            else "No runs yet. Press n (or click New run) to set one up."
        )

    def action_to_table(self) -> None:
        if self.runs and isinstance(self.focused, Button):
            self.query_one("#runs", DataTable).focus()

    def action_estimate(self) -> None:
        self.app.estimate_only()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "new":
            self.action_new_run()
        elif event.button.id == "estimate":
            self.action_estimate()
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
        from tunewiz.tui.screens import evaluate_screen

        row = max(0, self.query_one("#runs", DataTable).cursor_row)
        self.app.push_screen(evaluate_screen(self.runs[row].path))

    def open(self, run_dir: Path) -> None:
        # Any run opens in the live panel: it shows the whole history of a
        # finished run too, and is where chat on its checkpoints starts.
        self.app.open_live(run_dir)


def shown_path(folder: Path) -> str:
    """A folder as people read it: ./runs under the working folder, else the full path."""
    folder = Path(folder)
    try:
        return "./" + str(folder.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(folder)


def _short(text: str, width: int) -> str:
    """Long run names keep their end (where model and method differ), not a shared prefix."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]
