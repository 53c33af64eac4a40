"""Screen 5, Training settings: every option with its help line, presets, and the exact run.

The config.toml shown is exactly the file written before training starts, and
the command beside it reproduces the run without the wizard.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Input, Label, Static, TabbedContent, TabPane, TextArea

from tunewiz.core import runs
from tunewiz.core.config import RunConfig, Section
from tunewiz.core.errors import UserError
from tunewiz.tui import backend
from tunewiz.tui.screens.base import WizardScreen
from tunewiz.tui.widgets.data_checks import DataChecks
from tunewiz.tui.widgets.option_form import OptionForm

SECTION_TITLES: dict[Section, str] = {
    "training": "Training",
    "model": "Model",
    "data": "Data",
    "distributed": "Several GPUs",
}


def run_name(cfg: RunConfig) -> str:
    """The run's name: the user's, or one made from model and method (the same every time)."""
    return cfg.name or runs.default_run_name(cfg.model.model, cfg.model.method)


def config_path(cfg: RunConfig) -> Path:
    return Path(cfg.runs_dir) / f"{run_name(cfg)}.toml"


def train_command(cfg: RunConfig) -> str:
    return "tunewiz train " + shlex.quote(str(config_path(cfg)))


def final_config(cfg: RunConfig) -> RunConfig:
    cfg.name = run_name(cfg)
    return cfg


class SettingsScreen(WizardScreen):
    STEP = "settings"
    CSS_PATH = "settings.tcss"
    BINDINGS = [
        Binding("ctrl+t", "start", "Start training"),
        Binding("ctrl+y", "copy", "Copy command"),
        Binding("ctrl+n", "start", "Next", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        cfg = self.wizard.config
        with Horizontal(id="settings-top"):
            for name in backend.PRESETS:
                yield Button(backend.PRESET_LABELS[name], id=f"preset-{name}", classes="preset")
            yield Button("Start training", id="start", variant="success")
        yield DataChecks(id="settings-checks")
        with TabbedContent(id="settings-tabs"):
            with TabPane("Run", id="tab-run"):
                with VerticalScroll():
                    with Horizontal(classes="name-row"):
                        yield Label("name", classes="opt-name")
                        yield Input(
                            cfg["name"],
                            placeholder=run_name(self.wizard.run_config()),
                            id="run-name",
                        )
                    yield Static(
                        "The run's folder name; empty picks one from the model and method.",
                        classes="help",
                    )
                    yield Static("", id="command", markup=False)
                    yield TextArea(
                        "", read_only=True, id="toml", language=None, show_line_numbers=False
                    )
            for section, title in SECTION_TITLES.items():
                with TabPane(title, id=f"tab-{section}"):
                    with VerticalScroll():
                        yield OptionForm(section, cfg[section], id=f"form-{section}")

    def on_mount(self) -> None:
        self.mark_preset()
        self.show_config()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        # Choices on earlier screens may have changed since this screen was built.
        for section in SECTION_TITLES:
            self.query_one(f"#form-{section}", OptionForm).set_values(self.wizard.config[section])
        name = self.query_one("#run-name", Input)
        with name.prevent(Input.Changed):
            name.value = self.wizard.get("name")
        self.show_config()

    # -- editing ----------------------------------------------------------------------

    def on_option_form_changed(self, event: OptionForm.Changed) -> None:
        if not self.apply_option(event):
            return
        self.show_config()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "run-name":
            try:
                self.wizard.set("name", event.value.strip())
            except UserError as exc:  # a pasted control character: not a name a terminal shows
                self.notify(exc.message, severity="error")
                return
            self.changed()
            self.show_config()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        bid = event.button.id or ""
        if bid.startswith("preset-"):
            self.apply_preset(bid.removeprefix("preset-"))
        elif bid == "start":
            self.action_start()

    def apply_preset(self, name: str) -> None:
        try:
            cfg = backend.apply_preset(self.wizard.run_config(), name)
        except UserError as exc:
            self.app.show_error(exc, "Preset")
            return
        self.wizard.set_config(cfg)
        self.wizard.preset = name
        self.changed()
        for section in SECTION_TITLES:
            self.query_one(f"#form-{section}", OptionForm).set_values(self.wizard.config[section])
        self.mark_preset()
        self.show_config()
        self.notify(f"{backend.PRESET_LABELS.get(name, name)} preset applied.")

    def mark_preset(self) -> None:
        for button in self.query(".preset").results(Button):
            button.variant = "primary" if button.id == f"preset-{self.wizard.preset}" else "default"

    def show_config(self) -> None:
        cfg = final_config(self.wizard.run_config())
        command = Text("Run this without the wizard:\n", style="bold")
        command.append(train_command(cfg))
        self.query_one("#command", Static).update(command)
        self.query_one("#toml", TextArea).load_text(cfg.to_toml())
        self.query_one("#settings-checks", DataChecks).show(self.wizard.data_warnings())

    def action_copy(self) -> None:
        cfg = final_config(self.wizard.run_config())
        self.app.copy_to_clipboard(train_command(cfg))
        self.notify("Command copied (also select text in the config with the mouse).")

    # -- starting -----------------------------------------------------------------------

    def action_start(self) -> None:
        cfg = final_config(self.wizard.run_config())
        try:
            from tunewiz.core.config import validate

            validate(cfg)
        except UserError as exc:
            self.app.show_error(exc, "Check the settings")
            return
        busy = live_runs_here(Path(cfg.runs_dir))
        if not busy:
            self.launch(cfg)
            return
        from tunewiz.tui.widgets.confirm import Confirm

        names = ", ".join(
            f"{r.name} ({r.state}, step {r.step}/{r.total_steps or '?'})" for r in busy
        )
        question = Text("Already training on this machine: ", style="bold")
        question.append(names)
        question.append(
            "\nA second run shares the same GPU (or CPU): both slow down, and the GPU "
            "memory may not hold both. Start anyway?"
        )
        self.app.push_screen(
            Confirm(question, "Start anyway", "Don't start"),
            lambda yes: self.launch(cfg) if yes else None,
        )

    def launch(self, cfg: RunConfig) -> None:
        self.query_one("#start", Button).disabled = True
        self.notify("Preparing the data and starting the run …")
        self.start_run(cfg)

    @work(thread=True, exclusive=True, group="launch", exit_on_error=False)
    def start_run(self, cfg: RunConfig) -> None:
        path = config_path(cfg)
        existed = path.exists()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            cfg.save(path)
            run_dir = backend.launch(cfg)
        except BaseException:
            if not existed:  # a failed start leaves no config behind that names no run
                path.unlink(missing_ok=True)
            raise
        finally:
            self.app.call_from_thread(self.enable_start)
        self.app.call_from_thread(self.started, run_dir)

    def started(self, run_dir: Path) -> None:
        # The wizard is done: reopened later it shows the runs with this one selected, and
        # a next run gets its own name. Back from the live panel is the start screen.
        self.wizard.screen = "start"
        self.wizard.selected_run = run_dir.name
        self.wizard.set("name", "")
        self.changed()
        self.app.back_to_start()
        self.app.open_live(run_dir)

    def enable_start(self) -> None:
        self.query_one("#start", Button).disabled = False


def live_runs_here(runs_dir: Path) -> list:
    """Runs training on this machine now (a died run is not counted: its process is gone)."""
    try:
        found = runs.list_runs(runs_dir)
    except OSError:
        return []
    return [r for r in found if r.state in runs.LIVE_STATES and r.host in ("", runs.this_host())]
