"""The chat engine on real models: templates, history, streaming, cancel, context trimming."""

from __future__ import annotations

import threading

import pytest

from tunewiz.core.chat import ChatSession, GenerationSettings
from tunewiz.core.errors import UserError
from tunewiz.core.loading import load_for_chat


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_for_chat(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def smol(default_model_dir):
    return load_for_chat("default", device="cpu")


@pytest.mark.slow
def test_bundled_model_streams_a_sensible_greedy_answer_and_stops_at_end_of_turn(smol):
    session = ChatSession(smol, settings=GenerationSettings(greedy=True, max_new_tokens=40))
    pieces = list(session.stream("What is the capital of France? Answer in one short sentence."))
    text = "".join(pieces)
    assert len(pieces) > 1  # arrived in pieces, not at once
    assert "Paris" in text
    assert "<|im_end|>" not in text and "<|im_start|>" not in text
    reply = session.last_reply
    assert reply.text == text and 0 < reply.tokens < 40  # stopped at end-of-turn, not at the limit
    assert session.history == [
        {"role": "user", "content": "What is the capital of France? Answer in one short sentence."},
        {"role": "assistant", "content": text},
    ]


def test_history_and_system_prompt_are_rendered_with_the_models_template(tiny):
    session = ChatSession(
        tiny, system="Be brief.", settings=GenerationSettings(max_new_tokens=3, seed=1)
    )
    session.reply("hello")
    prompt = session.render("and again")
    assert prompt.startswith(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello<|im_end|>"
    )
    assert prompt.endswith("<|im_start|>user\nand again<|im_end|>\n<|im_start|>assistant\n")
    session.set_system(None)
    # The bundled template adds its own default system prompt when there is none.
    assert "You are a helpful AI assistant named SmolLM" in session.render("x")
    session.reset()
    assert session.history == [] and "hello" not in session.render("x")


def test_same_seed_same_reply_and_greedy_is_deterministic(tiny):
    settings = GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=12, seed=7)
    a = ChatSession(tiny, settings=settings).reply("hi").text
    b = ChatSession(tiny, settings=settings).reply("hi").text
    c = ChatSession(
        tiny, settings=GenerationSettings(temperature=1.0, top_k=0, max_new_tokens=12, seed=8)
    )
    assert a == b and a != c.reply("hi").text
    g = GenerationSettings(greedy=True, max_new_tokens=12)
    assert (
        ChatSession(tiny, settings=g).reply("hi").text
        == ChatSession(tiny, settings=g).reply("hi").text
    )


def test_cancel_stops_generation_promptly_and_keeps_the_partial_reply(tiny):
    # Random weights rarely produce the end-of-turn token, so without cancel this would run 400 tokens.
    session = ChatSession(tiny, settings=GenerationSettings(greedy=True, max_new_tokens=400))
    cancel = threading.Event()
    for n, _ in enumerate(session.stream("go", cancel=cancel)):
        if n == 2:
            cancel.set()
    reply = session.last_reply
    assert reply.cancelled and reply.tokens < 20
    assert session.history[-1] == {"role": "assistant", "content": reply.text}
    assert not [t for t in threading.enumerate() if t.name == "tunewiz-generate"]


def test_closing_the_stream_early_also_stops_the_generation_thread(tiny):
    session = ChatSession(tiny, settings=GenerationSettings(greedy=True, max_new_tokens=400))
    stream = session.stream("go")
    next(stream)
    stream.close()
    assert session.last_reply.tokens < 20
    assert not [t for t in threading.enumerate() if t.name == "tunewiz-generate"]


def test_oldest_turns_are_dropped_with_a_notice_when_the_context_is_full(tiny):
    session = ChatSession(tiny, settings=GenerationSettings(greedy=True, max_new_tokens=4))
    tiny_context = tiny.context_length
    try:
        tiny.context_length = 80
        for i in range(4):
            session.reply(f"message number {i} " + "word " * 8)
        assert session.notices and "oldest turn" in session.notices[-1]
        assert session.history[-2]["content"].startswith("message number 3")
        assert all("message number 0" not in m["content"] for m in session.history)
        with pytest.raises(UserError, match="too long"):
            session.reply("word " * 200)
    finally:
        tiny.context_length = tiny_context


def test_settings_are_checked_and_set_from_text():
    s = GenerationSettings()
    assert s.updated("temperature", "0.2").temperature == 0.2
    assert s.updated("max_new_tokens", "12").max_new_tokens == 12
    assert s.updated("greedy", "on").greedy is True
    assert s.updated("seed", "none").seed is None
    with pytest.raises(UserError, match="unknown setting"):
        s.updated("temprature", "1")
    with pytest.raises(UserError, match="number"):
        s.updated("top_p", "high")
    with pytest.raises(UserError, match="top_p"):
        s.updated("top_p", "2")
    assert s.updated("greedy", "true").generate_kwargs()["do_sample"] is False
