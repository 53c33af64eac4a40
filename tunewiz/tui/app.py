"""The Textual app: screen stack, wizard state, error dialog, and a terminal kept clean.

`make_app()` is the single factory used by the CLI (`run_app`) and by the tests,
which inject a temporary state folder and runs folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path

from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from tunewiz.core.errors import UserError
from tunewiz.tui.state import DEFAULT_PRESET, SCREENS, STATE_FILE, WizardState

log = logging.getLogger(__name__)

LOG_FILE = "tui.log"
ESTIMATE_PRESET = "standard"  # what the estimate-only path prices unless the user chose one


class TunewizApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "tunewiz"
    ENABLE_COMMAND_PALETTE = False
    # Screens lay out in one column below 100 columns and in two above.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(
        self,
        state_dir: Path | None = None,
        runs_dir: Path | None = None,
        *,
        resume: bool = True,
        detect_gpus: bool = True,
        start_at: str | None = None,
    ) -> None:
        super().__init__()
        from tunewiz.core import paths

        self.state_dir = Path(state_dir) if state_dir else paths.config_dir()
        self.state_path = self.state_dir / STATE_FILE
        self.log_path = self.state_dir / LOG_FILE
        self.runs_dir = Path(runs_dir) if runs_dir else paths.default_runs_dir()
        self.wizard = WizardState.load(self.state_path) if resume else WizardState()
        if start_at:
            self.wizard.screen = start_at
        self.resume = resume or bool(start_at)
        # Tests and snapshots turn this off: what NVML finds must not change a picture.
        self.detect_gpus = detect_gpus
        cfg = self.wizard.run_config()
        # An explicit TUNEWIZ_RUNS_DIR wins over the folder the saved wizard last used.
        if not runs_dir and cfg.runs_dir and "TUNEWIZ_RUNS_DIR" not in os.environ:
            self.runs_dir = Path(cfg.runs_dir)
        cfg.runs_dir = str(self.runs_dir)
        self.wizard.set_config(cfg)

    def on_mount(self) -> None:
        from tunewiz.tui.screens import wizard_screen

        self.push_screen(wizard_screen("start"))
        # Reopen where the user was, with the earlier screens underneath so Back works.
        if self.resume and self.wizard.screen != "start":
            for step in self.steps_to(self.wizard.screen):
                self.push_screen(wizard_screen(step))
        if self.wizard.notice:
            self.notify(self.wizard.notice, severity="warning", timeout=20)

    def steps_to(self, screen: str) -> list[str]:
        """The wizard screens stacked above Start to reach `screen` (the estimate-only
        path skips task and data)."""
        steps = list(SCREENS[1 : SCREENS.index(screen) + 1])
        if self.wizard.estimate_only:
            steps = [s for s in steps if s not in ("task", "data")]
        return steps

    # -- state --------------------------------------------------------------

    def save_state(self) -> None:
        try:
            self.wizard.save(self.state_path)
        except OSError as exc:  # a read-only home must not stop the wizard
            log.warning("could not save wizard state to %s: %s", self.state_path, exc)

    # -- navigation -----------------------------------------------------------

    def goto_next(self, step: str) -> None:
        from tunewiz.tui.screens import wizard_screen

        i = SCREENS.index(step)
        if i + 1 < len(SCREENS):
            self.push_screen(wizard_screen(SCREENS[i + 1]))

    def new_run(self) -> None:
        from tunewiz.tui.screens import wizard_screen

        self.wizard.estimate_only = False
        self.push_screen(wizard_screen("task"))

    def estimate_only(self) -> None:
        """Model & memory straight from Start: no task, data or tokenizer needed."""
        from tunewiz.tui.screens import wizard_screen

        self.wizard.estimate_only = True
        if self.wizard.preset == DEFAULT_PRESET:
            # The default preset is a 30-step CPU demo: a rental priced on it means nothing.
            from tunewiz.tui import backend

            self.wizard.set_config(backend.apply_preset(self.wizard.run_config(), ESTIMATE_PRESET))
            self.wizard.preset = ESTIMATE_PRESET
            self.notify(
                f"Estimating with the {ESTIMATE_PRESET} preset ({DEFAULT_PRESET} is a CPU demo); "
                "batch and lengths are editable on the right."
            )
        self.push_screen(wizard_screen("model"))

    def back_to_start(self) -> None:
        """Pop every wizard screen above Start (after a run was launched)."""
        from tunewiz.tui.screens.start import StartScreen

        while len(self.screen_stack) > 2 and not isinstance(self.screen, StartScreen):
            self.pop_screen()

    def open_live(self, run_dir: Path) -> None:
        from tunewiz.tui.screens import live_screen

        self.push_screen(live_screen(Path(run_dir)))

    # -- errors ---------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.report_worker(event)

    def report_worker(self, event: Worker.StateChanged) -> None:
        """The one place a failed worker is reported (screens forward here). Background work
        fails while the user may be typing: a notification, which takes no focus and no keys."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.show_error(event.worker.error, background=True)

    def show_error(self, exc: BaseException, title: str = "", *, background: bool = False) -> None:
        """An error dialog for what the user just did; a notification for background work."""
        from tunewiz.tui.widgets.error_dialog import ErrorDialog

        if isinstance(exc, UserError):
            where = f"{exc.where}: " if exc.where else ""
            message, hint = where + exc.message, exc.hint or ""
            title = title or "Please check this"
        else:
            # A bug: the traceback goes to the log file, never onto the screen.
            self.write_log("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            message = f"{type(exc).__name__}: {exc}".strip()
            hint = f"This looks like a bug. The details are in {self.log_path}."
        title = title or "Something went wrong"
        if background:
            body = message + (f"\n{hint}" if hint else "")
            self.notify(body, title=title, severity="error", timeout=20, markup=False)
        else:
            self.push_screen(ErrorDialog(title, message, hint))

    def write_log(self, text: str) -> None:
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(text.rstrip() + "\n")
        except OSError:
            pass


def make_app(
    state_dir: Path | None = None,
    runs_dir: Path | None = None,
    *,
    resume: bool = True,
    detect_gpus: bool = True,
    start_at: str | None = None,
) -> TunewizApp:
    """The app. Tests pass temporary folders, `resume=False` for a fresh wizard, and
    `start_at` to open on a given step (with the steps before it underneath)."""
    return TunewizApp(
        state_dir, runs_dir, resume=resume, detect_gpus=detect_gpus, start_at=start_at
    )


@contextlib.contextmanager
def quiet_terminal(log_path: Path):
    """Send whatever libraries write to file descriptors 1 and 2 into a log file.

    Textual paints through `sys.__stderr__` and measures the terminal through
    `sys.__stdout__`, so both are pointed at duplicates of the real terminal
    before the descriptors themselves are redirected. A C library or a child
    process writing to fd 1/2 then lands in the log instead of on the screen.
    """
    if not (sys.__stdout__ and sys.__stderr__ and sys.__stdout__.isatty()):
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    old_out, old_err = sys.__stdout__, sys.__stderr__
    saved = [os.dup(1), os.dup(2)]
    logf = open(log_path, "a", encoding="utf-8")
    try:
        # typeshed marks sys.__stdout__/__stderr__ Final; redirecting them is the point here.
        sys.__stdout__ = os.fdopen(saved[0], "w", closefd=False)  # type: ignore[misc]
        sys.__stderr__ = os.fdopen(saved[1], "w", closefd=False)  # type: ignore[misc]
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        os.dup2(logf.fileno(), 1)
        os.dup2(logf.fileno(), 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        sys.__stdout__, sys.__stderr__ = old_out, old_err  # type: ignore[misc]
        sys.stdout, sys.stderr = old_out, old_err
        for fd in saved:
            os.close(fd)
        logf.close()


def run_app() -> int:
    """`tunewiz` with no arguments."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app = make_app()
    app.log_path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=str(app.log_path),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
    with quiet_terminal(app.log_path):
        app.run()
    return app.return_code or 0
