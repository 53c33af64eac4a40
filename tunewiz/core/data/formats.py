"""Row formats: telling them apart, and turning each row into one shape.

Every usable row becomes either `{"messages": [{"role", "content"}, ...]}` (roles
system/user/assistant only) or `{"text": str}`. What a row cannot give is
returned as problems `(field, kind, message)`; parts the project does not train
on (images; tool calls, function results and `tools` when the chat template cannot
express them) are counted, not silently lost. With `tools=True` (the template can),
conversations keep them: assistant `tool_calls`, `tool` turns and `{"tools": [...]}`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tunewiz.core.data.tool_turns import Issue, call_turn, result_turn, tool_calls_of, tools_of
from tunewiz.core.errors import UserError

FORMAT_NAMES = {
    "alpaca": "Alpaca (instruction / input / output)",
    "prompt_completion": "prompt / response pairs",
    "openai": "OpenAI chat (messages with role / content)",
    "sharegpt": "ShareGPT (conversations with from / value)",
    "preference": "preference data (chosen / rejected)",
    "kto": "KTO data (one completion with a true/false label)",
    "text": "plain text",
}
# Column pairs recognised as a prompt and its response, in order of preference.
PAIR_COLUMNS = (
    ("prompt", "completion"),
    ("prompt", "response"),
    ("question", "answer"),
    ("query", "response"),
    ("instruction", "response"),
    ("input", "output"),
    ("prompt", "answer"),
    ("question", "response"),
)
USER_ROLES = {"user", "human"}
ASSISTANT_ROLES = {"assistant", "gpt", "chatgpt", "bing", "bard", "model"}
SYSTEM_ROLES = {"system", "developer"}
TOOL_CALL_ROLES = {"function_call", "tool_call"}
TOOL_RESULT_ROLES = {"tool", "function", "observation", "ipython", "tool_response"}
# The chat role each accepted role name stands for (the sets above do not overlap).
CHAT_ROLES = {
    **dict.fromkeys(USER_ROLES, "user"),
    **dict.fromkeys(ASSISTANT_ROLES, "assistant"),
    **dict.fromkeys(SYSTEM_ROLES, "system"),
}
# The names parts left out are counted under in `skipped` (images and others are too).
TOOL_PARTS = ("tool calls", "function results", "tool definitions")

# A row in the common shape (None when it has problems), its problems, the parts left out
Normalized = tuple["dict | None", list[Issue], Counter]
Column = Callable[[str, str], str]  # the user's name for a column: mapping.get(name, default)
# Shared empties for the common clean row: callers only read them.
_NO_ISSUES: list = []
_NO_SKIPS: Counter = Counter()


def detect_format(
    rows: list[dict], columns: dict[str, str], override: str = "auto"
) -> tuple[str, dict, list[str]]:
    """(format, column mapping, evidence) from a sample of rows."""
    mapping = dict(columns)
    if "completion" in mapping and "response" not in mapping:
        mapping["response"] = mapping.pop("completion")
    n = len(rows)
    keys = Counter(k for row in rows for k in row)

    def share(*names: str) -> int:
        cols = [mapping.get(x, x) for x in names]
        return sum(1 for row in rows if all(c in row for c in cols))

    def say(names: str, count: int, fmt: str) -> str:
        return f"{count} of the first {n} rows have {names}: {FORMAT_NAMES[fmt]}"

    if override and override != "auto":
        return _format_as_set(rows, mapping, override)

    if share("chosen", "rejected"):
        return (
            "preference",
            mapping,
            [say("`chosen` and `rejected`", share("chosen", "rejected"), "preference")],
        )
    kto = sum(1 for row in rows if isinstance(row.get(mapping.get("label", "label")), bool))
    if kto and share("completion"):
        return "kto", mapping, [say("`completion` and a true/false `label`", kto, "kto")]
    if share("messages"):
        return "openai", mapping, [say("`messages`", share("messages"), "openai")]
    if share("conversations"):
        return "sharegpt", mapping, [say("`conversations`", share("conversations"), "sharegpt")]
    if "prompt" in mapping and "response" in mapping:
        ev = f"columns mapped: prompt={mapping['prompt']}, response={mapping['response']}"
        return (
            "prompt_completion",
            mapping,
            [ev, say("both", share("prompt", "response"), "prompt_completion")],
        )
    if share("instruction", "output"):
        return (
            "alpaca",
            mapping,
            [say("`instruction` and `output`", share("instruction", "output"), "alpaca")],
        )
    pair = _pair_mapping(rows, mapping)
    if pair:
        cnt = sum(1 for row in rows if pair["prompt"] in row and pair["response"] in row)
        return (
            "prompt_completion",
            {**mapping, **pair},
            [say(f"`{pair['prompt']}` and `{pair['response']}`", cnt, "prompt_completion")],
        )
    if share("text"):
        return "text", mapping, [say("`text`", share("text"), "text")]
    found = ", ".join(f"`{k}`" for k, _ in keys.most_common(12)) or "none"
    raise UserError(
        f"cannot tell the format of this data; columns found: {found}",
        where="data.format",
        hint="map your columns, e.g. --columns prompt=question,response=answer (or text=body), "
        "or set --format",
    )


def _format_as_set(rows: list[dict], mapping: dict, fmt: str) -> tuple[str, dict, list[str]]:
    """The format the user set, not detected; for prompt_completion, the columns that hold
    the prompt and the response (a known pair found in the rows, else the mapped names)."""
    evidence = [f"format set to {fmt} (not detected)"]
    if fmt == "prompt_completion":
        mapping = _pair_mapping(rows, mapping) or mapping
        mapping.setdefault("prompt", "prompt")
        mapping.setdefault("response", "response")
    return fmt, mapping, evidence


def _pair_mapping(rows: list[dict], mapping: dict) -> dict | None:
    for p, r in PAIR_COLUMNS:
        if any(p in row and r in row for row in rows):
            return {"prompt": mapping.get("prompt", p), "response": mapping.get("response", r)}
    return None


def suggest_task(fmt: str) -> str:
    """The task that trains on data of this format."""
    return {"text": "text", "openai": "chat", "sharegpt": "chat"}.get(fmt, "instruction")


def normalize(
    row: dict, fmt: str, mapping: dict, *, tools: bool = False, removed: list | None = None
) -> Normalized:
    """One row in the common shape, or the problems that stop it.

    `tools`: keep tool calls, results and definitions (the template can render them).
    `removed` (when given) receives `(message index, what)` for each tool part left out,
    the index being the kept message it stood before, for previews that show the gap.
    """
    col = mapping.get
    if fmt == "text":
        return _text_row(row, col)
    if fmt == "alpaca":
        return _alpaca(row, col)
    if fmt == "prompt_completion":
        return _prompt_completion(row, col)
    if fmt == "openai":
        return _openai(row, col, tools, removed)
    if fmt == "sharegpt":
        return _sharegpt(row, col, tools, removed)
    if fmt == "preference":
        return _preference(row, col)
    raise UserError(f"unknown format {fmt!r}", where="data.format", hint=", ".join(FORMAT_NAMES))


def _text_row(row: dict, col: Column) -> Normalized:
    """`{"text"}` from the row's text column."""
    name = col("text", "text")
    issues = _need_text(row, name)
    return (None if issues else {"text": row[name]}), issues, _NO_SKIPS


def _prompt_completion(row: dict, col: Column) -> Normalized:
    """A prompt and its response (and an optional system prompt) as one exchange."""
    p, r = col("prompt", "prompt"), col("response", "response")
    issues = _need_text(row, p) + _need_text(row, r)
    msgs = _system(row, col("system", "system"), issues)
    if issues:
        return None, issues, _NO_SKIPS
    msgs += [{"role": "user", "content": row[p]}, {"role": "assistant", "content": row[r]}]
    return {"messages": msgs}, [], _NO_SKIPS


def _openai(row: dict, col: Column, tools: bool, removed: list | None) -> Normalized:
    """`messages` with role / content, and the row's tool definitions."""
    name = col("messages", "messages")
    out, issues, skipped = _conversation(row, name, "role", "content", Counter(), tools, removed)
    return _with_tools(row, out, issues, skipped, tools, removed)


def _sharegpt(row: dict, col: Column, tools: bool, removed: list | None) -> Normalized:
    """`conversations` with from / value, the row's `system` first when the turns have none,
    and the row's tool definitions."""
    name = col("conversations", "conversations")
    out, issues, skipped = _conversation(row, name, "from", "value", Counter(), tools, removed)
    if out is not None and isinstance(row.get("system"), str) and row["system"].strip():
        if out["messages"][0]["role"] != "system":
            out["messages"].insert(0, {"role": "system", "content": row["system"]})
            if removed:  # the gaps move down with the messages
                removed[:] = [(index + 1, what) for index, what in removed]
    return _with_tools(row, out, issues, skipped, tools, removed)


def _need_text(row: dict, name: str) -> list[Issue]:
    """The problem with the row's column `name` if it is not text with something in it."""
    value = row.get(name)
    if type(value) is str and value.strip():  # the common case, first
        return _NO_ISSUES
    if name not in row or row[name] is None:
        return [(name, "missing_field", f"missing field '{name}'")]
    value = row[name]
    if not isinstance(value, str):
        return [(name, "non_string", f"'{name}' should be text, got {type(value).__name__}")]
    if not value.strip():
        return [(name, "empty_field", f"'{name}' is empty")]
    return []


def _system(row: dict, name: str, issues: list[Issue]) -> list[dict]:
    """The row's system prompt as a message (none when empty); a non-text one is an issue."""
    value = row.get(name)
    if value is None or value == "":
        return []
    if not isinstance(value, str):
        issues.append((name, "non_string", f"'{name}' should be text, got {type(value).__name__}"))
        return []
    return [{"role": "system", "content": value}] if value.strip() else []


def _alpaca(row: dict, col: Column) -> Normalized:
    """Instruction (with its input below it) and output, after the system prompt and any
    earlier exchanges in `history`."""
    ins, inp, out = (
        col("instruction", "instruction"),
        col("input", "input"),
        col("output", "output"),
    )
    sys_name, hist_name = col("system", "system"), col("history", "history")
    instruction, output = row.get(ins), row.get(out)
    extra, system = row.get(inp), row.get(sys_name)
    if (  # the common clean row, without building problem lists
        type(instruction) is str
        and type(output) is str
        and instruction.strip()
        and output.strip()
        and (extra is None or type(extra) is str)
        and (system is None or type(system) is str)
        and not row.get(hist_name)
    ):
        msgs = [{"role": "system", "content": system}] if system and system.strip() else []
        prompt = instruction + "\n\n" + extra if extra and extra.strip() else instruction
        msgs.append({"role": "user", "content": prompt})
        msgs.append({"role": "assistant", "content": output})
        return {"messages": msgs}, _NO_ISSUES, _NO_SKIPS
    issues = _need_text(row, ins) + _need_text(row, out)
    if extra is not None and not isinstance(extra, str):
        issues.append((inp, "non_string", f"'{inp}' should be text, got {type(extra).__name__}"))
    msgs = _system(row, sys_name, issues)
    history = row.get(hist_name) or []
    if not isinstance(history, list) or not all(
        isinstance(h, (list, tuple)) and len(h) == 2 and all(isinstance(x, str) for x in h)
        for h in history
    ):
        issues.append(
            (hist_name, "non_string", f"'{hist_name}' should be a list of [prompt, response] pairs")
        )
        history = []
    if issues:
        return None, issues, _NO_SKIPS
    for q, a in history:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    prompt = row[ins] + ("\n\n" + extra if isinstance(extra, str) and extra.strip() else "")
    msgs += [{"role": "user", "content": prompt}, {"role": "assistant", "content": row[out]}]
    return {"messages": msgs}, _NO_ISSUES, _NO_SKIPS


def _content(value: object, field: str, skipped: Counter) -> tuple[str | None, Issue | None]:
    """A message's text; lists of parts keep their text parts and count the rest."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        texts = []
        for part in value:
            kind = part.get("type", "text")
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif "image" in kind:
                skipped["images"] += 1
            elif "audio" in kind:
                skipped["audio"] += 1
            else:
                skipped[f"{kind} parts"] += 1
        return "\n".join(texts), None
    return None, (field, "non_string", f"'{field}' should be text, got {type(value).__name__}")


def _conversation(
    row: dict,
    name: str,
    role_key: str,
    text_key: str,
    skipped: Counter,
    tools: bool,
    removed: list | None,
) -> Normalized:
    """The row's list of turns (column `name`) as messages, or why it has none."""
    turns = row.get(name)
    if turns is None:
        return None, [(name, "missing_field", f"missing field '{name}'")], skipped
    if not isinstance(turns, list):
        return None, [(name, "non_string", f"'{name}' should be a list of messages")], skipped
    return conversation_from_turns(turns, name, role_key, text_key, skipped, tools, removed)


def _with_tools(
    row: dict,
    out: dict | None,
    issues: list[Issue],
    skipped: Counter,
    tools: bool,
    removed: list | None,
) -> Normalized:
    """The row's `tools` definitions: kept beside the messages, or left out and counted
    (a malformed field is a problem only when it would be used)."""
    defs, bad = tools_of(row)
    if out is None or (defs is None and bad is None):
        return out, issues, skipped
    if tools:
        if bad:
            return None, [*issues, bad], skipped
        out["tools"] = defs
        return out, issues, skipped
    skipped["tool definitions"] += len(defs) if defs else 1
    if removed is not None:
        removed.insert(0, (0, "tools field"))
    return out, issues, skipped


def conversation_from_turns(
    turns: list,
    name: str,
    role_key: str,
    text_key: str,
    skipped: Counter,
    tools: bool = False,
    removed: list | None = None,
) -> Normalized:
    """Turns as messages; tool parts kept with `tools`, else counted (and placed in `removed`)."""
    how = _TurnReading(role_key, text_key, skipped, tools, removed)
    issues: list[Issue] = []
    msgs: list[dict] = []
    for i, turn in enumerate(turns):
        message, issue = _turn_message(turn, f"{name}[{i}]", how, at=len(msgs))
        if issue is not None:
            issues.append(issue)
        elif message is not None:
            msgs.append(message)
    if issues:
        return None, issues, skipped
    order = check_turn_order(msgs)
    if order:
        return None, [(name, "turn_order", order)], skipped
    return {"messages": msgs}, [], skipped


@dataclass
class _TurnReading:
    """How a conversation's turns are read, and where the parts left out are counted."""

    role_key: str  # "role" (OpenAI) or "from" (ShareGPT)
    text_key: str  # "content" or "value"
    skipped: Counter
    tools: bool  # keep tool calls and results (the template can express them)
    removed: list | None  # receives (message index, what) for each part left out

    def leave_out(self, kind: str, at: int) -> None:
        """Count a tool part that is not trained, placed before kept message `at`."""
        self.skipped[kind] += 1
        if self.removed is not None:
            self.removed.append((at, kind[:-1]))  # "tool calls" -> "tool call"


def _turn_message(
    turn: object, here: str, how: _TurnReading, at: int
) -> tuple[dict | None, Issue | None]:
    """One turn as a message, or the problem with it; neither when the turn is left out.
    `at` is the number of messages kept before it."""
    if not isinstance(turn, dict):
        return None, (here, "non_string", "a message should be an object")
    role_raw = turn.get(how.role_key, turn.get("role", turn.get("from")))
    text = turn.get(how.text_key, turn.get("content", turn.get("value")))
    role = str(role_raw).lower() if role_raw is not None else None
    if role in TOOL_CALL_ROLES or role in TOOL_RESULT_ROLES:
        return _tool_turn(turn, role in TOOL_CALL_ROLES, text, here, how, at)
    calls = None
    if turn.get("tool_calls") or turn.get("function_call"):
        if not how.tools:
            how.leave_out("tool calls", at + bool(text))  # the call follows its text
            if not text:  # a message that only calls a tool: nothing to learn from it here
                return None, None
        else:
            calls, bad = tool_calls_of(turn, here)
            if bad:
                return None, bad
            text = text or ""
    if role is None:
        return None, (here, "missing_field", f"message has no '{how.role_key}'")
    return _chat_message(role, role_raw, text, calls, here, how)


def _tool_turn(
    turn: dict, calling: bool, text: object, here: str, how: _TurnReading, at: int
) -> tuple[dict | None, Issue | None]:
    """A turn that calls a tool or holds its result (ShareGPT's function_call, observation):
    a message when the template can express it, else left out and counted."""
    if not how.tools:
        how.leave_out("tool calls" if calling else "function results", at)
        return None, None
    call, bad = call_turn(text, f"{here}.{how.text_key}") if calling else (None, None)
    if bad:
        return None, bad
    return call or result_turn(turn, text), None


def _chat_message(
    role: str,
    role_raw: object,
    text: object,
    calls: list[dict] | None,
    here: str,
    how: _TurnReading,
) -> tuple[dict | None, Issue | None]:
    """A user, assistant or system message (with the assistant's tool calls), or the problem
    with it: an unknown role, text missing or empty, a non-assistant turn calling tools."""
    chat_role = CHAT_ROLES.get(role)
    if chat_role is None:
        return None, (here, "unknown_role", f"unknown role {role_raw!r}")
    content, bad = _content(text, f"{here}.{how.text_key}", how.skipped)
    if bad:
        missing = (here, "missing_field", f"message has no '{how.text_key}'")
        return None, bad if text is not None else missing
    assert content is not None  # _content gives the text or the issue, never neither
    if calls and chat_role != "assistant":
        return None, (f"{here}.tool_calls", "unknown_role", f"a {chat_role} turn cannot call tools")
    if not content.strip() and not calls:
        return None, (f"{here}.{how.text_key}", "empty_field", f"empty {chat_role} message")
    message: dict = {"role": chat_role, "content": content}
    if calls:
        message["tool_calls"] = calls
    return message, None


def check_turn_order(msgs: list[dict]) -> str | None:
    """Why a conversation cannot be trained as is, or None."""
    body = list(msgs)
    while body and body[0]["role"] == "system":
        body.pop(0)
    if any(m["role"] == "system" for m in body):
        return "a system message in the middle of the conversation"
    # Tool results answer the call before them; around them the assistant may speak twice
    # in a row (call, then answer), so they are checked here and left out of the rest.
    for a, b in zip([{"role": "start"}, *body], body, strict=False):
        if b["role"] == "tool" and not (a["role"] == "tool" or a.get("tool_calls")):
            return "a tool result without a tool call before it"
    if body and body[-1]["role"] == "tool":
        return "the conversation does not end with an assistant turn"
    body = [m for m in body if m["role"] != "tool"]
    if not any(m["role"] == "user" for m in body):
        return "no user turn"
    if not body or body[-1]["role"] != "assistant":
        return "the conversation does not end with an assistant turn"
    if body[0]["role"] != "user":
        return "the conversation starts with an assistant turn"
    for a, b in zip(body, body[1:], strict=False):
        if a["role"] == b["role"] and not (a.get("tool_calls") or b.get("tool_calls")):
            return f"two {a['role']} turns in a row"
    return None


def _preference(row: dict, col: Column) -> Normalized:
    """Preference rows trained as instruction data on the chosen answer (rejected is not used)."""
    from tunewiz.core.data.preference_rows import normalize_pair

    pair, issues, skipped = normalize_pair(row, col, strict=False)
    if pair is None:
        return None, issues, skipped
    return {"messages": pair["prompt"] + pair["chosen"]}, [], skipped
