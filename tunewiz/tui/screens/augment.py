"""Augment…: a model rephrases the data's questions; the user keeps or drops each variant.

Opened from the data screen. A worker wraps core's `preview` (through tui.backend):
the first rows are rephrased, with progress, and Esc stops it between two
generations. The table shows each original beside its variants; Space keeps or
drops the highlighted one. Accept writes the originals and the kept variants to a
new file (core's writer) and hands it back to the data screen; nothing is written
before that, and Esc leaves without writing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import (
    Button,
    Checkbox,
    DataTable,
    Footer,
    Input,
    Label,
    ProgressBar,
    Static,
)
from textual.widgets.data_table import ColumnKey

from tunewiz.core.config import RunConfig
from tunewiz.core.data import DataCancelled
from tunewiz.core.data.augment import OPTION_HELP, WHY
from tunewiz.core.errors import UserError
from tunewiz.core.text import visible
from tunewiz.tui import backend

# Rows per generation batch: the bar moves every two rows (each row is a few generations,
# seconds each on a CPU), and a larger batch gains little there.
BATCH_ROWS = 2
KEEP, DROP = "✓", "·"
FIELDS = {"aug-variants": "variants", "aug-temps": "temperatures", "aug-model": "model",
          "aug-rows": "rows", "aug-reverse": "reverse"}  # fmt: skip


@dataclass(frozen=True)
class Choices:
    """What the form asks for, checked."""

    model: str
    variants: int
    temperatures: tuple[float, ...]
    rows: int
    reverse: bool


def parse_choices(model: str, variants: str, temps: str, rows: str, reverse: bool) -> Choices:
    """The form's text as Choices; UserError naming the field when a value is wrong."""
    try:
        temperatures = tuple(float(t) for t in temps.split(",") if t.strip())
    except ValueError:
        raise UserError("numbers like 0.3,0.7,1.0", where="temperatures") from None
    if not temperatures or any(not 0 <= t <= 2 for t in temperatures):
        raise UserError("one or more numbers from 0 to 2, like 0.3,0.7,1.0", where="temperatures")
    counts = {}
    for name, text in (("variants", variants), ("rows", rows)):
        if not text.strip().isdigit():
            raise UserError("a whole number", where=name)
        counts[name] = int(text)
    if counts["rows"] < 1:
        raise UserError("at least 1", where="rows")
    if counts["variants"] < 1 and not reverse:
        raise UserError("at least 1, or turn on reverse questions", where="variants")
    if not model.strip():
        raise UserError("name a model (default: the bundled one)", where="model")
    return Choices(model.strip(), counts["variants"], temperatures, counts["rows"], reverse)


class VariantTable(DataTable):
    """Originals beside their variants; Space keeps or drops the highlighted variant."""

    BINDINGS = [Binding("space", "keep_or_drop", "Keep/drop")]

    @dataclass
    class Toggled(Message):
        key: str

    def action_keep_or_drop(self) -> None:
        if self.row_count:
            row_key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
            self.post_message(self.Toggled(str(row_key.value)))


class AugmentScreen(Screen[Any]):
    """Dismissed with core's `Written` (the new file) on Accept, None when left."""

    CSS_PATH = "augment.tcss"
    BINDINGS = [
        Binding("ctrl+r", "generate", "Make variants"),
        Binding("ctrl+s", "accept", "Accept"),
        Binding("escape", "stop_or_leave", "Stop/Back"),
    ]

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cancel = threading.Event()
        self.running = False
        self.writing = False
        self.variants: list[Any] = []  # core Variants, in table order
        self.kept: list[bool] = []
        self.dropped: dict[str, int] = {}
        self.generators: dict[str, Any] = {}  # model -> generate(): loaded once per screen

    def compose(self) -> ComposeResult:
        # Two rows, so that every value stays readable at 80 columns (a model id is long).
        with Vertical(id="aug-form"):
            with Horizontal(classes="aug-row"):
                yield from self._field("variants", Input("3", id="aug-variants", type="integer", compact=True))  # fmt: skip
                yield from self._field("temperatures", Input("0.3,0.7,1.0", id="aug-temps", compact=True))  # fmt: skip
                yield from self._field("rows to review", Input("5", id="aug-rows", type="integer", compact=True))  # fmt: skip
                yield Checkbox("reverse questions", True, id="aug-reverse", compact=True)
            with Horizontal(classes="aug-row"):
                yield from self._field("model", Input(self.cfg.model.model, id="aug-model", compact=True))  # fmt: skip
                yield Button("Make variants", id="aug-go", variant="primary", compact=True)
        yield Static(WHY, id="aug-help", classes="help", markup=False)
        with Horizontal(id="aug-progress-line"):
            yield ProgressBar(total=1, id="aug-progress", show_eta=False)
            yield Label(f"Ctrl+R rephrases the first rows of {self.cfg.data.data}", id="aug-status", markup=False)  # fmt: skip
        yield VariantTable(id="aug-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="aug-bottom"):
            yield Static("", id="aug-counts", markup=False)
            yield Button("Accept", id="aug-accept", variant="success", compact=True)
        yield Footer()

    def _field(self, title: str, widget: Input) -> ComposeResult:
        widget.tooltip = OPTION_HELP[FIELDS[widget.id or ""]]
        with Vertical(classes="aug-field -wide" if widget.id == "aug-model" else "aug-field"):
            yield Label(title, classes="aug-field-title")
            yield widget

    def on_mount(self) -> None:
        table = self.query_one(VariantTable)
        table.add_column("keep", key="keep", width=4)
        table.add_column("original: question → answer", key="original")
        table.add_column("variant", key="variant")
        table.add_column("kind", key="kind", width=10)
        table.add_column("temp", key="temp", width=5)
        self.query_one("#aug-reverse", Checkbox).tooltip = OPTION_HELP["reverse"]
        self.query_one("#aug-go", Button).focus()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        """The focused field's one-line help, in place of the why-line."""
        name = FIELDS.get(event.widget.id or "")
        self.query_one("#aug-help", Static).update(OPTION_HELP[name] if name else WHY)

    def status(self, text: str | Text) -> None:
        self.query_one("#aug-status", Label).update(text)

    # -- generating -----------------------------------------------------------------

    @on(Button.Pressed, "#aug-go")
    def action_generate(self) -> None:
        if self.running or self.writing:
            self.notify("Already at work: Esc stops it.")
            return
        value = lambda i: self.query_one(f"#{i}", Input).value  # noqa: E731
        try:
            choices = parse_choices(
                value("aug-model"), value("aug-variants"), value("aug-temps"),
                value("aug-rows"), self.query_one("#aug-reverse", Checkbox).value,
            )  # fmt: skip
        except UserError as exc:
            self.status(Text(f"✗ {exc.where}: {exc.message}", style="bold red"))
            return
        self.cancel = threading.Event()
        self.running = True
        self.show_nothing()  # what a stopped or failed run left must not be accepted
        self.query_one("#aug-progress", ProgressBar).update(total=choices.rows, progress=0)
        self.status("loading the model…" if choices.model not in self.generators else "rephrasing…")
        self.generate(self.cfg, choices, self.cancel)

    @work(thread=True, exclusive=True, group="augment", exit_on_error=False)
    def generate(self, cfg: RunConfig, choices: Choices, cancel: threading.Event) -> None:
        try:
            backend.check_augmentable(cfg)  # before a model loads for data it cannot use
            gen = self.generators.get(choices.model)
            if gen is None:
                gen = backend.augment_generator(choices.model)
                self.generators[choices.model] = gen
            self.app.call_from_thread(self.progress, 0, choices.rows)
            shown = backend.augment_preview(
                cfg, gen, rows=choices.rows, variants=choices.variants,
                temperatures=choices.temperatures, reverse=choices.reverse,
                batch_size=BATCH_ROWS, progress=self._progress_from_thread, cancel=cancel,
            )  # fmt: skip
        except DataCancelled:
            self.app.call_from_thread(self.status, "stopped; nothing was written")
            return
        except Exception as exc:  # a message (UserError) or the log (a bug), never a traceback
            self.app.call_from_thread(self._failed, exc, "Making variants failed")
            return
        finally:
            self.app.call_from_thread(setattr, self, "running", False)
        if not cancel.is_set():
            self.app.call_from_thread(self.show, shown)

    def _progress_from_thread(self, done: int, total: int) -> None:
        self.app.call_from_thread(self.progress, done, total)

    def progress(self, done: int, total: int) -> None:
        self.query_one("#aug-progress", ProgressBar).update(total=total, progress=done)
        self.status(f"rephrasing… {done} of {total} rows (Esc stops)")

    def _failed(self, exc: Exception, title: str) -> None:
        self.status("failed; nothing was written")
        self.app.show_error(exc, title)  # type: ignore[attr-defined]

    def action_stop_or_leave(self) -> None:
        if self.running:
            self.cancel.set()
            self.status("stopping after the current generation…")
        elif not self.writing:
            self.dismiss(None)

    def on_unmount(self) -> None:
        self.cancel.set()

    # -- reviewing ------------------------------------------------------------------

    def show(self, shown: Any) -> None:
        """Each original beside its variants, all kept to begin with."""
        self.variants = [v for o in shown.originals for v in o.variants]
        self.kept = [True] * len(self.variants)
        self.dropped = dict(shown.report.dropped)
        table = self.query_one(VariantTable)
        table.clear()
        wide = max(20, (table.size.width - 4 - 10 - 5 - 10) // 2)
        for key in ("original", "variant"):
            column = table.columns[ColumnKey(key)]
            column.width, column.auto_width = wide, False
        n = 0
        for o in shown.originals:
            original = Text(visible(o.question), style="bold")
            original.append("\n→ " + visible(o.answer), style="dim")
            if not o.variants:
                none = Text("no usable variant", style="dim italic")
                table.add_row("", original, none, "", "", key=f"none-{o.where}", height=None)
            for i, v in enumerate(o.variants):
                table.add_row(
                    KEEP, original if i == 0 else "", Text(visible(v.question)),
                    v.kind, f"{v.temperature:g}", key=f"v{n}", height=None,
                )  # fmt: skip
                n += 1
        self.show_counts()
        self.status(
            f"{len(shown.originals)} rows rephrased; Space keeps or drops a variant, Ctrl+S accepts"
        )
        table.focus()

    def show_nothing(self) -> None:
        self.variants, self.kept, self.dropped = [], [], {}
        self.query_one(VariantTable).clear()
        self.query_one("#aug-counts", Static).update("")

    def show_counts(self) -> None:
        text = f"{sum(self.kept)} of {len(self.variants)} variants kept"
        if self.dropped:
            text += " · dropped: " + ", ".join(f"{n} {why}" for why, n in self.dropped.items())
        self.query_one("#aug-counts", Static).update(text)

    @on(VariantTable.Toggled)
    def toggled(self, event: VariantTable.Toggled) -> None:
        if not event.key.startswith("v"):
            return  # an original without variants: nothing to keep
        i = int(event.key[1:])
        self.kept[i] = not self.kept[i]
        self.query_one(VariantTable).update_cell(event.key, "keep", KEEP if self.kept[i] else DROP)
        self.show_counts()

    # -- accepting ------------------------------------------------------------------

    @on(Button.Pressed, "#aug-accept")
    def action_accept(self) -> None:
        if self.running or self.writing:
            self.notify("Wait for the variants (Esc stops them).")
            return
        if not self.variants:
            self.notify("Make the variants first (Ctrl+R), then keep the good ones.")
            return
        self.writing = True
        self.status("writing…")
        self.write([v for v, keep in zip(self.variants, self.kept, strict=True) if keep])

    @work(thread=True, exclusive=True, group="augment-write", exit_on_error=False)
    def write(self, chosen: list[Any]) -> None:
        try:
            written = backend.write_augmented(self.cfg, chosen)
        except Exception as exc:
            self.app.call_from_thread(self._failed, exc, "Writing the data failed")
            return
        finally:
            self.app.call_from_thread(setattr, self, "writing", False)
        self.app.call_from_thread(self.dismiss, written)
