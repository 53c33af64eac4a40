"""Rendering rows with the model's chat template, and labelling what is trained.

Masking works on the rendered text, whatever the template: for each assistant
turn we render the conversation up to it with `add_generation_prompt=True` and
up to and including it; the characters in between are that turn's answer (its
end-of-turn token included, trailing whitespace not). Tokens whose first
character lies inside an answer are trained; every other label is -100.

Models without a chat template get DEFAULT_CHAT_TEMPLATE (ChatML, no default
system prompt). It is recorded with the data so training and chat use the same one.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from transformers import BatchEncoding

log = logging.getLogger(__name__)

IGNORE_INDEX = -100

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class Tokenizer(Protocol):
    """What rendering, labelling and previews call on a tokenizer. A Hugging Face fast
    tokenizer (`PreTrainedTokenizerFast`) has all of it; spelt out so that a type checker
    catches a call the data code makes that tokenizers do not have."""

    @property
    def eos_token_id(self) -> int | None: ...

    def __call__(
        self,
        text: str | list[str],
        *,
        add_special_tokens: bool = ...,
        return_attention_mask: bool | None = ...,
        return_token_type_ids: bool | None = ...,
        return_offsets_mapping: bool = ...,
    ) -> BatchEncoding: ...

    # Returns text when called with tokenize=False, as here (the real signature is a union
    # over every mode).
    def apply_chat_template(
        self,
        conversation: list[dict],
        *,
        tools: list[Any] | None = ...,
        chat_template: str | None = ...,
        tokenize: bool = ...,
        add_generation_prompt: bool = ...,
    ) -> Any: ...

    # Returns text for one list of ids, as here.
    def decode(self, token_ids: list[int], *, skip_special_tokens: bool = ...) -> Any: ...


def chat_template_for(tokenizer: Tokenizer | None) -> str:
    """The template rows are rendered with: the tokenizer's own, else DEFAULT_CHAT_TEMPLATE (ChatML).

    ChatML wraps each turn as `<|im_start|>role\\n...<|im_end|>\\n`; a model
    trained on it must stop generating at `<|im_end|>`.
    """
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default") or next(iter(template.values()), None)
    return template or DEFAULT_CHAT_TEMPLATE


# Families whose chat templates render `tools=` and `tool_calls`, for the note shown when
# the user's model cannot. Not Hermes: its tool template is a named one, and the default
# template (the one used, see chat_template_for) has no tools.
TOOL_TEMPLATE_FAMILIES = "Qwen2.5 / Qwen3, Llama 3.1-3.3, Mistral (v3 tokenizers)"
_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "tunewiz_probe_tool",
        "description": "probe",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}
_PROBE_CALL = {
    "id": "call00001",  # Mistral's templates insist on 9-character ids
    "type": "function",
    "function": {"name": "tunewiz_probe_tool", "arguments": {"q": "tunewiz_probe_arg"}},
}


def template_supports_tools(tokenizer: Tokenizer, template: str) -> bool:
    """Whether `template` can express tools, decided by rendering, not by reading it.

    A conversation with one tool definition, an assistant turn calling it, its result and an
    answer is rendered with `tools=[...]`; the template supports tools when the output holds
    both the tool's name from the definitions (it declares tools) and the call's argument
    (it writes tool calls). A template that ignores either, or fails on the probe, does not.
    """
    if "tool" not in template:  # cheap first answer for the many templates without tools
        return False
    probe: list[dict] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [_PROBE_CALL]},
        {"role": "tool", "content": "ok", "tool_call_id": "call00001"},
        {"role": "assistant", "content": "done"},
    ]
    try:
        text = _render(tokenizer, probe, template, False, [_PROBE_TOOL])
    except TemplateError:
        return False
    # twice: once in the definitions, once in the call
    return text.count("tunewiz_probe_tool") >= 2 and "tunewiz_probe_arg" in text


class TemplateError(ValueError):
    """The template refused a row (e.g. it insists on strictly alternating roles)."""


def _render(
    tokenizer: Tokenizer,
    messages: list[dict],
    template: str,
    generation: bool,
    tools: list | None = None,
) -> str:
    """The messages as the template writes them; TemplateError when it refuses them."""
    try:
        text: str = tokenizer.apply_chat_template(
            messages,
            tools=tools,
            chat_template=template,
            tokenize=False,
            add_generation_prompt=generation,
        )
    except Exception as exc:  # jinja raises TemplateError/others from `raise_exception`
        raise TemplateError(str(exc)) from None
    return text


def render(
    messages: list[dict], tokenizer: Tokenizer, template: str, tools: list | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as text, and the (start, end) character spans of its answers.

    With `tools` (definitions, for a template that supports them) every render gets them;
    an assistant turn's span then covers its tool calls too, and `tool` turns (results) are
    outside every span, masked as user turns are.
    """
    full = _render(tokenizer, messages, template, False, tools)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], template, True, tools)
        upto = (
            full
            if i == len(messages) - 1
            else _render(tokenizer, messages[: i + 1], template, False, tools)
        )
        if full.startswith(upto) and upto.startswith(before) and len(before) >= cursor:
            end = len(upto.rstrip())
            spans.append((len(before), end))
            cursor = end
            continue
        # Templates that rewrite earlier turns (e.g. drop reasoning) break the prefix
        # property; then find the answer text itself after the previous one.
        if msg.get("tool_calls"):  # its calls must be trained too, not only its text
            span = _rewritten_turn(full, before, upto, cursor, msg["tool_calls"])
            if span is None:
                raise TemplateError(f"the chat template does not reproduce assistant turn {i}")
            spans.append(span)
            cursor = span[1]
            continue
        start = full.find(msg["content"], cursor)
        if start < 0:
            raise TemplateError(f"the chat template does not reproduce assistant turn {i}")
        end = start + len(msg["content"])
        eos = getattr(tokenizer, "eos_token", None)
        if eos and full.startswith(eos, end):
            end += len(eos)
        spans.append((start, end))
        cursor = end
    return full, spans


def gap_tokens(
    messages: list[dict], gaps: list[tuple[int, str]], tokenizer: Tokenizer, template: str
) -> list[tuple[int, str]]:
    """(token index, what) for each part left out of a row, from `(message index, what)`.

    A part left out before message k is shown before that message's first token, found by
    rendering the messages before it (the prefix the full render starts with).
    """
    full = _render(tokenizer, messages, template, False)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    starts = [start for start, _end in enc["offset_mapping"]]
    out = []
    for index, what in gaps:
        if index <= 0:
            at = 0
        elif index >= len(messages):
            at = len(full)
        else:
            at = len(_render(tokenizer, messages[:index], template, False))
        out.append((bisect.bisect_left(starts, at), what))
    return out


def _rewritten_turn(
    full: str, before: str, upto: str, cursor: int, calls: list[dict]
) -> tuple[int, int] | None:
    """The span of a tool-calling turn that the template renders differently when it is last
    (Qwen3 gives only the last turn an empty think block): the turn as rendered last, less
    the longest leading part the full render leaves out, found right after its prompt."""
    start = len(before)
    if start < cursor or not upto.startswith(before) or not full.startswith(before):
        return None
    turn = upto[start:].rstrip()
    names = [c.get("function", {}).get("name", "") for c in calls]
    for k in range(len(turn)):
        rest = turn[k:]
        if not all(name in rest for name in names):
            return None  # past the calls: this is not the same turn
        if full.startswith(rest, start):
            return start, start + len(rest)
    return None


@dataclass
class Tokenized:
    """One row tokenized and labelled: the tokens, their labels (-100 where not trained)."""

    input_ids: list[int]
    labels: list[int]
    length: int  # before truncation
    trained: int  # trained tokens after truncation
    straddles: bool = False  # a token crosses the start of an answer (not trained)


def tokenize_rendered(
    texts: list[str],
    spans: list[list[tuple[int, int]] | None],
    tokenizer: Tokenizer,
    max_len: int,
    *,
    add_special_tokens: bool = False,
    append_eos: bool = False,
    truncate: bool = True,
) -> list[Tokenized]:
    """Tokenize a batch in one call to the fast tokenizer and label it.

    `spans[i] is None` trains every token of row i (text task, train_on_inputs).
    """
    # Exactly the call a user would make; the answer spans are then mapped to tokens through
    # the fast tokenizer's own alignment (char_to_token), with no offset lists built in Python.
    enc = tokenizer(
        texts,
        add_special_tokens=add_special_tokens,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    eos_id = tokenizer.eos_token_id
    out = []
    for i, ids in enumerate(enc["input_ids"]):
        straddles = False
        if append_eos and eos_id is not None and (not ids or ids[-1] != eos_id):
            ids = ids + [eos_id]
        row_spans = spans[i]
        if row_spans is None:
            labels = list(ids)
        else:
            labels = [IGNORE_INDEX] * len(ids)
            for s, e in row_spans:
                a, b, merged = _token_range(enc, i, s, e)
                labels[a:b] = ids[a:b]
                straddles = straddles or merged
        length = len(ids)
        if truncate and length > max_len:
            ids, labels = ids[:max_len], labels[:max_len]
        trained = len(labels) - labels.count(IGNORE_INDEX)
        out.append(Tokenized(ids, labels, length, trained, straddles))
    return out


def _token_range(enc: BatchEncoding, row: int, start: int, end: int) -> tuple[int, int, bool]:
    """Tokens whose first character lies in [start, end), and whether one crosses `start`.

    The crossing is the token-prefix check: the prompt's tokens must end where the answer
    begins; a token merging both sides is left untrained and reported.
    """
    first = enc.char_to_token(row, start)
    last = enc.char_to_token(row, end - 1) if end > start else None
    if first is None or last is None:  # a character no token covers: walk the offsets
        encodings = enc.encodings
        assert encodings is not None  # a fast tokenizer's (char_to_token above needs one too)
        offsets = encodings[row].offsets
        starts = [o[0] for o in offsets]
        a, b = bisect.bisect_left(starts, start), bisect.bisect_left(starts, end)
        return a, b, a > 0 and offsets[a - 1][1] > start
    span = enc.token_to_chars(row, first)
    assert span is not None  # the token holds character `start`: it has a span
    merged = span.start < start
    return first + merged, last + 1, merged


def masking_preview(example: dict, tokenizer: Tokenizer) -> list[tuple[str, bool]]:
    """(token text, trained?) for each token of a tokenized example, for masking views.

    A preference example holds its sides (`chosen`, `rejected`, or KTO's `completion`): each is
    shown under its name.
    """
    if "input_ids" not in example:
        out: list[tuple[str, bool]] = []
        for side, sub in example.items():
            out.append((("\n" if out else "") + f"── {side} ──\n", False))
            out += masking_preview(sub, tokenizer)
        return out
    ids = example["input_ids"]
    labels = example.get("labels", ids)
    pieces = [tokenizer.decode([t], skip_special_tokens=False) for t in ids]
    return [(piece, lab != IGNORE_INDEX) for piece, lab in zip(pieces, labels, strict=False)]
