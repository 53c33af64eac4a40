"""Evaluate a run: choose what to run, watch it (cancellable), read the summary, the chart per
checkpoint and the rows, tag rows, and chat about one.

The evaluation runs in a worker that calls core through tui.backend; progress arrives
with call_from_thread. The screen opens on the run's newest saved evaluation, if any.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Literal

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import (
    DataTable,
    Footer,
    Input,
    Label,
    ProgressBar,
    Select,
    Static,
    TabbedContent,
    TabPane,
)

from tunewiz.tui import backend
from tunewiz.tui.widgets.eval_views import chart, detail, row_categories, summary_rows

PromptSet = Literal["validation", "training", "file"]
PROMPT_SETS: list[tuple[str, PromptSet]] = [
    ("validation + train", "validation"),
    ("train sample", "training"),
    ("a file", "file"),
]
FIELD_HELP = {
    "ev-prompts": "Validation rows (and a training sample, for the overfitting check), or a file",
    "ev-limit": "Benchmarks: only the first N examples of each task (a quick look)",
    "ev-checkpoints": "all, or a comma list: best,last,final,10",
    "ev-file": "Any data file; answers optional (.txt: one prompt per line)",
    "ev-temps": "0 is greedy; a comma list runs a sweep: 0,0.5,1.0",
    "ev-bench": "lm-eval tasks or task YAML paths: arc_easy,hellaswag (needs tunewiz[eval])",
}
WORSE = "__worse__"
DETAIL_PANES = 4  # prompt, reference, base, the checkpoint judged


class EvaluateScreen(Screen):
    CSS_PATH = "evaluate.tcss"
    BINDINGS = [
        Binding("ctrl+r", "run", "Run"),
        Binding("escape", "cancel_or_back", "Stop/Back"),
        Binding("c", "chat", "Chat on row"),
        Binding("t", "tag", "Tag row"),
        Binding("x", "clear_tags", "Clear tags"),
    ]

    def __init__(self, run_dir: Path, *, name: str | None = None):
        super().__init__(name=name)
        self.run_dir = Path(run_dir)
        self.result: Any = None  # tunewiz.core.eval.EvalResult once one is shown
        self.cancel_event = threading.Event()
        self.running = False
        self.started = 0.0
        self.filter: str = ""

    def compose(self) -> ComposeResult:
        with Horizontal(id="ev-form"):
            yield from self._field("checkpoints", Input("all", id="ev-checkpoints", compact=True))
            yield from self._field(
                "prompts",
                Select(
                    PROMPT_SETS,
                    value="validation",
                    allow_blank=False,
                    id="ev-prompts",
                    compact=True,
                ),
            )
            yield from self._field("file", Input(placeholder="path", id="ev-file", compact=True))
            yield from self._field("temperatures", Input("0", id="ev-temps", compact=True))
            yield from self._field(
                "benchmarks", Input(placeholder="none", id="ev-bench", compact=True)
            )
            yield from self._field(
                "limit", Input(placeholder="all", id="ev-limit", type="integer", compact=True)
            )
        with Horizontal(id="ev-progress-line"):
            yield ProgressBar(total=1, id="ev-progress", show_eta=False)
            yield Label("Ctrl+R runs the evaluation", id="ev-status", markup=False)
        with TabbedContent(id="ev-tabs"):
            with TabPane("Summary", id="ev-tab-summary"):
                yield Static("", id="ev-verdict", markup=False)
                yield DataTable(id="ev-summary", zebra_stripes=True, cursor_type="none")
            with TabPane("Checkpoints", id="ev-tab-chart"):
                yield Static("", id="ev-chart")
            with TabPane("Rows", id="ev-tab-rows"):
                yield Select(
                    [("all rows", "")], value="", allow_blank=False, id="ev-filter", compact=True
                )
                with Vertical(id="ev-rows-body"):
                    yield DataTable(id="ev-rows", cursor_type="row")
                    with Horizontal(id="ev-detail"):
                        for n in range(DETAIL_PANES):
                            yield Static("", id=f"ev-d{n}", classes="ev-pane", markup=False)
                yield Input(
                    placeholder="tag for this row, Enter to add", id="ev-tag", classes="-hidden"
                )
        yield Footer()

    def _field(self, title: str, widget) -> ComposeResult:
        widget.tooltip = FIELD_HELP.get(widget.id or "", title)
        with Vertical(classes="ev-field"):
            yield Label(title, classes="ev-field-title")
            yield widget

    def on_mount(self) -> None:
        self.query_one("#ev-rows", DataTable).add_columns(
            "#", "split", "prompt", "categories", "tags"
        )
        try:
            result = backend.latest_eval(self.run_dir)
        except Exception as exc:  # noqa: BLE001 - a damaged folder is shown, not fatal
            self.status(f"the last evaluation could not be read: {exc}")
            return
        if result is not None:
            self.show(result)
            self.status(f"showing {result.out_dir.name}; Ctrl+R runs a new evaluation")

    def status(self, text: str) -> None:
        self.query_one("#ev-status", Label).update(text)

    # -- running ------------------------------------------------------------------

    def request(self):
        value = lambda i: self.query_one(f"#{i}", Input).value.strip()  # noqa: E731
        which: PromptSet = self.query_one("#ev-prompts", Select).value  # type: ignore[assignment]
        temps = [float(t) for t in value("ev-temps").split(",") if t.strip()] or [0.0]
        return backend.eval_request(
            str(self.run_dir),
            self.run_dir.parent,
            checkpoints=[c.strip() for c in value("ev-checkpoints").split(",") if c.strip()],
            prompts=value("ev-file") if which == "file" else None,
            heldout=which != "training",
            temperatures=temps,
            bench=[b.strip() for b in value("ev-bench").split(",") if b.strip()],
            limit=int(value("ev-limit")) if value("ev-limit") else None,
        )

    def action_run(self) -> None:
        if self.running:
            self.notify("Already evaluating: Esc stops it.")
            return
        try:
            req = self.request()
        except ValueError:
            self.notify(
                "Temperatures are numbers like 0,0.5,1.0; limit a whole number", severity="error"
            )
            return
        self.cancel_event = threading.Event()
        self.running, self.started = True, time.monotonic()
        self.status("checking the inputs…")
        self.evaluate(req, self.cancel_event)

    @work(thread=True, exclusive=True, group="eval", exit_on_error=False)
    def evaluate(self, req, cancel: threading.Event) -> None:
        from tunewiz.core.eval import EvalCancelled

        try:
            result = backend.evaluate(req, self._progress_from_thread, cancel)
        except EvalCancelled:
            self.app.call_from_thread(self.status, "stopped; nothing was saved")
            return
        except Exception as exc:  # the error dialog, never a traceback on screen
            self.app.call_from_thread(self._failed, exc)
            return
        finally:
            self.app.call_from_thread(setattr, self, "running", False)
        self.app.call_from_thread(self.show, result)
        self.app.call_from_thread(self.status, f"saved in {result.out_dir}")

    def _progress_from_thread(self, done: int, total: int, what: str) -> None:
        self.app.call_from_thread(self.progress, done, total, what)

    def progress(self, done: int, total: int, what: str) -> None:
        self.query_one("#ev-progress", ProgressBar).update(total=total, progress=done)
        elapsed = time.monotonic() - self.started
        eta = f", about {elapsed / done * (total - done):.0f} s left" if done else ""
        self.status(f"{what}: {done}/{total} prompts{eta}")

    def _failed(self, exc: Exception) -> None:
        self.status("failed")
        show = getattr(self.app, "show_error", None)
        show(exc, "Evaluation failed") if show else self.notify(str(exc), severity="error")

    def action_cancel_or_back(self) -> None:
        if self.running:
            self.cancel_event.set()
            self.status("stopping after the current batch…")
        elif len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    def on_unmount(self) -> None:
        self.cancel_event.set()

    # -- showing ------------------------------------------------------------------

    def show(self, result) -> None:
        self.result = result
        s = result.summary
        verdict = s["verdict"] + "."
        if s.get("recommended"):
            verdict += f"\nKeep {s['recommended']['checkpoint']}: {s['recommended']['why']}."
        self.query_one("#ev-verdict", Static).update(verdict)
        table = self.query_one("#ev-summary", DataTable)
        table.clear(columns=True)
        table.add_columns(f"metric ({s['main_variant']})", *s["models"])
        for row in summary_rows(s):
            table.add_row(*row)
        self.query_one("#ev-chart", Static).update(chart(s))
        cats = sorted({c for counts in s["categories"].values() for c in counts})
        options = [("all rows", ""), ("got worse", WORSE)] + [(c, c) for c in cats]
        self.query_one("#ev-filter", Select).set_options(options)
        self.fill_rows()

    def main_model(self) -> str:
        s: dict = self.result.summary if self.result else {}
        return s.get("judged") or "model"

    def visible_rows(self) -> list[dict]:
        from tunewiz.core.eval.report import got_worse

        rows: list[dict] = self.result.rows if self.result else []
        if self.filter == WORSE:
            return [r for r in rows if got_worse(r)]
        if self.filter:
            return [
                r
                for r in rows
                if any(self.filter in row_categories(r, m) for m in self.result.summary["models"])
            ]
        return list(rows)

    def fill_rows(self) -> None:
        table = self.query_one("#ev-rows", DataTable)
        table.clear()
        model = self.main_model()
        for r in self.visible_rows():
            cats = ", ".join(row_categories(r, model))
            table.add_row(str(r["id"]), r["split"], Text(r["prompt"][:60]), cats, Text(", ".join(r["tags"])), key=str(r["id"]))  # fmt: skip
        self.show_detail()

    @on(Select.Changed, "#ev-filter")
    def filter_changed(self, event: Select.Changed) -> None:
        self.filter = str(event.value or "")
        if self.result is not None:
            self.fill_rows()

    @on(DataTable.RowHighlighted, "#ev-rows")
    def row_highlighted(self) -> None:
        self.show_detail()

    def current_row(self) -> dict | None:
        table = self.query_one("#ev-rows", DataTable)
        rows = self.visible_rows()
        if not rows or table.cursor_row < 0 or table.cursor_row >= len(rows):
            return None
        return rows[table.cursor_row]

    def show_detail(self) -> None:
        row = self.current_row()
        panes: list = []
        if row is not None and self.result is not None:
            models = [m for m in ("base", self.main_model()) if m in self.result.summary["models"]]
            panes = detail(row, models)
        for n in range(DETAIL_PANES):
            pane = self.query_one(f"#ev-d{n}", Static)
            title, body = panes[n] if n < len(panes) else ("", "")
            pane.border_title = title
            pane.update(body)
            pane.set_class(n >= len(panes), "-hidden")

    # -- tags and chat -------------------------------------------------------------

    def action_tag(self) -> None:
        if self.current_row() is None:
            return
        field = self.query_one("#ev-tag", Input)
        field.remove_class("-hidden")
        field.focus()

    @on(Input.Submitted, "#ev-tag")
    def tag_submitted(self, event: Input.Submitted) -> None:
        row = self.current_row()
        event.input.add_class("-hidden")
        if row is None or not event.value.strip():
            return
        self._retag(lambda folder: backend.set_tag(folder, row["id"], event.value.strip()))
        event.input.value = ""

    def action_clear_tags(self) -> None:
        row = self.current_row()
        if row is None or not row["tags"]:
            return

        def clear(folder):
            result = None
            for tag in list(row["tags"]):
                result = backend.set_tag(folder, row["id"], tag, on=False)
            return result

        self._retag(clear)

    def _retag(self, change) -> None:
        table = self.query_one("#ev-rows", DataTable)
        cursor = table.cursor_row
        try:
            self.result = change(self.result.out_dir)
        except Exception as exc:  # noqa: BLE001 - a bad tag is a message
            self._failed(exc)
            return
        self.fill_rows()
        table.move_cursor(row=cursor)
        table.focus()

    def action_chat(self) -> None:
        row = self.current_row()
        if row is None:
            self.notify("Pick a row first (Rows tab).")
            return
        from tunewiz.tui.screens import chat_screen

        which = self.main_model()
        self.app.push_screen(
            chat_screen(str(self.run_dir), which, self.run_dir.parent, prompt=row["prompt"])
        )
