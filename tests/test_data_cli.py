"""`tunewiz data inspect`: tables for people, one JSON object for scripts."""

from __future__ import annotations

import argparse
import json

import pytest

import tunewiz.cli.data


def run(argv, capsys):
    parser = argparse.ArgumentParser(prog="tunewiz")
    tunewiz.cli.data.register(parser.add_subparsers())
    args = parser.parse_args(["data", "inspect", *argv])
    code = args.func(args)
    return code, capsys.readouterr()


def test_json_without_model(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "a?", "answer": "b."}\n{"question": "c?"}\n')
    code, out = run([str(path), "--json"], capsys)
    data = json.loads(out.out)
    assert code == 0
    assert (data["format"], data["task"], data["rows_total"], data["rows_ok"]) == (
        "prompt_completion",
        "instruction",
        2,
        1,
    )
    assert data["problems"] == [
        {
            "where": "d.jsonl:2 field 'answer'",
            "kind": "missing_field",
            "message": "missing field 'answer'",
        }
    ]
    assert data["token_stats"] is None


def test_json_with_the_bundled_tokenizer(capsys):
    code, out = run(["sample", "--model", "default", "--max-seq-len", "64", "--json"], capsys)
    stats = json.loads(out.out)["token_stats"]
    assert code == 0
    assert stats["count"] == 48 and stats["max"] <= 64 and stats["steps_per_epoch"] == 12
    assert {
        "min",
        "median",
        "p95",
        "total",
        "histogram",
        "tokens_lost",
        "suggested_max_len",
    } <= set(stats)


def test_tables_show_problems_and_text_literally(tmp_path, capsys):
    path = tmp_path / "chat.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": "[bold]hi[/bold]"},
                {"role": "assistant", "content": "[red]yo"},
            ]
        },
        {"messages": [{"role": "user", "content": "alone"}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out = run([str(path), "--model", "default"], capsys)
    assert code == 0
    text = out.out
    assert "OpenAI chat" in text and "chat:" in text  # task guessed from the format
    assert "chat.jsonl:2" in text and "turn_order" in text
    assert "[bold]hi[/bold]" in text and "[red]yo<|im_end|>" in text  # dataset text is never markup
    assert "steps per epoch" in text


def test_columns_and_exit_code_when_nothing_usable(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("q,a\nx,\n")
    code, out = run([str(path), "--columns", "prompt=q,response=a"], capsys)
    assert code == 1
    assert "no usable row" in out.out and "d.csv:2 field 'a'" in out.out


def test_bad_columns_flag_is_a_user_error(tmp_path):
    from tunewiz.core.errors import UserError

    with pytest.raises(UserError, match="key=value"):
        tunewiz.cli.data.build_config(
            argparse.Namespace(
                path="sample",
                format="auto",
                columns="oops",
                max_seq_len=10,
                text_split="paragraph",
                config_name="",
                split="train",
                train_on_inputs=False,
                task=None,
            )
        )
