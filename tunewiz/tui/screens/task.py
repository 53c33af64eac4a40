"""Screen 2, Task: instruction / chat / text, each explained in a line."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from tunewiz.core.config import TASKS
from tunewiz.core.data import TASK_HELP
from tunewiz.tui.screens.base import WizardScreen

EXAMPLES = {
    "instruction": "e.g. alpaca rows {instruction, input, output}, or {prompt, completion}",
    "chat": "e.g. {messages: [{role, content}, ...]} (OpenAI) or ShareGPT conversations",
    "text": "e.g. .txt files, or {text} rows, to teach a domain's language",
}


class TaskScreen(WizardScreen):
    STEP = "task"
    CSS_PATH = "task.tcss"

    def compose_body(self) -> ComposeResult:
        with Vertical(id="task-body"):
            yield Static("What should the model learn?", classes="label")
            options = []
            for task in TASKS:
                prompt = Text(task, style="bold")
                prompt.append("\n" + TASK_HELP.get(task, ""), style="")
                prompt.append("\n" + EXAMPLES[task], style="dim")
                options.append(Option(prompt, id=task))
            yield OptionList(*options, id="tasks")
            yield Static("Arrows choose, Enter (or ctrl+n) goes on to the data.", classes="help")

    def on_mount(self) -> None:
        tasks = self.query_one("#tasks", OptionList)
        tasks.highlighted = TASKS.index(self.wizard.get("data.task"))
        tasks.focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id and event.option.id != self.wizard.get("data.task"):
            self.wizard.set("data.task", event.option.id)
            self.changed()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_next()
