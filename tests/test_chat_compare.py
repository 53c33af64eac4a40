"""Batch comparison: validation rows or a prompt file through two checkpoints, report on disk."""

from __future__ import annotations

import argparse
import json

import pytest
from chat_runs import make_run

import tunewiz.cli.chat as chat_cli
from tunewiz.core.chat import GenerationSettings
from tunewiz.core.compare import compare_batch, load_prompt_file
from tunewiz.core.errors import UserError

QA = [
    ("What is the capital of Lumen Isle?", "Harrowmere."),
    ("Who rules it?", "A council of [bold]five[/]."),
]


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    from transformers import AutoTokenizer

    run = make_run(tmp_path_factory.mktemp("runs"), tiny_model_dir, steps=(2, 4))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    (run / "data").mkdir()
    with open(run / "data" / "eval.jsonl", "w") as fh:
        for q, a in QA:
            prompt = tok.apply_chat_template(
                [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
            )
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            a_ids = tok(a + "<|im_end|>", add_special_tokens=False)["input_ids"]
            fh.write(
                json.dumps({"input_ids": p_ids + a_ids, "labels": [-100] * len(p_ids) + a_ids})
                + "\n"
            )
    return run


def test_validation_rows_run_through_both_sides_and_land_in_the_report(run_dir, tmp_path):
    settings = GenerationSettings(greedy=True, max_new_tokens=6)
    out, rows = compare_batch(str(run_dir), out_dir=tmp_path / "rep", settings=settings)
    assert [(r.prompt, r.reference) for r in rows] == QA
    assert all(0 < r.tokens_a <= 6 and 0 < r.tokens_b <= 6 for r in rows)
    assert any(r.output_a != r.output_b for r in rows)  # adapter vs base
    records = [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == [q for q, _ in QA]
    assert records[0]["model_a"].endswith("final") and records[0]["model_b"].endswith("base")
    md = (out / "report.md").read_text()
    assert "## 2" in md and "> A council of [bold]five[/]." in md and "Exact match" in md


def test_checkpoint_against_checkpoint_with_a_prompt_file(run_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        '{"prompt": "hello", "reference": "hi"}\n\n{"instruction": "Say", "input": "x"}\n'
    )
    out, rows = compare_batch(
        str(run_dir),
        checkpoint="2",
        against="4",
        prompts_file=prompts,
        settings=GenerationSettings(greedy=True, max_new_tokens=4),
        out_dir=tmp_path / "r",
    )
    assert [(r.prompt, r.reference) for r in rows] == [("hello", "hi"), ("Say\n\nx", None)]
    first = json.loads((out / "report.jsonl").read_text().splitlines()[0])
    assert first["model_a"].endswith("checkpoint-2") and first["model_b"].endswith("checkpoint-4")


def test_prompt_files_and_their_errors(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("one\n\n two \n")
    assert [i.prompt for i in load_prompt_file(txt)] == ["one", "two"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{broken\n')
    with pytest.raises(UserError) as err:
        load_prompt_file(bad)
    assert err.value.where == str(bad) and "bad.jsonl:2: invalid JSON" in str(err.value)
    noprompt = tmp_path / "n.jsonl"
    noprompt.write_text('{"answer": "x"}\n')
    with pytest.raises(UserError, match="n.jsonl:1"):
        load_prompt_file(noprompt)
    chat = tmp_path / "c.json"
    chat.write_text(
        json.dumps(
            [
                {
                    "messages": [
                        {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a"},
                    ]
                }
            ]
        )
    )
    assert [(i.prompt, i.reference) for i in load_prompt_file(chat)] == [("q", "a")]


def test_cli_compare_writes_the_report_and_a_run_without_validation_says_what_to_do(
    run_dir, tiny_model_dir, tmp_path, capsys
):
    parser = argparse.ArgumentParser()
    chat_cli.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "compare",
            str(run_dir),
            "--limit",
            "1",
            "--max-new-tokens",
            "3",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert args.func(args) == 0
    assert "1 prompts compared" in capsys.readouterr().out
    assert len((tmp_path / "o" / "report.jsonl").read_text().splitlines()) == 1

    bare = make_run(tmp_path / "runs", tiny_model_dir, name="noval", steps=(2,))
    with pytest.raises(UserError, match="no validation rows") as err:
        compare_batch(str(bare), settings=GenerationSettings(greedy=True, max_new_tokens=2))
    assert "--prompts" in err.value.hint
