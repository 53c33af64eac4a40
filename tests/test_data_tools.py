"""Tool calls, tool results and `tools`: kept and rendered when the chat template can express
them (assistant calls trained, results not), left out, counted and placed otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewiz.core.config import DataConfig
from tunewiz.core.data import IGNORE_INDEX, inspect_data, prepare, row_view
from tunewiz.core.data.template import template_supports_tools

# A small Qwen2.5-like template: definitions in a system block, calls as <tool_call> JSON.
TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n# Tools\n"
    "{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n"
    "{% if m.content %}{{ m.content }}\n{% endif %}"
    "{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
OPENAI_ROW = {
    "tools": [WEATHER],
    "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "RESULT_MINUS_FOUR"},
        {"role": "assistant", "content": "It is -4 in Oslo."},
    ],
}
SHAREGPT_ROW = {
    "tools": json.dumps([WEATHER]),
    "conversations": [
        {"from": "human", "value": "Weather in Oslo?"},
        {
            "from": "function_call",
            "value": '{"name": "get_weather", "arguments": {"city": "Oslo"}}',
        },
        {"from": "observation", "value": "RESULT_MINUS_FOUR"},
        {"from": "gpt", "value": "It is -4 in Oslo."},
    ],
}


@pytest.fixture(scope="module")
def plain_tokenizer(default_model_dir):
    """The bundled SmolLM2 tokenizer, whose template has no tools."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture(scope="module")
def tools_tokenizer(default_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    tok.chat_template = TOOLS_TEMPLATE
    return tok


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def trained_text(example, tokenizer) -> str:
    ids = [
        t
        for t, lab in zip(example["input_ids"], example["labels"], strict=True)
        if lab != IGNORE_INDEX
    ]
    return tokenizer.decode(ids)


def untrained_text(example, tokenizer) -> str:
    ids = [
        t
        for t, lab in zip(example["input_ids"], example["labels"], strict=True)
        if lab == IGNORE_INDEX
    ]
    return tokenizer.decode(ids)


def test_supports_tools_is_decided_by_rendering(plain_tokenizer, tools_tokenizer):
    assert template_supports_tools(tools_tokenizer, TOOLS_TEMPLATE)
    assert not template_supports_tools(plain_tokenizer, plain_tokenizer.chat_template)
    # Mentioning tools is not enough: this one names `tools` but never writes a call.
    names_only = "{% if tools %}tools!{% endif %}" + plain_tokenizer.chat_template
    assert not template_supports_tools(plain_tokenizer, names_only)


@pytest.mark.parametrize("row", [OPENAI_ROW, SHAREGPT_ROW], ids=["openai", "sharegpt"])
def test_tool_calls_are_trained_and_results_are_not(tmp_path, tools_tokenizer, row):
    data = write_jsonl(tmp_path / "t.jsonl", [row])
    cfg = DataConfig(data=str(data), task="chat", validation_split=0)
    prepared = prepare(cfg, tools_tokenizer)
    report = prepared.report
    assert report.rows_ok == 1 and report.skipped_parts == {}
    assert any("1 rows use tools" in n for n in report.notes)
    norm = report.preview[0]
    assert norm["tools"] == [WEATHER]
    call = norm["messages"][1]["tool_calls"][0]["function"]
    assert call == {"name": "get_weather", "arguments": {"city": "Oslo"}}
    assert norm["messages"][2]["role"] == "tool"

    example = prepared.train[0]
    trained, untrained = (f(example, tools_tokenizer) for f in (trained_text, untrained_text))
    assert (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>' in trained
    )
    assert "It is -4 in Oslo." in trained
    assert "RESULT_MINUS_FOUR" in untrained and "RESULT_MINUS_FOUR" not in trained
    assert "Weather in Oslo?" in untrained and "# Tools" in untrained


def test_a_call_rendered_differently_when_last_is_still_trained(tmp_path, tools_tokenizer):
    """Like Qwen3, which gives only the last assistant turn an empty think block: the call
    turn is not a prefix of the whole, and is found after its prompt instead."""
    template = TOOLS_TEMPLATE.replace(
        "<|im_start|>assistant\n{% if m.content %}",
        "<|im_start|>assistant\n{% if loop.last %}<think></think>{% endif %}{% if m.content %}",
    )
    assert template != TOOLS_TEMPLATE
    tools_tokenizer.chat_template, saved = template, tools_tokenizer.chat_template
    try:
        data = write_jsonl(tmp_path / "t.jsonl", [OPENAI_ROW])
        prepared = prepare(
            DataConfig(data=str(data), task="chat", validation_split=0), tools_tokenizer
        )
    finally:
        tools_tokenizer.chat_template = saved
    trained = trained_text(prepared.train[0], tools_tokenizer)
    assert '<tool_call>{"name": "get_weather"' in trained and "<think>" not in trained
    assert "It is -4 in Oslo." in trained and "RESULT_MINUS_FOUR" not in trained


def test_a_template_without_tools_leaves_them_out_and_says_which_can(tmp_path, plain_tokenizer):
    data = write_jsonl(tmp_path / "t.jsonl", [OPENAI_ROW])
    report = inspect_data(DataConfig(data=str(data), task="chat"), plain_tokenizer)
    assert report.rows_ok == 1
    assert report.skipped_parts == {"tool calls": 1, "function results": 1, "tool definitions": 1}
    assert [m["role"] for m in report.preview[0]["messages"]] == ["user", "assistant"]
    (note,) = [n for n in report.notes if "cannot express tools" in n]
    assert "Qwen2.5" in note and "Llama 3.1" in note


def test_preview_places_what_was_left_out(tmp_path, plain_tokenizer):
    data = write_jsonl(tmp_path / "t.jsonl", [OPENAI_ROW])
    view = row_view(DataConfig(data=str(data), task="chat"), 1, plain_tokenizer)
    assert view.example is not None
    assert [what for _, what in view.gaps] == ["tools field", "tool call", "function result"]
    ids = view.example["input_ids"]
    # The call and its result stood between the question and the answer.
    at = view.gaps[1][0]
    assert view.gaps[2][0] == at
    assert "Weather in Oslo?" in plain_tokenizer.decode(ids[:at])
    assert plain_tokenizer.decode(ids[at:]).startswith("<|im_start|>assistant\nIt is -4")


def test_supported_preview_shows_the_tool_turns(tmp_path, tools_tokenizer):
    data = write_jsonl(tmp_path / "t.jsonl", [OPENAI_ROW])
    view = row_view(DataConfig(data=str(data), task="chat"), 1, tools_tokenizer)
    assert view.gaps == [] and view.example is not None
    assert "RESULT_MINUS_FOUR" in untrained_text(view.example, tools_tokenizer)


@pytest.mark.parametrize(
    "turns, message",
    [
        (
            [
                {"role": "user", "content": "q"},
                {"role": "tool", "content": "r"},
                {"role": "assistant", "content": "a"},
            ],
            "a tool result without a tool call before it",
        ),
        (
            [{"role": "tool", "content": "r"}, *OPENAI_ROW["messages"]],
            "a tool result without a tool call before it",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {}}]},
                {"role": "assistant", "content": "a"},
            ],
            "a tool call needs a function name",
        ),
    ],
)
def test_bad_tool_turns_are_problems_with_places(tmp_path, tools_tokenizer, turns, message):
    data = write_jsonl(tmp_path / "t.jsonl", [{"messages": turns}])
    report = inspect_data(DataConfig(data=str(data), task="chat"), tools_tokenizer)
    assert report.rows_ok == 0
    assert [p.message for p in report.problems] == [message]
    assert report.problems[0].where.startswith("t.jsonl:1")


def test_a_malformed_tools_field_matters_only_when_used(tmp_path, plain_tokenizer, tools_tokenizer):
    row = {**OPENAI_ROW, "tools": "not json"}
    cfg = DataConfig(data=str(write_jsonl(tmp_path / "t.jsonl", [row])), task="chat")
    left_out = inspect_data(cfg, plain_tokenizer)
    assert left_out.rows_ok == 1 and left_out.skipped_parts["tool definitions"] == 1
    used = inspect_data(cfg, tools_tokenizer)
    assert used.rows_ok == 0
    assert [(p.where, p.message) for p in used.problems] == [
        ("t.jsonl:1 field 'tools'", "'tools' should be a list of tool definitions")
    ]
