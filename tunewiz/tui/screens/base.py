"""What every wizard screen shares: the step bar, back/next keys, state saving, worker errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import Worker

from tunewiz.core.errors import UserError
from tunewiz.tui.state import SCREENS
from tunewiz.tui.widgets.step_bar import StepBar

if TYPE_CHECKING:
    from tunewiz.tui.app import TunewizApp


class WizardScreen(Screen):
    # Wizard screens only ever run inside TunewizApp: this tells the type checker
    # (the annotation alone creates nothing at run time; `app` stays Textual's).
    app: TunewizApp

    STEP = "start"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+n", "next", "Next"),
    ]

    def compose(self) -> ComposeResult:
        yield StepBar(SCREENS.index(self.STEP))
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    @property
    def wizard(self):
        return self.app.wizard

    def on_screen_resume(self) -> None:
        self.wizard.screen = self.STEP
        self.app.save_state()

    def changed(self) -> None:
        """Call after changing the wizard state: it is saved at once."""
        self.app.save_state()

    def apply_option(self, event) -> bool:
        """Store an OptionForm edit; a refused value is shown under its field. True if stored."""
        try:
            self.wizard.set(event.dotted, event.value)
        except UserError as exc:
            event.row.show_error(exc.message)
            return False
        event.row.show_error(None)
        self.changed()
        return True

    def commit(self) -> bool:
        """Check this screen's choices before moving on; False stays here."""
        return True

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    def action_next(self) -> None:
        if self.commit():
            self.app.goto_next(self.STEP)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.app.report_worker(event)
