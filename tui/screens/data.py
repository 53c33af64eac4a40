"""Screen 3, Data: choose the data, see what was detected and what is wrong, preview and split it.

Scanning (tokenizer load, validation, token counts) runs in a thread worker with
a cancel event; a new scan cancels the one before. Dataset text is shown
literally (Text objects, markup off).
"""

from __future__ import annotations

import threading

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import (
    Button,
    DataTable,
    DirectoryTree,
    Input,
    RadioButton,
    RadioSet,
    Select,
    Static,
    TabbedContent,
    TabPane,
)
from textual.worker import get_current_worker

from core.config import parse_mapping, section_fields
from core.errors import UserError
from tui import backend
from tui.screens.base import WizardScreen
from tui.widgets.histogram import Histogram
from tui.widgets.option_form import OptionForm, format_value
from tui.widgets.path_input import PathSuggester

FORMATS = next(f for f in section_fields("data") if f.name == "format").metadata["choices"]
SPLIT_OPTIONS = ["validation_split", "max_seq_len", "split_seed", "packing", "validation_file"]
PREVIEW_CELL = 60


class DataTree(DirectoryTree):
    """Files and folders under the current folder, without hidden ones."""

    def filter_paths(self, paths):
        return [p for p in paths if not p.name.startswith(".")]


class DataScreen(WizardScreen):
    STEP = "data"
    CSS_PATH = "data.tcss"
    BINDINGS = [
        Binding("ctrl+r", "scan", "Scan"),
        Binding("ctrl+s", "use_sample", "Sample"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.report = None
        self.tokenizer = None
        self.cancel = threading.Event()

    def compose_body(self) -> ComposeResult:
        data = self.wizard.config["data"]
        with Horizontal(id="data-source"):
            yield Input(
                data["data"],
                placeholder="a file, a folder, a hub dataset id, or sample",
                suggester=PathSuggester(),
                id="data-path",
            )
            yield Button("Scan", id="scan", variant="primary")
        yield Static("", id="data-status", markup=False)
        with TabbedContent(id="data-tabs"):
            with TabPane("Source", id="tab-source"):
                with Horizontal():
                    yield DataTree(".", id="data-tree")
                    with VerticalScroll(id="data-detect"):
                        yield Static("Format", classes="label")
                        yield Select(
                            [(f, f) for f in FORMATS],
                            value=data["format"],
                            allow_blank=False,
                            id="data-format",
                        )
                        yield Static("Column mapping (override)", classes="label")
                        yield Input(
                            format_value(data["columns"]),
                            placeholder="prompt=question,response=answer",
                            id="data-columns",
                        )
                        yield Static("", id="data-evidence", markup=False)
            with TabPane("Problems", id="tab-problems"):
                with Horizontal(id="problems-bar"):
                    yield Input(placeholder="filter problems", id="problems-filter")
                    with RadioSet(id="bad-rows"):
                        yield RadioButton(
                            "skip bad rows", value=data["on_bad_rows"] == "skip", id="skip"
                        )
                        yield RadioButton("stop", value=data["on_bad_rows"] == "stop", id="stop")
                yield DataTable(id="problems", cursor_type="row", zebra_stripes=True)
            with TabPane("Preview", id="tab-preview"):
                yield DataTable(id="preview", cursor_type="row")
                yield Static("Masking preview: trained tokens are highlighted.", classes="help")
                with VerticalScroll(id="masking-box"):
                    yield Static("", id="masking", markup=False)
            with TabPane("Tokens & split", id="tab-tokens"):
                with VerticalScroll():
                    yield Static("", id="token-stats", markup=False)
                    yield Histogram(id="histogram")
                    yield OptionForm("data", data, SPLIT_OPTIONS, id="split-form")

    def on_mount(self) -> None:
        self.query_one("#problems", DataTable).add_columns("Where", "Kind", "Message")
        self.query_one("#data-path", Input).focus()
        self.action_scan()

    def on_unmount(self) -> None:
        self.cancel.set()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        # Back from the model screen with another model: its tokenizer counts differently.
        made_for = getattr(self, "tokenizer_for", None)
        if made_for is not None and made_for != self.wizard.get("model.model"):
            self.action_scan()

    # -- choosing the data -------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id in ("data-path", "data-columns"):
            self.action_scan()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "scan":
            self.action_scan()

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.query_one("#data-path", Input).value = str(event.path)
        self.action_scan()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "data-format" and event.value != self.wizard.get("data.format"):
            self.wizard.set("data.format", event.value)
            self.changed()
            self.action_scan()

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        if event.radio_set.id == "bad-rows" and event.pressed.id:
            self.wizard.set("data.on_bad_rows", event.pressed.id)
            self.changed()

    def on_option_form_changed(self, event: OptionForm.Changed) -> None:
        if not self.apply_option(event):
            return
        if event.dotted == "data.max_seq_len" and self.report and self.report.token_stats:
            self.show_tokens(self.report)

    def action_use_sample(self) -> None:
        self.query_one("#data-path", Input).value = "sample"
        self.action_scan()

    def read_choices(self) -> bool:
        """Copy the source fields into the wizard state; False (and a message) when invalid."""
        path = self.query_one("#data-path", Input).value.strip() or "sample"
        try:
            columns = parse_mapping(
                self.query_one("#data-columns", Input).value, where="column mapping"
            )
        except UserError as exc:
            self.app.show_error(exc, "Column mapping")
            return False
        self.wizard.set("data.data", path)
        self.wizard.set("data.columns", columns)
        self.changed()
        return True

    # -- scanning -----------------------------------------------------------------

    def action_scan(self) -> None:
        if not self.read_choices():
            return
        self.cancel.set()
        self.cancel = threading.Event()
        self.report = None
        self.set_status("Scanning " + self.wizard.get("data.data") + " …")
        self.scan(self.wizard.run_config(), self.cancel)

    def set_status(self, text: str | Text) -> None:
        self.query_one("#data-status", Static).update(text)

    @work(thread=True, exclusive=True, group="scan", exit_on_error=False)
    def scan(self, cfg, cancel: threading.Event) -> None:
        worker = get_current_worker()
        tokenizer = self.tokenizer
        if tokenizer is None or getattr(self, "tokenizer_for", None) != cfg.model.model:
            if backend.needs_bundled_conversion(cfg.model.model):
                # First start only: without this the screen sits on "Scanning" for ~20 s.
                self.app.call_from_thread(
                    self.set_status,
                    "Preparing the bundled model (a one-time conversion, about 20 s) …",
                )
            tokenizer = backend.load_tokenizer(cfg.model.model)

        def progress(*args, **kwargs) -> None:
            if not cancel.is_set():
                self.app.call_from_thread(self.set_status, "Scanning … " + _progress_text(args))

        try:
            report = backend.inspect_data(cfg, tokenizer, cancel, progress=progress)
        except backend.Cancelled:
            return
        except UserError:
            self.app.call_from_thread(self.set_status, "The data could not be read.")
            raise
        if worker.is_cancelled or cancel.is_set():
            return
        self.app.call_from_thread(self.show_report, report, tokenizer, cfg.model.model)

    def show_report(self, report, tokenizer, model: str) -> None:
        self.report, self.tokenizer, self.tokenizer_for = report, tokenizer, model
        status = Text()
        status.append(f"{report.format or '?'}", style="bold")
        status.append(f" format · {report.rows_ok} of {report.rows_total} rows usable")
        if report.rows_bad:
            status.append(f" · {report.rows_bad} with problems", style="bold red")
        if report.token_stats:
            status.append(f" · {report.token_stats.total:,} tokens")
        self.set_status(status)
        if report.token_stats:
            self.wizard.data_tokens = int(report.token_stats.total)
            self.changed()
        evidence = Text("Detected: ", style="bold")
        evidence.append(report.format or "?")
        for line in report.evidence:
            evidence.append("\n• " + line)
        for note in report.notes:
            evidence.append("\n• " + note, style="dim")
        self.query_one("#data-evidence", Static).update(evidence)
        self.show_problems()
        self.show_preview(report)
        self.show_tokens(report)

    def show_problems(self) -> None:
        table = self.query_one("#problems", DataTable)
        table.clear()
        if not self.report:
            return
        needle = self.query_one("#problems-filter", Input).value.strip().lower()
        for p in self.report.problems:
            if needle and needle not in f"{p.where} {p.kind} {p.message}".lower():
                continue
            table.add_row(Text(p.where), Text(p.kind), Text(p.message))
        listed = len(self.report.problems)
        total = sum(self.report.problem_counts.values())
        tab = self.query_one(TabbedContent).get_tab("tab-problems")
        tab.label = f"Problems ({total})" if total else "Problems"
        if total > listed:
            table.add_row(Text("…"), Text(""), Text(f"{total - listed} more not listed"))
        if not total:
            table.add_row(Text("✓"), Text(""), Text("no problems found", style="green"))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "problems-filter":
            self.show_problems()

    def show_preview(self, report) -> None:
        table = self.query_one("#preview", DataTable)
        table.clear(columns=True)
        rows = report.preview
        if not rows:
            return
        columns = list(dict.fromkeys(k for row in rows for k in row))
        table.add_columns(*columns)
        for row in rows:
            table.add_row(*(Text(_cell(row.get(c))) for c in columns))
        self.show_masking(0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "preview":
            self.show_masking(event.cursor_row)

    def show_masking(self, index: int) -> None:
        if not self.report or not self.tokenizer or index >= len(self.report.preview):
            return
        self.masking(index, self.report, self.tokenizer, self.wizard.run_config())

    @work(thread=True, exclusive=True, group="mask", exit_on_error=False)
    def masking(self, index: int, report, tokenizer, cfg) -> None:
        example = report.examples[index] if index < len(report.examples) else report.preview[index]
        pieces = backend.masking_preview(example, tokenizer, cfg)
        text = Text()
        for token, trained in pieces:
            text.append(token, style="black on green" if trained else "dim")
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self.query_one("#masking", Static).update, text)

    def show_tokens(self, report) -> None:
        stats = report.token_stats
        out = self.query_one("#token-stats", Static)
        if stats is None:
            out.update("No token statistics (no usable rows).")
            return
        max_len = int(self.wizard.get("data.max_seq_len"))
        text = Text()
        text.append(f"{stats.count} rows, {stats.total:,} tokens", style="bold")
        text.append(
            f"\nlength min {stats.min} · median {stats.median} · p95 {stats.p95} · max {stats.max}"
        )
        text.append(f"\ntokens trained on (responses): {stats.trained_tokens:,}")
        if stats.rows_truncated:
            text.append(
                f"\n{stats.rows_truncated} rows longer than {stats.max_seq_len} tokens are "
                f"truncated ({stats.tokens_lost:,} tokens lost); "
                f"max_seq_len {stats.suggested_max_len} would keep them.",
                style="yellow",
            )
        text.append("\nRows by length in tokens (red: past max_seq_len):", style="dim")
        out.update(text)
        self.query_one("#histogram", Histogram).set_bins(stats.histogram, mark=max_len)

    # -- leaving -------------------------------------------------------------------

    def commit(self) -> bool:
        if not self.read_choices():
            return False
        if self.report is None:
            self.notify("Wait for the scan to finish (or fix the data source).", severity="warning")
            return False
        if self.report.rows_ok == 0:
            self.app.show_error(
                UserError(
                    "no usable rows",
                    where=self.report.source,
                    hint="see the Problems tab, or override the format / column mapping",
                ),
                "The data cannot be used",
            )
            return False
        blocking = self.report.blocking_problems
        if blocking and self.wizard.get("data.on_bad_rows") == "stop":
            first = blocking[0]
            self.app.show_error(
                UserError(
                    f"{self.report.rows_bad} rows have problems, and bad rows are set to stop",
                    where=first.where,
                    hint="fix the rows listed in the Problems tab, or choose `skip bad rows`",
                ),
                "Bad rows",
            )
            return False
        return True


def _cell(value) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", "⏎ ")
    return text if len(text) <= PREVIEW_CELL else text[: PREVIEW_CELL - 1] + "…"


def _progress_text(args: tuple) -> str:
    nums = [a for a in args if isinstance(a, (int, float))]
    if len(nums) >= 2 and nums[1]:
        return f"{nums[0]:,} of {nums[1]:,}"
    if nums:
        return f"{nums[0]:,} rows"
    return " ".join(str(a) for a in args)
