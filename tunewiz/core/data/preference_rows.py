"""Preference rows in one shape: `{"prompt", "chosen", "rejected"}` or KTO's `{"prompt", "completion", "label"}`.

Each side is a list of `{"role", "content"}` messages (TRL's conversational
format), so the model's own chat template renders them. Layouts read:

- `prompt` / `chosen` / `rejected` as text or as message lists (TRL, LLaMA-Factory);
- `chosen` / `rejected` as whole conversations sharing their beginning, with no
  prompt (Anthropic HH, as message lists or as "\\n\\nHuman: ... \\n\\nAssistant: ..." text);
- ShareGPT: `conversations` + `chosen` / `rejected` messages (`{"from", "value"}`);
- KTO: `prompt` + one `completion` + a boolean `label` (true = a good answer).

Problems come back as `(field, kind, message)`, like `tunewiz.core.data.formats.normalize`.
"""

from __future__ import annotations

import re
from collections import Counter

from tunewiz.core.data.formats import (
    CHAT_ROLES,
    Column,
    Issue,
    Normalized,
    _content,
    _system,
    check_turn_order,
    conversation_from_turns,
)

PROMPT_COLUMNS = ("prompt", "instruction", "question", "input")
_HH_TURN = re.compile(r"\n*(Human|Assistant):\s?")


def normalize_pair(row: dict, col: Column, *, strict: bool = True) -> Normalized:
    """`{"prompt", "chosen", "rejected"}` from a pair row; `strict` also refuses equal or empty sides."""
    skipped: Counter = Counter()
    names = col("chosen", "chosen"), col("rejected", "rejected")
    prompt, issues = _prompt(row, col, skipped)
    sides = []
    for name in names:
        msgs, side_issues = _side(row, name, skipped)
        issues += side_issues
        sides.append(msgs)
    if issues:
        return None, issues, skipped
    chosen, rejected = sides
    if prompt is None:  # HH style: the shared beginning is the prompt
        prompt, chosen, rejected = _split_shared(chosen, rejected)
    else:
        chosen, rejected = _strip_prefix(prompt, chosen), _strip_prefix(prompt, rejected)
    for name, side in zip(names, (chosen, rejected), strict=True):
        issues += _check_completion(name, prompt, side, strict=strict or name == names[0])
    if not issues and strict and _text(chosen) == _text(rejected):
        issues.append((names[0], "same_answers", f"'{names[0]}' and '{names[1]}' are the same"))
    if issues:
        return None, issues, skipped
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}, [], skipped


def normalize_kto(row: dict, col: Column) -> Normalized:
    """`{"prompt", "completion", "label"}` from a KTO row."""
    skipped: Counter = Counter()
    name, label_name = col("completion", "completion"), col("label", "label")
    prompt, issues = _prompt(row, col, skipped)
    completion, side_issues = _side(row, name, skipped)
    issues += side_issues
    label = row.get(label_name)
    if not isinstance(label, bool):
        got = "nothing" if label is None else repr(label)
        issues.append(
            (label_name, "non_bool", f"'{label_name}' should be true or false, got {got}")
        )
    if prompt is None and not issues:
        issues.append((col("prompt", "prompt"), "missing_field", "missing field 'prompt'"))
    if issues or prompt is None or completion is None:
        return None, issues, skipped
    completion = _strip_prefix(prompt, completion)
    issues = _check_completion(name, prompt, completion, strict=True)
    if issues:
        return None, issues, skipped
    return {"prompt": prompt, "completion": completion, "label": label}, [], skipped


def unpair(pair: dict) -> list[dict]:
    """A chosen/rejected pair as two KTO rows (KTO reads pairs this way too)."""
    return [
        {"prompt": pair["prompt"], "completion": pair["chosen"], "label": True},
        {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False},
    ]


# -- parts ---------------------------------------------------------------------


def _prompt(row: dict, col: Column, skipped: Counter) -> tuple[list[dict] | None, list[Issue]]:
    """The prompt messages, None when the row has none (HH style), or the problems with it."""
    for name in ("conversations", "messages"):
        if isinstance(row.get(name), list):
            return _prompt_turns(row[name], name, skipped)
    issues: list[Issue] = []
    for key in PROMPT_COLUMNS:
        name = col(key, key)
        value = row.get(name)
        if isinstance(value, list):
            return _prompt_turns(value, name, skipped)
        if isinstance(value, str) and value.strip():
            extra = row.get("input") if key == "instruction" else None
            text = value + ("\n\n" + extra if isinstance(extra, str) and extra.strip() else "")
            msgs = _system(row, col("system", "system"), issues)
            return msgs + [{"role": "user", "content": text}], issues
        if name in row and key == "prompt":
            return None, [(name, "empty_field", f"'{name}' is empty")]
    return None, issues


def _prompt_turns(
    turns: list, name: str, skipped: Counter
) -> tuple[list[dict] | None, list[Issue]]:
    # A prompt ends where the answer starts: checked as a conversation with a placeholder answer.
    probe = [*turns, {"role": "assistant", "content": "·"}]
    out, issues, _ = conversation_from_turns(probe, name, "role", "content", skipped)
    if out is None:
        return None, issues
    return out["messages"][:-1], []


def _side(row: dict, name: str, skipped: Counter) -> tuple[list[dict], list[Issue]]:
    value = row.get(name)
    if value is None:
        return [], [(name, "missing_field", f"missing field '{name}'")]
    if isinstance(value, str):
        if _HH_TURN.match(value) or "\n\nHuman:" in value:
            return _hh_turns(value), []
        return [{"role": "assistant", "content": value}], []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return [], [(name, "non_string", f"'{name}' should be text or messages")]
    msgs = []
    for i, turn in enumerate(value):
        here = f"{name}[{i}]"
        if not isinstance(turn, dict):
            return [], [(here, "non_string", "a message should be an object")]
        raw = str(turn.get("role", turn.get("from", "assistant"))).lower()
        role = CHAT_ROLES.get(raw)
        if role is None:
            return [], [(here, "unknown_role", f"unknown role {raw!r}")]
        text, bad = _content(turn.get("content", turn.get("value")), here, skipped)
        if bad:
            return [], [bad]
        msgs.append({"role": role, "content": text})
    return msgs, []


def _hh_turns(text: str) -> list[dict]:
    parts = _HH_TURN.split(text)
    msgs = []
    for who, said in zip(parts[1::2], parts[2::2], strict=False):
        msgs.append({"role": "user" if who == "Human" else "assistant", "content": said.strip()})
    return msgs


def _split_shared(
    chosen: list[dict], rejected: list[dict]
) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt, chosen, rejected) from two whole conversations: the prompt is the turns both
    begin with, short of each one's last turn."""
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    return chosen[:n], chosen[n:], rejected[n:]


def _strip_prefix(prompt: list[dict], side: list[dict]) -> list[dict]:
    return (
        side[len(prompt) :] if side[: len(prompt)] == prompt and len(side) > len(prompt) else side
    )


def _check_completion(
    name: str, prompt: list[dict], side: list[dict], *, strict: bool
) -> list[Issue]:
    if not side or any(m["role"] != "assistant" for m in side):
        return [(name, "turn_order", f"'{name}' should be the assistant's answer")]
    if not all(isinstance(m["content"], str) for m in side):
        return [(name, "non_string", f"'{name}' should be text")]
    if strict and not _text(side).strip():
        return [(name, "empty_field", f"'{name}' is empty")]
    order = check_turn_order(prompt + side[:1])
    return [(name, "turn_order", order)] if order else []


def _text(side: list[dict]) -> str:
    return "\n".join(str(m.get("content", "")) for m in side)
