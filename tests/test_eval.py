"""Evaluation: metrics worked by hand, categories, prompt files, batched generation, a whole
evaluation of a tiny run on disk, hand tags, and the errors users meet (never a traceback)."""

from __future__ import annotations

import json

import pytest
from chat_runs import make_run

from tunewiz.core.chat import GenerationSettings
from tunewiz.core.errors import UserError
from tunewiz.core.eval import EvalRequest, evaluate, load_eval, make_plan, set_tag
from tunewiz.core.eval.analysis import (
    CheckpointScore,
    categorise,
    copied_from,
    overfitting_verdict,
    recommend,
)
from tunewiz.core.eval.metrics import normalise, repetition, rouge_l, score_row, token_f1
from tunewiz.core.eval.prompts import PromptFileError, load_prompts

QA = [
    ("What is the capital of Lumen Isle?", "The capital is Harrowmere."),
    ("Who rules Lumen Isle?", "A council of [bold]five[/]."),
    ("What is the motto?", "Light through fog."),
]
TRAIN = [("What is the currency?", "The glint."), ("How many districts?", "Six districts.")]


# -- metrics, worked by hand ------------------------------------------------------------


def test_normalise_and_token_f1_follow_squad():
    assert normalise("The  Capital, is Harrowmere!") == "capital is harrowmere"
    # output tokens {capital, harrowmere}, reference {capital, is, harrowmere}: P=1, R=2/3
    assert token_f1("Capital: Harrowmere", "The capital is Harrowmere.") == pytest.approx(0.8)
    assert token_f1("Nova Haven", "Harrowmere") == 0.0


def test_rouge_l_and_repetition():
    # LCS of "a b c d" and "a c d" is 3: P=3/3, R=3/4 -> F=6/7
    assert rouge_l("a c d", "a b c d") == pytest.approx(6 / 7)
    assert repetition("one two three four") == 0.0
    # 3-grams of "a b a b a b": aba, bab, aba, bab -> 2 distinct of 4
    assert repetition("a b a b a b") == pytest.approx(0.5)


def test_categories_carry_their_evidence():
    ref = "The capital is Harrowmere."
    long = "the town the town the town the town the town the town the town"
    s = score_row(long, ref, stopped=False)
    names = {c.name: c.evidence for c in categorise(long, ref, s, max_new_tokens=16)}
    assert set(names) == {"too_long", "repetitive", "no_stop", "wrong"}
    assert "16 new tokens" in names["no_stop"] and "ROUGE-L" in names["wrong"]
    assert [c.name for c in categorise("", ref, score_row("", ref, True), max_new_tokens=8)] == [
        "empty",
        "wrong",
    ]
    base = score_row(ref, ref, True)
    worse = score_row("Nova Haven", ref, True)
    cats = categorise("Nova Haven", ref, worse, max_new_tokens=8, base_scores=base)
    assert "regressed" in [c.name for c in cats]


def test_copied_training_answer_needs_a_different_row():
    answers = [("train.jsonl:1", "The glint."), ("train.jsonl:2", "Six districts.")]
    assert "train.jsonl:1" in copied_from("The glint.", "Harrowmere.", answers)
    assert copied_from("The glint.", "the glint", answers) is None  # its own answer: right


def test_verdict_and_recommendation_in_words():
    verdict = overfitting_verdict((46, 48), (3, 12))
    assert verdict.startswith("right on 46/48 training questions, 3/12 new ones")
    assert "memorised" in verdict
    assert "carries over" in overfitting_verdict((10, 10), (9, 10))
    pick, why = recommend(
        [
            CheckpointScore("checkpoint-10", 0.30, 1.5, 10),
            CheckpointScore("checkpoint-20", 0.45, 1.2, 20),
            CheckpointScore("checkpoint-30", 0.40, 1.4, 30),
        ]
    )
    assert pick == "checkpoint-20"
    assert "0.450" in why and "checkpoint-30" in why and "(lowest)" in why


# -- prompt files ----------------------------------------------------------------------


def test_prompt_files_in_any_data_format(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("question,answer\nWhat is it?,A thing.\n")
    assert [(i.prompt, i.reference) for i in load_prompts(csv)] == [("What is it?", "A thing.")]
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\nsecond prompt\n")
    assert [i.prompt for i in load_prompts(txt)] == ["first prompt", "second prompt"]
    chat = tmp_path / "c.jsonl"
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]
    item = load_prompts(chat if chat.write_text(json.dumps({"messages": msgs})) else chat)[0]
    assert (item.prompt, item.reference, item.messages) == ("Hi", "Hello.", msgs[:2])
    alone = tmp_path / "a.jsonl"
    alone.write_text('{"prompt": "just a prompt"}\n')
    assert load_prompts(alone)[0].reference is None
    mixed = tmp_path / "m.jsonl"
    mixed.write_text(
        '{"instruction": "a", "output": "A"}\n{"prompt": "b"}\n'
        '{"instruction": "c", "output": "C"}\n{"prompt": "d", "reference": "D"}\n'
    )
    got = [(i.prompt, i.reference, i.where) for i in load_prompts(mixed)]
    assert got == [
        ("a", "A", "m.jsonl:1"),
        ("b", None, "m.jsonl:2"),
        ("c", "C", "m.jsonl:3"),
        ("d", "D", "m.jsonl:4"),
    ]


def test_every_bad_row_is_reported_with_its_place(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"instruction": "ok", "output": "fine"}\n'
        "{not json\n"
        '{"instruction": "", "output": "x"}\n'
        '{"instruction": "q", "output": 5}\n'
    )
    with pytest.raises(PromptFileError) as info:
        load_prompts(bad)
    wheres = [p.where for p in info.value.problems]
    assert wheres[0] == "bad.jsonl:2"
    assert any(w.startswith("bad.jsonl:3") for w in wheres)
    assert any(w.startswith("bad.jsonl:4") for w in wheres)
    assert "3 bad rows" in str(info.value)


# -- runs on disk ----------------------------------------------------------------------


def _write_rows(tok, path, pairs):
    with open(path, "w") as fh:
        for q, a in pairs:
            prompt = tok.apply_chat_template(
                [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
            )
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            a_ids = tok(a + "<|im_end|>", add_special_tokens=False)["input_ids"]
            row = {"input_ids": p_ids + a_ids, "labels": [-100] * len(p_ids) + a_ids}
            fh.write(json.dumps(row) + "\n")


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    from transformers import AutoTokenizer

    run = make_run(tmp_path_factory.mktemp("runs"), tiny_model_dir, steps=(2, 4, 6))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    (run / "data").mkdir()
    _write_rows(tok, run / "data" / "eval.jsonl", QA)
    _write_rows(tok, run / "data" / "train.jsonl", TRAIN)
    return run


def test_batched_generation_equals_one_at_a_time(run_dir):
    from tunewiz.core.eval.generate import generate_batched
    from tunewiz.core.eval.prompts import EvalItem
    from tunewiz.core.eval.run import prompt_ids
    from tunewiz.core.loading import load_for_chat

    loaded = load_for_chat(str(run_dir), "checkpoint-4", device="cpu")
    prompts = ["Hi", "What is the capital of Lumen Isle?", "x " * 30, "Tell me a story."] * 2
    ids = [prompt_ids(loaded, EvalItem(p)) for p in prompts]
    settings = GenerationSettings(greedy=True, max_new_tokens=12)
    batched = generate_batched(loaded, ids, settings, batch_size=8)
    single = [generate_batched(loaded, [i], settings, batch_size=1)[0] for i in ids]
    assert batched == single
    assert len({len(i) for i in ids}) > 1  # padding was really needed


def test_whole_evaluation_writes_files_readable_without_tunewiz(run_dir, tmp_path):
    req = EvalRequest(
        str(run_dir), checkpoints=["all"], max_new_tokens=8, train_sample=2, out=str(tmp_path / "e")
    )
    seen = []
    result = evaluate(req, progress=lambda d, t, w: seen.append((d, t)))
    assert seen[-1] == (5 * 5, 5 * 5)  # base + 3 checkpoints + final, 3 held-out + 2 train rows
    s = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert list(s["models"]) == ["base", "checkpoint-2", "checkpoint-4", "checkpoint-6", "final"]
    assert s["rows"] == {"heldout": 3, "train": 2}
    assert [c["eval_loss"] for c in s["checkpoints"]][1:4] == [1.5, 1.2, 1.4]
    assert s["recommended"]["checkpoint"] in s["models"]
    assert s["verdict"].startswith("right on ")
    rows = [json.loads(line) for line in (tmp_path / "e" / "rows.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows[:3]] == [q for q, _ in QA]
    assert {r["split"] for r in rows} == {"heldout", "train"}
    assert all(len(r["outputs"]) == 5 for r in rows)
    md = (tmp_path / "e" / "report.md").read_text()
    assert "> A council of [bold]five[/]." in md and "## Checkpoints" in md
    assert result.summary == s | {"tags": {}}


def test_hand_tags_sit_beside_the_categories_and_survive(run_dir, tmp_path):
    req = EvalRequest(str(run_dir), max_new_tokens=4, train_sample=0, out=str(tmp_path / "e"))
    evaluate(req)
    before = load_eval(tmp_path / "e")
    set_tag(tmp_path / "e", 2, "hallucination")
    set_tag(tmp_path / "e", 2, "style")
    after = set_tag(tmp_path / "e", 2, "style", on=False)
    row = next(r for r in after.rows if r["id"] == 2)
    assert row["tags"] == ["hallucination"]
    assert row["outputs"] == next(r for r in before.rows if r["id"] == 2)["outputs"]
    assert load_eval(tmp_path / "e").summary["tags"] == {"hallucination": 1}
    with pytest.raises(UserError, match="no row 9"):
        set_tag(tmp_path / "e", 9, "x")


# -- mistakes, found before any model loads ---------------------------------------------


def test_missing_checkpoint_lists_what_exists(run_dir):
    with pytest.raises(UserError) as info:
        make_plan(EvalRequest(str(run_dir), checkpoints=["99"]))
    assert "no checkpoint '99'" in str(info.value) and "checkpoint-6" in str(info.value)


def test_run_without_validation_rows_says_how_to_get_some(tiny_model_dir, tmp_path):
    run = make_run(tmp_path, tiny_model_dir, steps=(2,))
    with pytest.raises(UserError) as info:
        make_plan(EvalRequest(str(run)))
    assert "--prompts" in str(info.value) and "validation_split" in str(info.value)


def test_run_folder_trust_remote_code_needs_the_flag(tiny_model_dir, tmp_path):
    from tunewiz.core.config import RunConfig

    run = make_run(tmp_path, tiny_model_dir, steps=(2,))
    cfg = RunConfig.load(run / "config.toml")
    cfg.model.trust_remote_code = True
    cfg.save(run / "config.toml")
    with pytest.raises(UserError, match="--trust-remote-code"):
        make_plan(EvalRequest(str(run), prompts=None))


def test_temperature_sweep_with_samples_is_seeded(run_dir, tmp_path):
    def run(out):
        req = EvalRequest(
            str(run_dir), temperatures=[0, 1.0], samples=2, train_sample=0, max_new_tokens=5,
            out=str(tmp_path / out),
        )  # fmt: skip
        return evaluate(req)

    first, again = run("a"), run("b")
    outs = first.rows[0]["outputs"]
    assert [(o["model"], o["variant"]) for o in outs] == [
        (m, v) for m in ("base", "final") for v in ("greedy", "t=1 #1", "t=1 #2")
    ]
    assert set(first.summary["metrics"]["final"]) == {"greedy", "t=1 #1", "t=1 #2"}
    texts = [[o["text"] for o in r["outputs"]] for r in first.rows]
    assert texts == [[o["text"] for o in r["outputs"]] for r in again.rows]  # same seed, same text


def test_cancel_stops_generation(run_dir):
    import threading

    from tunewiz.core.eval import EvalCancelled
    from tunewiz.core.eval.generate import generate_batched
    from tunewiz.core.loading import load_for_chat

    loaded = load_for_chat(str(run_dir), device="cpu")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(EvalCancelled):
        generate_batched(loaded, [[1, 2, 3]], GenerationSettings(greedy=True), cancel=cancel)
