"""Screen 3, Data: choose the data, see what was detected and what is wrong, preview and split it.

Scanning (tokenizer load, validation, token counts) runs in a thread worker with
a cancel event; a new scan cancels the one before. Dataset text is shown
literally (Text objects, markup off).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
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

from tunewiz.core.config import DATA_FORMATS, SAMPLE_HELDOUT_NAME, parse_mapping
from tunewiz.core.data import DataCancelled
from tunewiz.core.data.checks import DataFacts
from tunewiz.core.data.formats import TOOL_PARTS
from tunewiz.core.errors import UserError
from tunewiz.core.text import visible
from tunewiz.tui import backend
from tunewiz.tui.screens.base import WizardScreen
from tunewiz.tui.widgets.data_checks import DataChecks
from tunewiz.tui.widgets.histogram import Histogram
from tunewiz.tui.widgets.option_form import OptionForm, format_value
from tunewiz.tui.widgets.path_input import PathSuggester

SPLIT_OPTIONS = ["validation_split", "max_seq_len", "split_seed", "packing", "validation_file"]
MASKING_HELP = "Masking preview: trained tokens are highlighted."
AUGMENT_HELP = (
    'Rephrase the questions with a model, and review before adding them: a model taught "A is '
    'B" often cannot answer "what is B?".'
)


class RowInput(Input):
    """The row number; Up and Down step through the rows."""

    BINDINGS = [Binding("up", "step(-1)", show=False), Binding("down", "step(1)", show=False)]

    @dataclass
    class Stepped(Message):
        pass

    def action_step(self, delta: int) -> None:
        self.value = str(max(1, int(self.value or 1) + delta))
        self.post_message(self.Stepped())


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
        # not `a`: the path field has the focus, and would take the letter
        Binding("ctrl+g", "augment", "Augment…"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.report = None
        self.tokenizer = None
        self.count_note = ""  # why token counts are approximate ("" when exact)
        self.cancel = threading.Event()
        # One scan at a time: a newer one waits for the older to notice its cancel event.
        self.scan_lock = threading.Lock()

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
            yield Button("Augment…", id="augment", tooltip=AUGMENT_HELP)
        yield Static("", id="data-status", markup=False)
        yield DataChecks(id="data-checks")
        with TabbedContent(id="data-tabs"):
            with TabPane("Source", id="tab-source"):
                with Horizontal():
                    yield DataTree(tree_root(data["data"]), id="data-tree")
                    with VerticalScroll(id="data-detect"):
                        yield Static("Format", classes="label")
                        yield Select(
                            [(f, f) for f in DATA_FORMATS],
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
                with Horizontal(id="row-bar"):
                    yield Static("Row", classes="label")
                    yield RowInput("1", id="row-number", type="integer")
                    yield Static("", id="row-where", markup=False)
                yield DataTable(id="preview", cursor_type="row", show_cursor=False)
                yield Static(MASKING_HELP, classes="help", id="masking-help", markup=False)
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
        elif event.button.id == "augment":
            self.action_augment()

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
        self.show_checks()

    def show_checks(self) -> None:
        """Preset values chosen for other data (split, length, steps), said with their fix."""
        self.query_one("#data-checks", DataChecks).show(self.wizard.data_warnings())

    def action_use_sample(self) -> None:
        self.query_one("#data-path", Input).value = "sample"
        self.action_scan()

    def action_augment(self) -> None:
        """Review a model's rephrasings of this data; accepted ones become the run's data."""
        if not self.read_choices():
            return
        from tunewiz.tui.screens.augment import AugmentScreen

        self.app.push_screen(AugmentScreen(self.wizard.run_config()), self.use_augmented)

    def use_augmented(self, written) -> None:
        """The run trains on the new file (originals + accepted variants) from now on."""
        if written is None:
            return
        self.query_one("#data-path", Input).value = str(written.path)
        self.action_scan()
        self.notify(
            f"The run now uses {written.path}: {written.originals} rows as they were and "
            f"{written.variants} variants. Your file is unchanged.",
            timeout=12,
            markup=False,
        )

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
        self.drop_sample_heldout(path)
        self.changed()
        return True

    def drop_sample_heldout(self, path: str) -> None:
        """The sample-demo preset validates on the sample's held-out questions; with the user's
        own data those measure nothing, so hold out part of their data instead, and say so."""
        if path == "sample" or self.wizard.get("data.validation_file") != SAMPLE_HELDOUT_NAME:
            return
        if backend.made_from_sample(path):
            return  # the sample with variants: its held-out questions still measure learning
        self.wizard.set("data.validation_file", "")
        self.wizard.set("data.validation_split", 0.1)
        self.notify(
            "Validation: the sample's held-out questions do not fit your data, so 10% of it is "
            "held out instead (data.validation_split on Settings).",
            timeout=8,
        )

    # -- scanning -----------------------------------------------------------------

    def action_scan(self) -> None:
        if not self.read_choices():
            return
        self.cancel.set()
        self.cancel = threading.Event()
        self.show_failure(None)
        self.set_status("Scanning " + self.wizard.get("data.data") + " …")
        self.scan(self.wizard.run_config(), self.cancel)

    def set_status(self, text: str | Text) -> None:
        self.query_one("#data-status", Static).update(text)

    @work(thread=True, group="scan", exit_on_error=False)
    def scan(self, cfg, cancel: threading.Event) -> None:
        with self.scan_lock:
            if not cancel.is_set():  # a newer scan was asked for while this one waited
                self.scan_now(cfg, cancel)

    def scan_now(self, cfg, cancel: threading.Event) -> None:
        tokenizer, note = self.tokenizer, self.count_note
        try:
            if tokenizer is None or getattr(self, "tokenizer_for", None) != cfg.model.model:
                if backend.needs_bundled_conversion(cfg.model.model):
                    # First start only: without this the screen sits on "Scanning" for ~20 s.
                    self.app.call_from_thread(
                        self.set_status,
                        "Preparing the bundled model (a one-time conversion, about 20 s) …",
                    )
                tokenizer, note = backend.counting_tokenizer(cfg.model.model)

            def progress(*args, **kwargs) -> None:
                if not cancel.is_set():
                    self.app.call_from_thread(self.set_status, "Scanning … " + _progress_text(args))

            report = backend.inspect_data(cfg, tokenizer, cancel, progress=progress)
        except DataCancelled:
            return
        except UserError as exc:
            if not cancel.is_set():
                self.app.call_from_thread(self.show_failure, exc)
            return
        if not cancel.is_set():
            self.app.call_from_thread(self.show_report, report, tokenizer, cfg.model.model, note)

    def show_failure(self, exc: UserError | None) -> None:
        """Clear what the last scan showed, so nothing stale is taken for this data; with an
        error, say it in place (the fields above stay editable)."""
        self.report = None
        if exc is not None:  # the estimate must not price the previous file's tokens
            self.wizard.set_data(DataFacts())
            self.changed()
        self.show_checks()
        self.query_one("#data-evidence", Static).update("")
        self.query_one("#problems", DataTable).clear()
        self.query_one(TabbedContent).get_tab("tab-problems").label = "Problems"
        self.query_one("#preview", DataTable).clear(columns=True)
        self.query_one("#masking", Static).update("")
        self.query_one("#row-where", Static).update("")
        self.query_one("#token-stats", Static).update("")
        self.query_one("#histogram", Histogram).set_bins([])
        if exc is not None:
            where = f"{exc.where}: " if exc.where else ""
            text = Text("✗ " + where + exc.message, style="bold red")
            if exc.hint:
                text.append(f" ({exc.hint})", style="red")
            self.set_status(text)

    def show_report(self, report, tokenizer, model: str, note: str = "") -> None:
        self.report, self.tokenizer, self.tokenizer_for = report, tokenizer, model
        self.count_note = note
        status = Text()
        status.append(f"{report.format or '?'}", style="bold")
        status.append(f" format · {report.rows_ok} of {report.rows_total} rows usable")
        if report.rows_bad:
            status.append(f" · {report.rows_bad} with problems", style="bold red")
        if report.token_stats:
            approx = "≈" if note else ""
            status.append(f" · {approx}{report.token_stats.total:,} tokens")
        self.set_status(status)
        self.wizard.set_data(DataFacts.from_report(report), note)
        self.changed()
        self.show_checks()
        evidence = Text("Detected: ", style="bold")
        evidence.append(report.format or "?")
        for line in report.evidence:
            evidence.append("\n• " + visible(line))
        if report.skipped_parts:
            parts = ", ".join(f"{n:,} {k}" for k, n in report.skipped_parts.items())
            evidence.append(f"\n• Not trained on: {parts} (left out of the text)", style="yellow")
        for line in report.notes + ([note] if note else []):
            evidence.append("\n• " + visible(line), style="dim")
        self.query_one("#data-evidence", Static).update(evidence)
        help_text = MASKING_HELP + (" (bundled tokenizer: approximate)" if note else "")
        if any(part in report.skipped_parts for part in TOOL_PARTS):
            help_text += (
                " Tool calls and results are left out of the text: [… removed] marks where."
            )
        elif report.tool_rows:
            help_text += " Tool results are dimmed (not trained); tool calls are trained."
        self.query_one("#masking-help", Static).update(help_text)
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
            table.add_row(Text(visible(p.where)), Text(p.kind), Text(visible(p.message)))
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
        self.show_row(int(self.query_one("#row-number", Input).value or 1))

    @on(Input.Submitted, "#row-number")
    @on(RowInput.Stepped)
    def row_chosen(self) -> None:
        self.show_row(int(self.query_one("#row-number", Input).value or 1))

    def show_row(self, number: int) -> None:
        """Row `number` as the user wrote it, and its masking preview (read in a worker)."""
        if self.report is None:
            return
        number = max(1, min(number, self.report.rows_total or 1))
        field = self.query_one("#row-number", Input)
        with field.prevent(Input.Changed):
            field.value = str(number)
        self.read_row(self.wizard.run_config(), number, self.tokenizer)

    @work(thread=True, exclusive=True, group="row", exit_on_error=False)
    def read_row(self, cfg, number: int, tokenizer) -> None:
        try:
            view = backend.row_view(cfg, number, tokenizer)
        except UserError as exc:
            self.app.call_from_thread(self.query_one("#row-where", Static).update, exc.message)
            return
        pieces = backend.masking_preview(view.example, tokenizer, cfg) if view.example else []
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self.show_view, view, pieces)

    def show_view(self, view, pieces: list[tuple[str, bool]]) -> None:
        total = self.report.rows_total if self.report else 0
        where = Text(f"of {total} · {view.where}  (↑/↓ or a number, Enter)")
        if view.problem:
            where.append(f"  not used: {view.problem}", style="red")
        self.query_one("#row-where", Static).update(where)
        table = self.query_one("#preview", DataTable)
        table.clear(columns=True)
        table.add_column("column")
        keys = list(view.source or {})
        key_w = max([len(k) for k in keys] + [6])
        table.add_column("value", width=max(20, table.size.width - key_w - 6))
        for key in keys:
            table.add_row(
                Text(visible(key), style="bold"),
                Text(_cell(view.source[key])),
                height=None,
            )
        self.query_one("#masking", Static).update(masking_text(pieces, view.gaps))

    def show_tokens(self, report) -> None:
        stats = report.token_stats
        out = self.query_one("#token-stats", Static)
        if stats is None:
            out.update("No token statistics (no usable rows).")
            return
        max_len = int(self.wizard.get("data.max_seq_len"))
        text = Text()
        text.append(f"{stats.count} rows, {stats.total:,} tokens", style="bold")
        if self.count_note:
            text.append("\n" + self.count_note, style="yellow")
        text.append(
            f"\nlength min {stats.min} · median {stats.median} · p95 {stats.p95} · max {stats.max}"
        )
        text.append(f"\ntokens trained on (responses): {stats.trained_tokens:,}")
        if stats.rows_truncated:
            text.append(
                f"\n{stats.rows_truncated} rows longer than {stats.max_seq_len} tokens are "
                f"truncated ({stats.tokens_lost:,} tokens lost); {_suggestion(stats)}",
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
            # Never a dead end: the model and memory estimate needs no data.
            self.notify(
                "The data is not scanned (yet): the estimate uses the last token count, "
                "and training checks the data again before it starts.",
                severity="warning",
            )
            return True
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


def masking_text(pieces: list[tuple[str, bool]], gaps: list[tuple[int, str]]) -> Text:
    """The masking preview: trained tokens highlighted, the rest dim, and a marker such as
    `[tool call removed]` where a part the template cannot express was left out (`gaps`
    holds (token index, what), the marker going before that token)."""
    text = Text()
    gaps = sorted(gaps, key=lambda gap: gap[0])  # stable: parts at one place keep their order
    g = 0
    for i, (token, trained) in enumerate(pieces):
        while g < len(gaps) and gaps[g][0] <= i:
            text.append(f"[{visible(gaps[g][1])} removed]", style="dim italic yellow")
            g += 1
        text.append(visible(token), style="black on green" if trained else "dim")
    for _, what in gaps[g:]:  # past the end (a truncated row): still said
        text.append(f"[{visible(what)} removed]", style="dim italic yellow")
    return text


def _suggestion(stats) -> str:
    """What the suggested max_seq_len keeps, exactly (it holds 99% of the rows, not always all)."""
    if stats.suggested_max_len <= stats.max_seq_len:
        return "they are the longest 1% of the rows."
    over = stats.rows_over_suggested
    kept = "them" if not over else f"{stats.rows_truncated - over} of them"
    return f"max_seq_len {stats.suggested_max_len} would keep {kept} whole."


def tree_root(data: str) -> str:
    """The folder the file tree opens in: the current data path's, else the working folder."""
    folder = Path(data).expanduser()
    folder = folder if folder.is_dir() else folder.parent
    return str(folder) if str(folder) not in ("", ".") and folder.is_dir() else "."


def _cell(value) -> str:
    """A value of the user's row as shown: readable, with control characters made visible."""
    return visible(_readable(value))


def _readable(value) -> str:
    """A cell of the user's row for people: text as is, a conversation one turn a line,
    anything else as indented JSON (never a Python repr)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        turns = [m for m in value if "content" in m or "value" in m]
        if turns and len(turns) == len(value):
            return "\n".join(_turn_line(m) for m in turns)
    return json.dumps(value, ensure_ascii=False, indent=1, default=str)


def _turn_line(turn: dict) -> str:
    """One turn as `role: text`, with the tools it calls (their JSON), never `None`."""
    text = turn.get("content", turn.get("value"))
    line = f"{turn.get('role') or turn.get('from') or '?'}: {'' if text is None else text}"
    calls = turn.get("tool_calls") or turn.get("function_call")
    if calls:
        line += " [calls] " + json.dumps(calls, ensure_ascii=False, default=str)
    return line


def _progress_text(args: tuple) -> str:
    nums = [a for a in args if isinstance(a, (int, float))]
    if len(nums) >= 2 and nums[1]:
        return f"{nums[0]:,} of {nums[1]:,}"
    if nums:
        return f"{nums[0]:,} rows"
    return " ".join(str(a) for a in args)
