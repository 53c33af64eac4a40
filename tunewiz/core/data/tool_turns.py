"""Tool calls, tool results and tool definitions, in the shape chat templates expect.

Used only when the model's chat template can express tools (`template_supports_tools`):
an assistant turn keeps `tool_calls` (OpenAI style: `[{"type": "function", "function":
{"name", "arguments"}}]`), a result becomes `{"role": "tool", "content"}`, and the row's
`tools` list is passed to `apply_chat_template(..., tools=...)`. Otherwise these parts are
left out and counted (see `formats.conversation_from_turns`).
"""

from __future__ import annotations

import json

Issue = tuple[str, str, str]  # (field, kind, message): a problem with a row (formats uses it)


def tool_calls_of(turn: dict, here: str) -> tuple[list[dict] | None, Issue | None]:
    """An assistant turn's `tool_calls` (or legacy `function_call`) in OpenAI shape."""
    calls = turn.get("tool_calls")
    if calls is None and turn.get("function_call") is not None:
        calls = [{"type": "function", "function": turn["function_call"]}]
    if isinstance(calls, dict):
        calls = [calls]
    if not isinstance(calls, list):
        return None, (f"{here}.tool_calls", "non_string", "'tool_calls' should be a list")
    out = []
    for j, call in enumerate(calls):
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            where = f"{here}.tool_calls[{j}]"
            return None, (where, "missing_field", "a tool call needs a function name")
        kept = {"type": "function", "function": _function(fn)}
        if isinstance(call.get("id"), str):  # templates that pair results with calls use it
            kept["id"] = call["id"]
        out.append(kept)
    return out, None


def call_turn(text: object, here: str) -> tuple[dict | None, Issue | None]:
    """A ShareGPT `function_call` turn (its value a JSON `{"name", "arguments"}`) as an
    assistant message that calls the tool."""
    fn = _json(text)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        return None, (here, "non_string", 'a function call should be JSON {"name", "arguments"}')
    call = {"type": "function", "function": _function(fn)}
    return {"role": "assistant", "content": "", "tool_calls": [call]}, None


def result_turn(turn: dict, text: object) -> dict:
    """A tool's result as a `tool` message (its id and name kept for templates that use them)."""
    content = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    msg = {"role": "tool", "content": content}
    for key in ("tool_call_id", "name"):
        if isinstance(turn.get(key), str):
            msg[key] = turn[key]
    return msg


def tools_of(row: dict) -> tuple[list[dict] | None, Issue | None]:
    """The row's `tools` definitions (a list, or that list as a JSON string); None if none."""
    value = row.get("tools")
    if value is None or value == "" or value == []:
        return None, None
    value = _json(value)
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        return None, ("tools", "non_string", "'tools' should be a list of tool definitions")
    return value, None


def _function(fn: dict) -> dict:
    # Templates (Qwen2.5, Llama 3.1) write `arguments | tojson`: a JSON string would be
    # quoted twice, so arguments given as JSON text become the object they spell.
    args = _json(fn.get("arguments", fn.get("parameters", {})))
    return {"name": fn["name"], "arguments": args}


def _json(value: object) -> object:
    """The value a JSON string spells; any other value (or text that is not JSON) as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
