"""A form built from the config dataclass fields: one control and one help line per option.

The help line is the option's help (tunewiz.core.config.options), the same text `--help`
and a written config.toml show; choices become a Select, booleans a Switch.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, Select, Static, Switch

from tunewiz.core.config import Option, Section, options


def format_value(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class OptionRow(Vertical):
    """One option: its name, its control, and its one-line help (or what is wrong with the value)."""

    DEFAULT_CSS = """
    OptionRow { height: auto; margin-bottom: 1; }
    OptionRow > Horizontal { height: auto; }
    OptionRow .opt-name { width: 30; padding: 1 1 0 0; text-style: bold; }
    OptionRow Input, OptionRow Select { width: 1fr; }
    OptionRow .opt-help { color: $text-muted; padding-left: 1; }
    OptionRow.-invalid .opt-help { color: $error; }
    """

    def __init__(self, option: Option, value: Any) -> None:
        super().__init__(id=f"row-{option.section}-{option.name}")
        self.option, self.section, self.value = option, option.section, value
        self.dotted = option.dotted
        self.help = option.help

    def compose(self) -> ComposeResult:
        cid = f"opt-{self.option.section}-{self.option.name}"
        with Horizontal():
            yield Label(self.option.name, classes="opt-name")
            if self.option.choices:
                yield Select(
                    [(c, c) for c in self.option.choices],
                    value=self.value,
                    allow_blank=False,
                    id=cid,
                )
            elif self.option.kind is bool:
                yield Switch(value=bool(self.value), id=cid)
            else:
                yield Input(format_value(self.value), id=cid)
        yield Static(self.help, classes="opt-help", markup=False)

    def show_error(self, message: str | None) -> None:
        # Called on every keystroke: touch the widget only when something changes
        # (an update means a layout pass, which the estimate panel cannot afford).
        if getattr(self, "shown_error", None) == message:
            return
        self.shown_error = message
        self.set_class(bool(message), "-invalid")
        self.query_one(".opt-help", Static).update(message or self.help)

    def set_value(self, value: Any) -> None:
        control = self.query_one(f"#opt-{self.option.section}-{self.option.name}")
        with control.prevent(Input.Changed, Select.Changed, Switch.Changed):
            if isinstance(control, Select):
                control.value = value
            elif isinstance(control, Switch):
                control.value = bool(value)
            elif isinstance(control, Input):
                control.value = format_value(value)
        self.show_error(None)


class OptionForm(Vertical):
    """Options of one config section; posts `OptionForm.Changed(dotted, raw_value)` on edits."""

    DEFAULT_CSS = """
    OptionForm { height: auto; }
    """

    class Changed(Message):
        def __init__(self, form: OptionForm, row: OptionRow, dotted: str, value: Any) -> None:
            super().__init__()
            self.form, self.row, self.dotted, self.value = form, row, dotted, value

    def __init__(
        self,
        section: Section,
        values: dict,
        names: list[str] | None = None,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        shown = options(section)
        if names is not None:
            by_name = {o.name: o for o in shown}
            shown = tuple(by_name[n] for n in names)
        self.section, self.shown, self.values = section, shown, values

    def compose(self) -> ComposeResult:
        for option in self.shown:
            yield OptionRow(option, self.values[option.name])

    def set_values(self, values: dict) -> None:
        for row in self.query(OptionRow):
            if row.option.name in values:
                row.set_value(values[row.option.name])

    def _changed(self, control, value: Any) -> None:
        row = next(a for a in control.ancestors if isinstance(a, OptionRow))
        self.post_message(self.Changed(self, row, row.dotted, value))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._changed(event.input, event.value)

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.value is not Select.BLANK:
            self._changed(event.select, event.value)

    def on_switch_changed(self, event: Switch.Changed) -> None:
        event.stop()
        self._changed(event.switch, event.value)
