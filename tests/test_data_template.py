"""Templates, masking, tokenization, split and packing, with the bundled tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunewiz.core.config import DataConfig
from tunewiz.core.data import (
    DEFAULT_CHAT_TEMPLATE,
    IGNORE_INDEX,
    chat_template_for,
    inspect_data,
    masking_preview,
    pack,
    prepare,
    render,
    split,
)
from tunewiz.core.errors import UserError
from tunewiz.core.train.collate import Collator


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def msg(role, content):
    return {"role": role, "content": content}


CHATS = [
    [msg("user", "Hi"), msg("assistant", "Hello there.")],
    [
        msg("system", "Be terse."),
        msg("user", "2+2?"),
        msg("assistant", "4"),
        msg("user", "and 3+3?"),
        msg("assistant", "6"),
    ],
    [msg("user", "Say [bold]x[/bold]"), msg("assistant", "[bold]x[/bold] said.")],
]


def trained_runs(example):
    """Consecutive trained token ids, one list per run."""
    runs, cur = [], []
    for tok, lab in zip(example["input_ids"], example["labels"], strict=True):
        assert lab in (IGNORE_INDEX, tok)
        if lab == tok:
            cur.append(tok)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


@pytest.mark.parametrize("messages", CHATS)
def test_labels_are_exactly_the_assistant_turns(tmp_path, tokenizer, messages):
    data = write_jsonl(tmp_path / "c.jsonl", [{"messages": messages}])
    prepared = prepare(DataConfig(data=str(data), task="chat", validation_split=0), tokenizer)
    (ex,) = prepared.train
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert (
        tokenizer.decode(ex["input_ids"]) == full
    )  # the model's own template, system prompt included
    assert "You are a helpful AI assistant named SmolLM" in full or messages[0]["role"] == "system"
    answers = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
    assert [tokenizer.decode(run) for run in trained_runs(ex)] == answers
    # every untrained token lies outside the answers in the rendered text
    _, spans = render(messages, tokenizer, chat_template_for(tokenizer))
    assert [full[a:b] for a, b in spans] == answers


def test_train_on_inputs_trains_everything(tmp_path, tokenizer):
    data = write_jsonl(tmp_path / "c.jsonl", [{"messages": CHATS[1]}])
    cfg = DataConfig(data=str(data), task="chat", train_on_inputs=True, validation_split=0)
    (ex,) = prepare(cfg, tokenizer).train
    assert ex["labels"] == ex["input_ids"]


def test_default_template_for_a_tokenizer_without_one(tokenizer):
    import copy

    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    assert chat_template_for(bare) == DEFAULT_CHAT_TEMPLATE
    text, spans = render(CHATS[0], bare, DEFAULT_CHAT_TEMPLATE)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello there.<|im_end|>\n"
    assert [text[a:b] for a, b in spans] == ["Hello there.<|im_end|>"]
    assert chat_template_for(tokenizer) == tokenizer.chat_template


def test_masking_preview_marks_trained_tokens(tmp_path, tokenizer):
    report = inspect_data(DataConfig(), tokenizer)
    pieces = masking_preview(report.examples[0], tokenizer)
    trained = "".join(p for p, t in pieces if t)
    assert trained == report.preview[0]["messages"][-1]["content"] + "<|im_end|>"
    assert "".join(p for p, _ in pieces).startswith("<|im_start|>system")


def test_truncation_counts_lost_tokens_and_untrainable_rows(tmp_path, tokenizer):
    rows = [
        {"prompt": "short?", "response": "yes."},
        {"prompt": "long " * 40, "response": "answer."},  # the answer falls past max_seq_len
        {"prompt": "q?", "response": "word " * 60},  # answer cut, some of it stays
    ]
    cfg = DataConfig(data=str(write_jsonl(tmp_path / "d.jsonl", rows)), max_seq_len=48)
    report = inspect_data(cfg, tokenizer)
    kinds = {(p.where, p.kind) for p in report.problems}
    assert kinds == {
        ("d.jsonl:2", "too_long"),
        ("d.jsonl:2", "no_trainable"),
        ("d.jsonl:3", "too_long"),
    }
    assert report.rows_ok == 2
    ts = report.token_stats
    assert ts.count == 2 and ts.rows_truncated == 1 and ts.tokens_lost == ts.max - 48
    assert ts.suggested_max_len >= ts.max and ts.suggested_max_len % 64 == 0
    # the histogram counts the row whose answer was cut off too: a longer max_seq_len saves it
    assert sum(n for _, _, n in ts.histogram) == 3
    prepared = prepare(DataConfig(**{**cfg.__dict__, "validation_split": 0}), tokenizer)
    assert max(len(e["input_ids"]) for e in prepared.train) == 48


def test_on_bad_rows_stop_lists_the_places(tmp_path, tokenizer):
    rows = [{"prompt": "a?", "response": "b."}, {"prompt": "c?"}, {"prompt": "d?", "response": ""}]
    cfg = DataConfig(data=str(write_jsonl(tmp_path / "d.jsonl", rows)), on_bad_rows="stop")
    with pytest.raises(UserError) as err:
        prepare(cfg, tokenizer)
    assert "d.jsonl:2 field 'response'" in str(err.value) and "d.jsonl:3 field 'response'" in str(
        err.value
    )
    cfg.on_bad_rows = "skip"
    assert prepare(cfg, tokenizer).report.rows_ok == 1


def test_no_usable_row_says_why(tmp_path, tokenizer):
    rows = [{"messages": [msg("user", f"q{i}")]} for i in range(12)]
    with pytest.raises(UserError, match="all 12 rows.*does not end with an assistant turn"):
        prepare(
            DataConfig(data=str(write_jsonl(tmp_path / "d.jsonl", rows)), task="chat"), tokenizer
        )


def test_text_task_keeps_every_token_and_packs(data_files, tokenizer):
    cfg = DataConfig(
        data=str(data_files / "c4_demo_16.jsonl"), task="text", max_seq_len=256, validation_split=0
    )
    prepared = prepare(cfg, tokenizer)
    assert prepared.packed
    ts = prepared.report.token_stats
    assert ts.tokens_lost == 0 and ts.rows_truncated == 0
    assert sum(len(e["input_ids"]) for e in prepared.train) == ts.total
    assert all(len(e["input_ids"]) <= 256 for e in prepared.train)
    assert len(prepared.train) == ts.sequences
    assert all(e["position_ids"][0] == 0 for e in prepared.train)
    eos = sum(e["input_ids"].count(tokenizer.eos_token_id) for e in prepared.train)
    assert eos == ts.count == 16  # each document ends with end-of-text


def test_split_is_seeded_and_reproducible(tokenizer):
    items = list(range(100))
    a, b = split(items, 0.1, 42), split(items, 0.1, 42)
    assert a == b and len(a[1]) == 10 and sorted(a[0] + a[1]) == items
    assert split(items, 0.1, 7)[1] != a[1]
    assert len(split(items, 25, 42)[1]) == 25
    assert split(items, 0, 42) == (items, [])
    p1 = prepare(DataConfig(validation_split=5), tokenizer)
    p2 = prepare(DataConfig(validation_split=5), tokenizer)
    assert p1.eval == p2.eval and len(p1.eval) == 5 and len(p1.train) == p1.report.rows_ok - 5


def test_validation_file(tmp_path, tokenizer):
    val = write_jsonl(tmp_path / "val.jsonl", [{"prompt": "v?", "response": "w."}])
    prepared = prepare(DataConfig(validation_file=str(val)), tokenizer)
    assert len(prepared.train) == prepared.report.rows_ok and len(prepared.eval) == 1
    assert prepared.eval_report.rows_ok == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30), st.integers(40, 120))
def test_pack_keeps_every_token_once(lengths, max_len):
    examples, next_id = [], 0
    for n in lengths:
        ids = list(range(next_id, next_id + n))
        next_id += n
        examples.append({"input_ids": ids, "labels": ids})
    packed = pack(examples, max_len)
    flat = [t for p in packed for t in p["input_ids"]]
    assert flat == list(range(next_id))
    assert all(len(p["input_ids"]) <= max_len for p in packed)
    starts = [i for p in packed for i, pos in enumerate(p["position_ids"]) if pos == 0]
    assert len(starts) == len(lengths)
    for p in packed:  # labels follow ids except the first token of each row
        for tok, lab, pos in zip(p["input_ids"], p["labels"], p["position_ids"], strict=True):
            assert lab == (IGNORE_INDEX if pos == 0 else tok)


def test_packed_batch_attends_only_within_rows(tiny_model_dir, tokenizer):
    """Logits of packed (and padded) sequences equal those of each row run alone."""
    import torch
    from transformers import AutoModelForCausalLM

    texts = [
        "The capital of Lumen Isle is Harrowmere.",
        "Hi.",
        "Twelve glints make one crown on Lumen Isle.",
    ]
    rows = [
        {"input_ids": tokenizer(t)["input_ids"], "labels": tokenizer(t)["input_ids"]} for t in texts
    ]
    packed = pack(rows, 64) + pack(rows[1:2], 64)  # a full packed row and a short one (padded)
    assert len(packed) == 2
    for impl in ("sdpa", "eager"):
        model = AutoModelForCausalLM.from_pretrained(
            tiny_model_dir, attn_implementation=impl
        ).eval()
        model.config.use_cache = False  # a cache turns off packed-sequence detection
        batch = Collator(tokenizer.pad_token_id)(packed)
        assert "attention_mask" not in batch
        with torch.no_grad():
            out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
            alone = torch.cat(
                [model(input_ids=torch.tensor([r["input_ids"]])).logits[0] for r in rows]
            )
            n = alone.shape[0]
            torch.testing.assert_close(out[0, :n], alone, atol=1e-4, rtol=0)
            short = len(rows[1]["input_ids"])
            torch.testing.assert_close(
                out[1, :short], alone[len(rows[0]["input_ids"]) :][:short], atol=1e-4, rtol=0
            )
        # and the same sequence with a cache does mix rows: the reason for use_cache=False
        with torch.no_grad():
            mixed = model(
                input_ids=batch["input_ids"][:1],
                position_ids=batch["position_ids"][:1],
                use_cache=True,
            )
        assert not torch.allclose(mixed.logits[0, :n], alone, atol=1e-4)


def test_unpacked_collate_pads_with_attention_mask(tokenizer):
    batch = Collator(0)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_a_token_merging_prompt_and_answer_is_untrained_and_reported(tokenizer):
    from tunewiz.core.data.template import tokenize_rendered

    # An answer that starts inside a word of the rendered text: the token "hello" spans both sides.
    text = "user says hello"
    spans = [(text.index("llo"), len(text))]  # the "answer" starts inside the token "hello"
    (tok,) = tokenize_rendered([text], [spans], tokenizer, 100)
    assert tok.straddles
    trained = [t for t, lab in zip(tok.input_ids, tok.labels, strict=True) if lab != IGNORE_INDEX]
    assert "hel" not in tokenizer.decode(trained)


def test_a_split_keeps_each_rephrasing_on_the_side_of_its_original(tmp_path, tokenizer):
    """`tunewiz data augment` writes each original row followed by its variants, which name
    it in `augmented_from`. A validation split that put a variant in validation and its
    original in training would score the model on a question it trained on."""
    rows = []
    for i in range(40):
        rows.append({"instruction": f"Question {i}?", "output": f"Answer {i}."})
        for k in range(3):
            rows.append(
                {
                    "instruction": f"Question {i}, asked another way ({k})?",
                    "output": f"Answer {i}.",
                    "augmented_from": f"data.jsonl:{i + 1}",
                    "augmentation": "rephrase",
                }
            )
    path = tmp_path / "data.augmented.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = DataConfig(data=str(path), validation_split=0.25, split_seed=3, packing="false")
    prepared = prepare(cfg, tokenizer)

    def answers(examples):
        return [
            tokenizer.decode(ex["input_ids"]).split("Answer ")[-1].split(".")[0] for ex in examples
        ]

    train, held_out = answers(prepared.train), answers(prepared.eval or [])
    assert held_out, "the split held nothing out"
    assert not set(train) & set(held_out)  # no question's answer on both sides
    assert all(held_out.count(a) == 4 for a in set(held_out))  # the original and its 3 variants


def test_inspect_counts_every_long_document_as_prepare_does(tmp_path, tokenizer):
    """The note "N documents longer than max_seq_len are split" counted only the rows whose
    examples came back (the first few shown) when inspecting; preparing counted them all."""
    path = tmp_path / "long.jsonl"
    long_text = "word " * 200
    path.write_text(
        "".join(json.dumps({"text": f"{i} {long_text}"}) + "\n" for i in range(30)),
        encoding="utf-8",
    )
    cfg = DataConfig(data=str(path), task="text", max_seq_len=64, validation_split=0)
    note = "30 documents longer than max_seq_len (64) are split"
    assert any(note in n for n in inspect_data(cfg, tokenizer).notes)
    assert any(note in n for n in prepare(cfg, tokenizer).report.notes)
