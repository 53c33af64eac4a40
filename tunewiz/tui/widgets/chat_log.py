"""A scrolling conversation pane whose text is always literal.

Model output is appended to a `rich.text.Text` (never parsed as markup), so a
reply containing `[bold red]x[/]` shows exactly those characters, and control
characters (ESC sequences, BEL) are shown escaped by `tunewiz.core.text.visible`.
"""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from tunewiz.core.text import visible

ROLE_STYLE = {"user": "bold cyan", "assistant": "bold green", "notice": "dim italic"}


class ChatMessage(Static):
    """One turn; streamed replies grow in place."""

    DEFAULT_CSS = """
    ChatMessage { height: auto; margin-bottom: 1; }
    ChatMessage.-notice { margin-bottom: 0; }
    """

    def __init__(self, role: str, text: str = "", *, who: str = ""):
        super().__init__(markup=False, classes=f"-{role}")
        self.role = role
        self.who = who or {"user": "you", "assistant": "model"}.get(role, "")
        self.body = text
        self.footer = ""
        self.chunks = 0  # pieces received: tests check a reply streamed

    def on_mount(self) -> None:
        self._redraw()

    def _redraw(self) -> None:
        text = Text()
        if self.role == "notice":
            text.append(visible(self.body), style=ROLE_STYLE["notice"])
        else:
            text.append(f"{visible(self.who)}: ", style=ROLE_STYLE.get(self.role, "bold"))
            text.append(visible(self.body))  # literal: Text.append never parses markup
            if self.role == "assistant" and not self.body and not self.footer:
                text.append("…", style="dim")
        if self.footer:
            text.append("\n" + visible(self.footer), style="dim")
        self.update(text)

    def append(self, chunk: str) -> None:
        self.body += chunk
        self.chunks += 1
        self._redraw()

    def set_body(self, text: str) -> None:
        self.body = text
        self._redraw()

    def finish(self, footer: str) -> None:
        self.footer = footer
        self._redraw()


class ChatLog(VerticalScroll):
    """The turns of one conversation with one model."""

    DEFAULT_CSS = """
    ChatLog {
        height: 1fr;
        border: round $panel-lighten-2;
        padding: 0 1;
    }
    ChatLog:focus-within { border: round $accent; }
    """

    def add(
        self, role: str, text: str = "", *, who: str = "", before: ChatMessage | None = None
    ) -> ChatMessage:
        message = ChatMessage(role, text, who=who)
        self.mount(message, before=before)
        self.scroll_end(animate=False)
        return message

    def notice(self, text: str, before: ChatMessage | None = None) -> ChatMessage:
        return self.add("notice", text, before=before)

    def append(self, message: ChatMessage, chunk: str) -> None:
        at_end = self.scroll_y >= self.max_scroll_y - 1
        message.append(chunk)
        if at_end:  # follow the reply unless the user scrolled up to read
            self.call_after_refresh(self.scroll_end, animate=False)

    def clear(self) -> None:
        self.remove_children()

    @property
    def messages(self) -> list[ChatMessage]:
        return list(self.query(ChatMessage))
