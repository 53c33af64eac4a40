"""Chat with a checkpoint, optionally side by side with the base model or another checkpoint.

Models load and generate in a worker thread; the UI only appends the streamed
pieces (literally) to the panes. In compare mode both panes answer the same
prompt in turn with the same settings and seed, so any difference comes from
the weights. torch/transformers are imported by core inside the worker only.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Checkbox, Footer, Input, Label, Select, Static

from tunewiz.core.errors import UserError
from tunewiz.core.text import visible
from tunewiz.tui.widgets.chat_log import ChatLog

if TYPE_CHECKING:
    from tunewiz.core.chat import ChatSession

MAX_LOADED = 3  # models kept in memory when switching checkpoints back and forth
COMPARE_SEED = 0  # compare mode samples both panes from the same seed when none is set

SETTINGS_HELP = {
    "system": "Instructions the model reads before every message, e.g. 'Answer briefly.'",
    "temperature": "Randomness: 0 always picks the likeliest word, 0.7 is lively, >1 gets wild.",
    "top_p": "Sample only from the likeliest words making up this share (0.9 = top 90%).",
    "max_new_tokens": "Longest reply, in tokens (a token is about 3/4 of a word).",
    "seed": "Same seed and settings give the same reply; leave blank for variety.",
    "greedy": "Always pick the likeliest token: repeatable, best for comparing.",
}


def _default_loader(target: str, checkpoint: str | None, runs_dir: Path):
    from tunewiz.core.loading import load_for_chat

    return load_for_chat(target, checkpoint, runs_dir=runs_dir)


def _default_session(loaded, *, system, settings):
    from tunewiz.core.chat import ChatSession

    return ChatSession(loaded, system=system, settings=settings)


class ChatScreen(Screen):
    CSS_PATH = "chat.tcss"
    BINDINGS = [
        Binding("escape", "cancel_or_back", "Stop/Back"),
        Binding("f2", "toggle_settings", "Settings"),
        Binding("f3", "toggle_compare", "Compare"),
        Binding("ctrl+l", "new_chat", "New chat"),
        Binding("ctrl+e", "evaluate", "Evaluate"),
    ]

    def __init__(
        self,
        target: str,
        checkpoint: str | None = None,
        runs_dir: Path | None = None,
        *,
        loader: Callable | None = None,
        session_factory: Callable | None = None,
        name: str | None = None,
        prompt: str = "",
    ):
        super().__init__(name=name)
        from tunewiz.core.chat import GenerationSettings

        self.target = str(target)
        self.runs_dir = Path(runs_dir) if runs_dir is not None else Path("runs")
        self.checkpoint = checkpoint
        self.prompt = prompt  # put in the message field, ready to send (from the Evaluate screen)
        self.compare_with: str | None = None
        self.settings = GenerationSettings()
        self.system = ""
        self._loader = loader or _default_loader
        self._session_factory = session_factory or _default_session
        self._models: OrderedDict[str | None, object] = OrderedDict()
        self._sessions: dict[str, tuple[str | None, ChatSession]] = {}
        self._lock = threading.Lock()  # guards the model cache across workers
        self.cancel_event = threading.Event()
        self.generating = False
        self.run_dir = self._find_run()
        self.checkpoints = self._list_checkpoints()
        if self.run_dir is not None and self.checkpoint is None:
            # a run that saved nothing yet: its base model is all there is to talk to
            self.checkpoint = self._default_checkpoint() if self.checkpoints else "base"

    # -- what can be chosen -------------------------------------------------------

    def _find_run(self) -> Path | None:
        from tunewiz.core.models import find_run

        return find_run(self.target, self.runs_dir)

    def _list_checkpoints(self) -> list:
        if self.run_dir is None:
            return []
        from tunewiz.core.checkpoints import list_checkpoints

        return list_checkpoints(self.run_dir)

    def _default_checkpoint(self) -> str:
        for tag in ("final", "best", "last"):
            for c in self.checkpoints:
                if tag in c.tags:
                    return c.name
        return self.checkpoints[-1].name

    def _options(self) -> list[tuple[str, str]]:
        options = []
        for c in self.checkpoints:
            label = c.name
            tags = [t for t in ("best", "last", "final") if t in c.tags and t != c.name]
            if tags:
                label += " " + ",".join(tags)
            if c.eval_loss is not None:
                label += f" {c.eval_loss:.3f}"
            options.append((label, c.name))
        if self.run_dir is not None:
            options.append(("base model (untrained)", "base"))
        return options

    def label_for(self, which: str | None) -> str:
        if self.run_dir is None:
            return visible(Path(self.target).name or self.target, newlines=False)
        return visible(f"{self.run_dir.name} · {which or 'final'}", newlines=False)

    # -- layout -------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        options = self._options()
        with Horizontal(id="chat-top"):
            if self.run_dir is not None and options:
                yield Select(
                    options,
                    value=self.checkpoint if self.checkpoint else Select.NULL,
                    allow_blank=False,
                    compact=True,
                    id="chat-model",
                    tooltip="Which checkpoint to talk to",
                )
                yield Select(
                    [("compare: off", "off")] + [(f"vs {label}", v) for label, v in options],
                    value="off",
                    allow_blank=False,
                    compact=True,
                    id="chat-compare",
                    tooltip="Answer the same prompt with a second model, side by side",
                )
            else:
                yield Label(self.label_for(self.checkpoint), id="chat-model-label", markup=False)
        with Horizontal(id="chat-body"):
            yield ChatLog(id="chat-pane-a")
            yield ChatLog(id="chat-pane-b", classes="-hidden")
            with VerticalScroll(id="chat-settings", classes="-hidden"):
                yield from self._settings_fields()
        yield Input(placeholder="Message (Enter to send, Esc to stop)", id="chat-input")
        yield Footer()

    def _settings_fields(self) -> ComposeResult:
        s = self.settings
        fields: list[tuple[str, str, str, Literal["text", "number", "integer"]]] = [
            ("system", "System prompt", self.system, "text"),
            ("temperature", "Temperature", str(s.temperature), "number"),
            ("top_p", "Top-p", str(s.top_p), "number"),
            ("max_new_tokens", "Max tokens", str(s.max_new_tokens), "integer"),
            ("seed", "Seed", "" if s.seed is None else str(s.seed), "integer"),
        ]
        for key, title, value, kind in fields:
            yield Label(title, classes="chat-setting-title")
            yield Input(value, type=kind, compact=True, id=f"set-{key}", tooltip=SETTINGS_HELP[key])
            yield Static(SETTINGS_HELP[key], id=f"help-{key}", classes="chat-help", markup=False)
        yield Checkbox("Greedy", s.greedy, id="set-greedy", tooltip=SETTINGS_HELP["greedy"])
        yield Static(SETTINGS_HELP["greedy"], classes="chat-help", markup=False)

    def on_mount(self) -> None:
        self.pane("a").border_title = self.label_for(self.checkpoint)
        hint = "Type a message and press Enter. F2: generation settings"
        if self.run_dir is not None:
            hint += ", F3: compare with the base model"
        self.pane("a").notice(hint + ".")
        field = self.query_one("#chat-input", Input)
        field.value = self.prompt
        field.focus()

    def on_unmount(self) -> None:
        self.cancel_event.set()  # leaving the screen stops a reply still being generated

    def pane(self, key: str) -> ChatLog:
        return self.query_one(f"#chat-pane-{key}", ChatLog)

    # -- choosing models ----------------------------------------------------------

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "chat-model" and event.value != self.checkpoint:
            self.checkpoint = str(event.value)
            self.pane("a").border_title = self.label_for(self.checkpoint)
            self.pane("a").notice(f"now talking to {self.checkpoint}; a new conversation starts")
        elif event.select.id == "chat-compare":
            self.set_compare(None if event.value == "off" else str(event.value))

    def set_compare(self, which: str | None) -> None:
        self.compare_with = which
        pane = self.pane("b")
        pane.set_class(which is None, "-hidden")
        if which is not None:
            pane.border_title = self.label_for(which)
            pane.notice(f"compare: the same prompt goes to {which} too")

    # -- settings -----------------------------------------------------------------

    def on_input_changed(self, event: Input.Changed) -> None:
        key = (event.input.id or "").removeprefix("set-")
        if key not in SETTINGS_HELP:
            return
        help_line = self.query_one(f"#help-{key}", Static)
        if key == "system":
            self.system = event.value
            return
        try:
            self.settings = self.settings.updated(key, event.value)
        except UserError as exc:
            help_line.update(exc.message)
            help_line.add_class("-error")
            return
        help_line.update(SETTINGS_HELP[key])
        help_line.remove_class("-error")

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if event.checkbox.id == "set-greedy":
            self.settings = replace(self.settings, greedy=event.value)

    def action_toggle_settings(self) -> None:
        panel = self.query_one("#chat-settings")
        panel.toggle_class("-hidden")
        if not panel.has_class("-hidden"):
            panel.scroll_home(animate=False)
            self.query_one("#set-system", Input).focus(scroll_visible=False)
        else:
            self.query_one("#chat-input", Input).focus()

    def action_toggle_compare(self) -> None:
        if self.run_dir is None:
            self.notify("Compare needs a training run: open chat from a run.")
            return
        target = None if self.compare_with else "base"
        select = self.query_one("#chat-compare", Select)
        select.value = target or "off"  # posts Changed, which calls set_compare

    # -- chatting -----------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "chat-input":
            return
        text = event.value.strip()
        if not text:
            return
        if self.generating:
            self.notify("Still answering: press Esc to stop it first.")
            return
        event.input.value = ""
        self.send(text)

    def send(self, text: str) -> None:
        panes = [("a", self.checkpoint)]
        if self.compare_with is not None:
            panes.append(("b", self.compare_with))
        settings = self.settings
        if len(panes) > 1 and not settings.greedy and settings.seed is None:
            settings = replace(settings, seed=COMPARE_SEED)
        jobs = []
        for key, which in panes:
            pane = self.pane(key)
            pane.add("user", text)
            jobs.append((key, pane, which, pane.add("assistant", who=self._who(which))))
        self.cancel_event = threading.Event()
        self.generating = True
        self.generate(jobs, text, settings, self.system, self.cancel_event)

    def _who(self, which: str | None) -> str:
        return "base" if which == "base" else "model"

    @work(thread=True, exclusive=True, group="chat", exit_on_error=False)
    def generate(self, jobs, text, settings, system, cancel: threading.Event) -> None:
        try:
            for key, pane, which, message in jobs:
                if cancel.is_set():
                    self.app.call_from_thread(message.finish, "(cancelled)")
                    continue
                session = self._session_for(key, pane, which, settings, system, before=message)
                started = time.perf_counter()
                for piece in session.stream(text, cancel=cancel):
                    self.app.call_from_thread(pane.append, message, piece)
                self.app.call_from_thread(
                    message.finish, self._footer(session, time.perf_counter() - started, cancel)
                )
                notices = getattr(session, "notices", None) or []
                while notices:
                    self.app.call_from_thread(pane.notice, notices.pop(0))
        except Exception as exc:  # shown in the pane and the error dialog, never a traceback
            self.app.call_from_thread(self._failed, jobs, exc)
        finally:
            self.app.call_from_thread(self._done)

    def _session_for(self, key, pane: ChatLog, which: str | None, settings, system, before=None):
        held = self._sessions.get(key)
        if held is None or held[0] != which:
            loaded = self._load(which, pane, before)
            session = self._session_factory(loaded, system=system or None, settings=settings)
            self._sessions[key] = (which, session)
        else:
            session = held[1]
        session.settings = settings
        if hasattr(session, "set_system"):
            session.set_system(system or None)
        return session

    def _load(self, which: str | None, pane: ChatLog, before=None):
        with self._lock:
            if which in self._models:
                self._models.move_to_end(which)
                return self._models[which]
            note = self.app.call_from_thread(
                pane.notice, f"loading {self.label_for(which)}…", before
            )
            started = time.perf_counter()
            loaded = self._loader(self.target, which, self.runs_dir)
            took = time.perf_counter() - started
            # the time only when it was worth waiting for (and pictures stay stable)
            done = f"loaded {self.label_for(which)}" + (f" in {took:.1f} s" if took >= 1 else "")
            self.app.call_from_thread(note.set_body, done)
            self._models[which] = loaded
            while len(self._models) > MAX_LOADED:
                self._models.popitem(last=False)
            return loaded

    def _footer(self, session, seconds: float, cancel: threading.Event) -> str:
        reply = getattr(session, "last_reply", None)
        tokens = getattr(reply, "tokens", None)
        parts = []
        if tokens is not None:
            parts.append(f"{tokens} tokens")
            if seconds > 0:
                parts.append(f"{tokens / seconds:.1f} tok/s")
        if cancel.is_set():
            parts.append("stopped")
        return " · ".join(parts)

    def _failed(self, jobs, exc: Exception) -> None:
        for _key, _pane, _which, message in jobs:
            if not message.footer:
                message.finish("(failed)")
        show = getattr(self.app, "show_error", None)
        if show is not None:
            show(exc, "Chat failed")
        else:
            self.notify(visible(exc), severity="error", title="Chat failed", markup=False)

    def _done(self) -> None:
        self.generating = False

    def action_cancel_or_back(self) -> None:
        if self.generating:
            self.cancel_event.set()
            self.notify("Stopping the reply…")
            return
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    def action_evaluate(self) -> None:
        if self.run_dir is None:
            self.notify("Evaluate needs a training run: open chat from a run.")
            return
        from tunewiz.tui.screens import evaluate_screen

        self.app.push_screen(evaluate_screen(self.run_dir))

    def action_new_chat(self) -> None:
        if self.generating:
            self.notify("Still answering: press Esc to stop it first.")
            return
        for key in ("a", "b"):
            held = self._sessions.get(key)
            if held is not None:
                held[1].reset()
            self.pane(key).clear()
        self.pane("a").notice("new conversation")
