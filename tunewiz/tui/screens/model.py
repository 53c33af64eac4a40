"""Screen 4, Model and memory: which model, on which GPU, with which method, and whether it fits.

The estimator is pure arithmetic, so every knob change recomputes it directly
on the UI thread (well under the 50 ms budget); only reading a model's
architecture (files, maybe the hub) and asking NVML run in workers.
"""

from __future__ import annotations

import threading

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Input, OptionList, RadioButton, RadioSet, Select, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from tunewiz.core.config import METHODS, Section
from tunewiz.core.data import DataCancelled
from tunewiz.core.data.checks import DataFacts
from tunewiz.core.errors import UserError
from tunewiz.core.estimate.advice import method_label
from tunewiz.core.text import visible
from tunewiz.tui import backend
from tunewiz.tui.screens.base import WizardScreen
from tunewiz.tui.widgets.memory_bar import GIB, MemoryBar
from tunewiz.tui.widgets.option_form import OptionForm
from tunewiz.tui.widgets.path_input import PathSuggester

METHOD_TEXT = {
    "full": "full: train every weight",
    "lora": "LoRA: small adapters",
    "qlora": "QLoRA: adapters on 4-bit",
    "freeze": "freeze: train the last layers only",
}
KNOBS: dict[Section, list[str]] = {
    "training": ["objective", "per_device_train_batch_size"],
    "data": ["max_seq_len"],
    "model": ["lora_r", "freeze_trainable_layers", "precision", "gradient_checkpointing"],
}
LOCAL = "__local__"
RENT_ROWS = 8


EXAMPLE_TOKENS = 1_000_000  # priced when no data was counted, and said so


def priced_tokens(cfg, data_tokens: int, data_rows: int, approx: bool) -> tuple[int, str]:
    """(tokens the run processes, how that number was made, in words): the data times the
    epochs, or the steps the user set times rows per step times the mean row length."""
    t = cfg.training
    counted = "≈" if approx else ""
    if t.max_steps > 0:
        rows = t.per_device_train_batch_size * t.gradient_accumulation_steps
        mean = min(cfg.data.max_seq_len, data_tokens // data_rows) if data_rows else 0
        per_row = mean or cfg.data.max_seq_len
        how = "mean" if mean else "up to"
        return t.max_steps * rows * per_row, (
            f"the {t.max_steps} steps you set × {rows} rows × {how} {per_row} tokens"
        )
    epochs = f"{t.num_train_epochs:g} epoch{'s' if t.num_train_epochs != 1 else ''}"
    if data_tokens:
        return int(
            data_tokens * t.num_train_epochs
        ), f"{counted}{data_tokens:,} data tokens × {epochs}"
    return int(EXAMPLE_TOKENS * t.num_train_epochs), (
        f"no data counted: {EXAMPLE_TOKENS:,} tokens as an example × {epochs}"
    )


class ModelScreen(WizardScreen):
    STEP = "model"
    CSS_PATH = "model.tcss"

    def __init__(self) -> None:
        super().__init__()
        self.arch = None
        self.local_gpus: list = []
        self.gpus: list = []
        self.recommendation = None
        self.last_estimate = None

    def compose_body(self) -> ComposeResult:
        cfg = self.wizard.config
        with VerticalScroll(id="model-body"):
            with Horizontal(id="model-cols"):
                with Vertical(id="model-left"):
                    yield Static("Model", classes="label")
                    yield Input(
                        cfg["model"]["model"],
                        placeholder="catalog name, local folder, or hub id",
                        id="model-name",
                    )
                    yield Input(
                        self.wizard.catalog_filter,
                        placeholder="search the catalog",
                        id="catalog-search",
                    )
                    yield OptionList(id="catalog")
                    yield Static("GPU", classes="label")
                    yield Select([], prompt="GPU", allow_blank=True, id="gpu")
                    yield Static("Method", classes="label")
                    with RadioSet(id="method"):
                        for m in METHODS:
                            yield RadioButton(
                                METHOD_TEXT[m], value=cfg["model"]["method"] == m, id=f"method-{m}"
                            )
                    yield Static("", id="reason", markup=False)
                    with Vertical(id="price-data"):
                        yield Static("Data to price (optional)", classes="label")
                        yield Input(
                            cfg["data"]["data"] if self.wizard.data_tokens else "",
                            placeholder="a file or folder, Enter counts its tokens",
                            suggester=PathSuggester(),
                            id="count-data",
                        )
                        yield Static("", id="count-status", markup=False)
                with Vertical(id="model-right"):
                    # Estimating before renting, the rent table is the answer: on top, where
                    # it shows without scrolling; in the full wizard the options come first.
                    if self.wizard.estimate_only:
                        yield from self.rent_widgets()
                    for section, names in KNOBS.items():
                        yield OptionForm(section, cfg[section], names, id=f"knobs-{section}")
                    if not self.wizard.estimate_only:
                        yield from self.rent_widgets()
        with Vertical(id="memory-panel"):
            yield MemoryBar(id="memory")

    def rent_widgets(self) -> ComposeResult:
        yield Static("What to rent", id="rent-title", classes="label")
        yield DataTable(id="rent", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        # Data is priced here only on the estimate-only path; the full wizard has a data screen.
        self.query_one("#price-data").display = self.wizard.estimate_only
        if self.wizard.estimate_only:  # came to look a model up: start in the catalog search
            self.query_one("#catalog-search", Input).focus()
        if self.wizard.estimate_only and self.wizard.data_tokens:
            self.show_count()
        self.fill_catalog(self.wizard.catalog_filter)
        self.fill_gpus()
        if self.app.detect_gpus:
            self.find_local_gpus()
        self.load_arch(self.wizard.get("model.model"))

    # -- model ----------------------------------------------------------------------

    def fill_catalog(self, needle: str) -> None:
        catalog = self.query_one("#catalog", OptionList)
        catalog.clear_options()
        try:
            models = backend.catalog_models()
        except (ImportError, UserError):
            models = []
        needle = needle.strip().lower()
        for arch in models:
            if needle and needle not in arch.name.lower():
                continue
            label = Text(arch.name)
            label.append(f"  {arch.num_params() / 1e9:.2f}B", style="dim")
            catalog.add_option(Option(label, id=arch.name))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "catalog-search":
            self.wizard.catalog_filter = event.value
            self.fill_catalog(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "model-name":
            self.choose_model(event.value.strip())
        elif event.input.id == "count-data":
            self.count_data(event.value.strip())
        elif event.input.id == "catalog-search":  # Enter goes on to pick from what was found
            catalog = self.query_one("#catalog", OptionList)
            catalog.focus()
            if catalog.option_count:
                catalog.highlighted = 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option_list.id == "catalog" and event.option.id:
            self.query_one("#model-name", Input).value = event.option.id
            self.choose_model(event.option.id)

    def choose_model(self, name: str) -> None:
        if not name:
            return
        try:
            self.wizard.set("model.model", name)
        except UserError as exc:
            self.app.show_error(exc)
            return
        self.changed()
        self.load_arch(name)
        data = self.query_one("#count-data", Input).value.strip()
        if self.wizard.estimate_only and data:  # another tokenizer counts differently
            self.count_data(data)

    @work(thread=True, exclusive=True, group="arch", exit_on_error=False)
    def load_arch(self, name: str) -> None:
        try:
            arch = backend.load_arch(name)
        except UserError as exc:
            if not get_current_worker().is_cancelled:
                self.app.call_from_thread(self.no_arch, exc)
            return
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self.set_arch, arch)

    def set_arch(self, arch) -> None:
        self.arch = arch
        self.query_one("#memory-panel").display = True
        self.update_estimate()

    def no_arch(self, exc: UserError) -> None:
        """Say in place why the model is unknown; no estimate of the previous model stays up."""
        self.arch = None
        self.query_one("#memory-panel").display = False
        self.query_one("#rent", DataTable).clear(columns=True)
        self.query_one("#rent-title", Static).update("What to rent: choose a model first")
        text = Text(exc.message, style="bold red")
        if exc.hint:
            text.append(f"\n{exc.hint}", style="red")
        self.query_one("#reason", Static).update(text)
        self.mark_recommended(None)

    # -- data to price (estimate-only path) -------------------------------------------------

    def count_data(self, path: str) -> None:
        status = self.query_one("#count-status", Static)
        if not path:
            self.wizard.set_data(DataFacts())
            status.update("")
            self.changed()
            self.update_estimate()
            return
        try:
            self.wizard.set("data.data", path)
        except UserError as exc:
            status.update(Text(exc.message, style="red"))
            return
        self.changed()
        status.update(Text("Counting tokens …", style="dim"))
        self.count_worker(self.wizard.run_config())

    @work(thread=True, exclusive=True, group="count", exit_on_error=False)
    def count_worker(self, cfg) -> None:
        try:
            tokenizer, note = backend.counting_tokenizer(cfg.model.model)
            report = backend.inspect_data(cfg, tokenizer, threading.Event())
        except (UserError, DataCancelled) as exc:
            if not get_current_worker().is_cancelled:
                self.app.call_from_thread(self.count_failed, exc)
            return
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self.counted, report, note)

    def counted(self, report, note: str) -> None:
        self.wizard.set_data(DataFacts.from_report(report), note)
        self.changed()
        self.show_count()
        self.update_estimate()

    def show_count(self) -> None:
        w = self.wizard
        text = Text(f"{w.data_rows:,} rows, " if w.data_rows else "")
        text.append(f"{'≈' if w.data_tokens_note else ''}{w.data_tokens:,} tokens")
        if w.data_tokens_note:
            text.append("\n" + w.data_tokens_note, style="yellow")
        self.query_one("#count-status", Static).update(text)

    def count_failed(self, exc: Exception) -> None:
        self.wizard.set_data(DataFacts())
        self.changed()
        message = exc.message if isinstance(exc, UserError) else "counting was cancelled"
        self.query_one("#count-status", Static).update(Text("✗ " + message, style="red"))
        self.update_estimate()

    # -- GPUs -----------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="nvml", exit_on_error=False)
    def find_local_gpus(self) -> None:
        gpus = backend.detect_gpus()
        self.app.call_from_thread(self.set_local_gpus, gpus)

    def set_local_gpus(self, gpus: list) -> None:
        self.local_gpus = gpus
        self.fill_gpus()
        self.update_estimate()

    def fill_gpus(self) -> None:
        try:
            self.gpus = backend.catalog_gpus()
        except (ImportError, UserError):
            self.gpus = []
        if self.local_gpus:
            g = self.local_gpus[0]
            here = f"this machine: {len(self.local_gpus)}× {g.name} ({g.memory_gib:.0f} GiB)"
        else:
            here = f"this machine: {backend.CPU}"
        options = [(here, LOCAL)] + [
            (f"{g.name} ({g.memory_gib:g} GiB, ${g.price_per_hour_usd:.2f}/h)", g.name)
            for g in self.gpus
        ]
        select = self.query_one("#gpu", Select)
        with select.prevent(Select.Changed):
            select.set_options(options)
            select.value = self.wizard.gpu or LOCAL

    def device(self) -> tuple[str, float | None]:
        """(device name for the estimator, memory in bytes) of the chosen or found GPU."""
        if self.wizard.gpu:
            for g in self.gpus:
                if g.name == self.wizard.gpu:
                    return g.name, g.memory_gib * GIB
        if self.local_gpus:
            return self.local_gpus[0].name, self.local_gpus[0].memory_gib * GIB
        return "cpu", self.ram_bytes()

    def ram_bytes(self) -> float | None:
        """This machine's memory, what a CPU run has to fit in (not shown in tests and
        snapshots, where it would differ between machines)."""
        if not self.app.detect_gpus:
            return None
        import psutil

        return float(psutil.virtual_memory().total)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "gpu" and event.value is not Select.BLANK:
            self.wizard.gpu = "" if event.value == LOCAL else str(event.value)
            self.changed()
            self.update_estimate()

    # -- method and knobs ----------------------------------------------------------------

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        if event.radio_set.id == "method" and event.pressed.id:
            self.wizard.set("model.method", event.pressed.id.removeprefix("method-"))
            self.changed()
            self.update_estimate()

    def on_option_form_changed(self, event: OptionForm.Changed) -> None:
        if not self.apply_option(event):
            return
        self.update_estimate()

    # -- the estimate --------------------------------------------------------------------

    def update_estimate(self) -> None:
        """Recompute and redraw the memory bar, recommendation and rent table (synchronous, fast)."""
        if self.arch is None:
            return
        cfg = self.wizard.cfg  # read only: copying it costs more than the estimate
        device, capacity = self.device()
        try:
            est, req = backend.estimate_for(self.arch, cfg, device)
        except UserError as exc:
            self.query_one("#reason", Static).update(Text(visible(exc), style="red"))
            return
        self.last_estimate = est
        on_cpu = device == "cpu"
        self.query_one("#memory", MemoryBar).show(est, capacity, "CPU (RAM)" if on_cpu else device)
        self.show_recommendation(req, None if on_cpu else capacity)
        # Ranking every GPU takes tens of milliseconds: off the UI thread, newest wins.
        w = self.wizard
        tokens, how = priced_tokens(cfg, w.data_tokens, w.data_rows, bool(w.data_tokens_note))
        self.rent_rows(self.arch, req, tokens, how)

    def show_recommendation(self, req, capacity: float | None) -> None:
        reason = self.query_one("#reason", Static)
        if not capacity:
            self.recommendation = None
            reason.update(
                Text(
                    "No GPU here: training runs on the CPU (fine for small models and "
                    "quick tests). Pick a GPU above to see what fits where.",
                    style="dim",
                )
            )
            self.mark_recommended(None)
            return
        rec = backend.recommend(self.arch, req, capacity / GIB)
        self.recommendation = rec
        self.mark_recommended(rec.method)
        if rec.method:
            text = Text("★ recommended: ", style="bold green")
            text.append(f"{rec.reason}.")  # it names the method and the batch
        else:
            text = Text("Nothing fits: ", style="bold red")
            text.append(rec.reason + ". ")
            text.append("; ".join(rec.suggestions))
        if str(text) != str(reason.render()):  # a changed height costs a layout pass
            reason.update(text)

    def mark_recommended(self, method: str | None) -> None:
        if getattr(self, "marked", "") == method:
            return
        self.marked = method
        for m in METHODS:
            label = METHOD_TEXT[m] + ("  ★ recommended" if m == method else "")
            self.query_one(f"#method-{m}", RadioButton).label = label

    @work(thread=True, exclusive=True, group="rent", exit_on_error=False)
    def rent_rows(self, arch, req, tokens: int, how: str) -> None:
        try:
            rows = backend.rent_table(arch, req, tokens)
        except UserError:
            rows = []
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self.show_rent, rows, tokens, how, req.method)

    def show_rent(self, rows: list, tokens: int, how: str, method: str) -> None:
        table = self.query_one("#rent", DataTable)
        table.clear(columns=True)
        table.add_columns("GPU", "×", "batch", "time", "cost $", "$/h")
        for row in rows[:RENT_ROWS]:
            table.add_row(
                Text(row.gpu),
                str(row.n_gpus),
                str(row.batch_size),
                _duration(row.hours),
                "<0.01" if row.cost_usd < 0.01 else f"{row.cost_usd:,.2f}",
                f"{row.price_per_hour_usd:.2f}",
            )
        title = Text("What to rent", style="bold")
        title.append(f" for {method_label(method)}, cheapest first:\n")
        title.append(f"{tokens:,} tokens", style="bold")
        title.append(f" ({how})", style="dim")
        self.query_one("#rent-title", Static).update(title)

    def commit(self) -> bool:
        if self.arch is None:  # not a dead end: training checks the model again
            self.notify("No estimate for this model (see above).", severity="warning")
        return True


def _duration(hours: float) -> str:
    """For people: 40 s, 12 min, 3.5 h."""
    if hours * 60 < 1:
        return f"{max(1, round(hours * 3600))} s"
    if hours < 1:
        return f"{round(hours * 60)} min"
    return f"{hours:,.1f} h"
