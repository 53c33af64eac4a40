"""Screen 4, Model and memory: which model, on which GPU, with which method, and whether it fits.

The estimator is pure arithmetic, so every knob change recomputes it directly
on the UI thread (well under the 50 ms budget); only reading a model's
architecture (files, maybe the hub) and asking NVML run in workers.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Input, OptionList, RadioButton, RadioSet, Select, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from core.config import METHODS
from core.errors import UserError
from core.text import visible
from tui import backend
from tui.screens.base import WizardScreen
from tui.widgets.memory_bar import GIB, MemoryBar
from tui.widgets.option_form import OptionForm

METHOD_TEXT = {
    "full": "full: train every weight",
    "lora": "LoRA: small adapters",
    "qlora": "QLoRA: adapters on 4-bit",
}
KNOBS = {
    "training": ["per_device_train_batch_size"],
    "data": ["max_seq_len"],
    "model": ["lora_r", "precision", "gradient_checkpointing"],
}
LOCAL = "__local__"
RENT_ROWS = 8


def train_tokens(cfg, data_tokens: int) -> int:
    """Tokens the run will process: the data times epochs, or max_steps' worth of batches."""
    t = cfg.training
    per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * cfg.data.max_seq_len
    by_epochs = int((data_tokens or 1_000_000) * t.num_train_epochs)
    return min(by_epochs, t.max_steps * per_step) if t.max_steps > 0 else by_epochs


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
                with Vertical(id="model-right"):
                    for section, names in KNOBS.items():
                        yield OptionForm(section, cfg[section], names, id=f"knobs-{section}")
                    yield Static("What to rent", id="rent-title", classes="label")
                    yield DataTable(id="rent", cursor_type="row", zebra_stripes=True)
        with Vertical(id="memory-panel"):
            yield MemoryBar(id="memory")

    def on_mount(self) -> None:
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

    @work(thread=True, exclusive=True, group="arch", exit_on_error=False)
    def load_arch(self, name: str) -> None:
        arch = backend.load_arch(name)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self.set_arch, arch)

    def set_arch(self, arch) -> None:
        self.arch = arch
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
        self.rent_rows(self.arch, req, train_tokens(cfg, self.wizard.data_tokens))

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
            text.append(f"{rec.method}, batch {rec.batch_size}. {rec.reason}.")
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
    def rent_rows(self, arch, req, tokens: int) -> None:
        try:
            rows = backend.rent_table(arch, req, tokens)
        except UserError:
            rows = []
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self.show_rent, rows, tokens)

    def show_rent(self, rows: list, tokens: int) -> None:
        table = self.query_one("#rent", DataTable)
        table.clear(columns=True)
        table.add_columns("GPU", "×", "batch", "time", "cost $", "$/h")
        for row in rows[:RENT_ROWS]:
            table.add_row(
                Text(row.gpu),
                str(row.n_gpus),
                str(row.batch_size),
                _hours(row.hours),
                "<0.01" if row.cost_usd < 0.01 else f"{row.cost_usd:,.2f}",
                f"{row.price_per_hour_usd:.2f}",
            )
        self.query_one("#rent-title", Static).update(
            f"What to rent: {tokens:,} tokens to train, cheapest first"
        )

    def commit(self) -> bool:
        if self.arch is None:
            self.notify("Choose a model the estimator knows first.", severity="warning")
            return False
        return True


def _hours(hours: float) -> str:
    if hours < 1:
        return f"{max(1, round(hours * 60))} min"
    return f"{hours:,.1f} h"
