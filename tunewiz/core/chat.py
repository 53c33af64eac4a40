"""The chat engine: multi-turn history, the model's chat template, streaming generation.

Generation runs in its own thread (`model.generate` with a streamer) so that the
caller (the CLI's REPL, the TUI's chat pane) receives text as it is produced and
can cancel at any time. Nothing here prints: callers decide how to show text,
and they must show it literally (model output is never markup).
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

from tunewiz.core.errors import UserError
from tunewiz.core.loading import LoadedModel

log = logging.getLogger(__name__)

# End-of-turn markers of the common chat templates: generation stops at whichever
# the tokenizer knows, as well as at its eos token.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


@dataclass
class GenerationSettings:
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 256
    repetition_penalty: float = 1.0
    seed: int | None = None
    greedy: bool = False

    def updated(self, name: str, value: Any) -> GenerationSettings:
        """A copy with one setting changed from text (`/set temperature 0.2`), checked."""
        known = {f.name: f for f in fields(self)}
        if name not in known:
            raise UserError(f"unknown setting {name!r}", hint="settings: " + ", ".join(known))
        current = getattr(self, name)
        try:
            if name == "greedy":
                parsed: Any = str(value).lower() in ("1", "true", "yes", "on")
            elif name == "seed":
                parsed = None if str(value).lower() in ("none", "") else int(value)
            elif isinstance(current, int) and not isinstance(current, bool):
                parsed = int(value)
            else:
                parsed = float(value)
        except ValueError:
            raise UserError(f"{name} must be a number, got {value!r}") from None
        out = replace(self, **{name: parsed})
        out.check()
        return out

    def check(self) -> None:
        for name in ("temperature", "top_p", "repetition_penalty"):
            if not math.isfinite(getattr(self, name)):  # NaN passes every comparison below
                raise UserError(f"{name} must be a finite number", where=name)
        if self.temperature < 0:
            raise UserError("temperature must be 0 or more", where="temperature")
        if not 0 < self.top_p <= 1:
            raise UserError("top_p must be in (0, 1]", where="top_p")
        if self.top_k < 0:
            raise UserError("top_k must be 0 (off) or more", where="top_k")
        if self.max_new_tokens < 1:
            raise UserError("max_new_tokens must be at least 1", where="max_new_tokens")
        if self.repetition_penalty <= 0:
            raise UserError("repetition_penalty must be positive", where="repetition_penalty")

    def generate_kwargs(self) -> dict[str, Any]:
        """Arguments for `model.generate`; sampling knobs only when sampling (avoids warnings)."""
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if self.repetition_penalty != 1.0:
            kw["repetition_penalty"] = self.repetition_penalty
        if self.greedy or self.temperature == 0:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kw.update(
                do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k
            )
        return kw


@dataclass
class Reply:
    text: str
    tokens: int
    seconds: float
    first_token_seconds: float | None = None
    cancelled: bool = False


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab]
    return sorted(set(ids))


def _counting_streamer(tokenizer: Any) -> Any:
    """A TextIteratorStreamer that also counts generated tokens and notes the first one's time."""
    from transformers import TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        def __init__(self) -> None:
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.generated = 0
            self.first_token_at: float | None = None

        def put(self, value: Any) -> None:
            if not self.next_tokens_are_prompt:
                self.generated += int(value.numel())
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
            super().put(value)

    return CountingStreamer()


def _cancel_criteria(event: threading.Event | _AnyEvent) -> Any:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full(
                (input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device
            )

    return StoppingCriteriaList([Cancelled()])


class ChatSession:
    """One conversation with one loaded model."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        system: str | None = None,
        settings: GenerationSettings | None = None,
    ) -> None:
        self.loaded = loaded
        self.system = system or None
        self.settings = settings or GenerationSettings()
        self.settings.check()
        self.history: list[dict] = []  # user/assistant turns; the system prompt is kept apart
        self.notices: list[str] = []
        self.last_reply: Reply | None = None
        self._eot = end_of_turn_ids(loaded.tokenizer)

    def reset(self) -> None:
        """Forget the conversation (the system prompt and settings stay)."""
        self.history.clear()

    def set_system(self, text: str | None) -> None:
        self.system = text or None

    def messages(self, user_text: str | None = None) -> list[dict]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        msgs += self.history
        if user_text is not None:
            msgs.append({"role": "user", "content": user_text})
        return msgs

    def render(self, user_text: str) -> str:
        """The prompt text as the model sees it (its chat template, ready for the reply)."""
        return self.loaded.tokenizer.apply_chat_template(
            self.messages(user_text),
            chat_template=self.loaded.chat_template,
            tokenize=False,
            add_generation_prompt=True,
        )

    def _encode(self, user_text: str) -> Any:
        """Token ids of the prompt, dropping the oldest turns until the reply fits the context."""
        tokenizer = self.loaded.tokenizer
        budget = self.loaded.context_length - self.settings.max_new_tokens
        dropped = 0
        while True:
            ids = tokenizer(self.render(user_text), add_special_tokens=False, return_tensors="pt")
            n = ids["input_ids"].shape[1]
            if n <= budget:
                break
            if not self.history:
                raise UserError(
                    f"the message is too long: {n} prompt tokens + {self.settings.max_new_tokens} "
                    f"new tokens exceed the model's context of {self.loaded.context_length}",
                    hint="shorten the message or the system prompt, or lower max_new_tokens",
                )
            # Drop a whole exchange (user + assistant) so roles keep alternating.
            del self.history[: 2 if len(self.history) >= 2 else 1]
            dropped += 1
        if dropped:
            note = (
                f"dropped the {dropped} oldest turn{'s' if dropped > 1 else ''} to fit the context"
            )
            self.notices.append(note)
            log.info(note)
        return ids

    def stream(self, user_text: str, *, cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply's text as it is generated; the finished reply joins the history.

        Setting `cancel` (or closing the iterator) stops generation within a
        token; the partial reply is kept in the history, as the user saw it.
        """
        inputs = self._encode(user_text)
        try:
            yield from self._generate(inputs, cancel)
        finally:
            text = self.last_reply.text if self.last_reply else ""
            self.history += [
                {"role": "user", "content": user_text},
                {"role": "assistant", "content": text},
            ]

    def complete_ids(self, input_ids: list[int]) -> Reply:
        """Continue an already rendered prompt (token ids), outside the conversation.

        The batch comparison feeds validation prompts exactly as training rendered them.
        """
        import torch

        ids = torch.tensor([list(input_ids)], dtype=torch.long)
        for _ in self._generate({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, None):
            pass
        assert self.last_reply is not None
        return self.last_reply

    def _generate(self, inputs: dict[str, Any], cancel: threading.Event | None) -> Iterator[str]:
        """Run model.generate in a thread and yield its text; sets `last_reply` when done."""
        import torch

        cancel = cancel or threading.Event()
        stop = threading.Event()  # set by us when the consumer goes away
        device = self.loaded.model.device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        streamer = _counting_streamer(self.loaded.tokenizer)
        tokenizer = self.loaded.tokenizer
        kwargs = dict(
            **inputs,
            **self.settings.generate_kwargs(),
            streamer=streamer,
            eos_token_id=self._eot,
            pad_token_id=tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else self._eot[0],
            stopping_criteria=_cancel_criteria(_AnyEvent(cancel, stop)),
        )
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.loaded.model.generate(**kwargs)
            except BaseException as exc:  # re-raised in the consumer's thread
                failure.append(exc)
                streamer.end()

        if self.settings.seed is not None:
            from transformers import set_seed

            set_seed(self.settings.seed)
        self.last_reply = None
        started = time.perf_counter()
        thread = threading.Thread(target=run, name="tunewiz-generate", daemon=True)
        thread.start()
        pieces: list[str] = []
        try:
            for piece in streamer:
                if piece:
                    pieces.append(piece)
                    yield piece
                if cancel.is_set():
                    break
        finally:
            stop.set()
            thread.join()
            elapsed = time.perf_counter() - started
            first = streamer.first_token_at - started if streamer.first_token_at else None
            self.last_reply = Reply(
                "".join(pieces), streamer.generated, elapsed, first, cancel.is_set()
            )
        if failure:
            raise failure[0]

    def reply(self, user_text: str) -> Reply:
        """Generate a whole reply (no streaming)."""
        for _ in self.stream(user_text):
            pass
        assert self.last_reply is not None
        return self.last_reply


def unload(loaded: LoadedModel) -> None:
    """Let go of a model's weights now, so the next model loaded does not share the GPU with it."""
    del loaded.model
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


class _AnyEvent:
    """Looks like one Event, set when any of several is."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)
