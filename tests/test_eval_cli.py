"""`tunewiz eval` from the shell: --json, a model without a run, hand tags, and bad input that
ends as a message (exit 2) before any model is loaded, never as a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from chat_runs import make_run

from tunewiz.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory) -> Path:
    from test_eval import QA, TRAIN, _write_rows
    from transformers import AutoTokenizer

    runs_dir = tmp_path_factory.mktemp("runs")
    run = make_run(runs_dir, tiny_model_dir, steps=(2, 4))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    (run / "data").mkdir()
    _write_rows(tok, run / "data" / "eval.jsonl", QA)
    _write_rows(tok, run / "data" / "train.jsonl", TRAIN)
    return runs_dir


def no_model_loads(monkeypatch):
    import tunewiz.core.loading

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(tunewiz.core.loading, "load_for_chat", refuse)


def test_json_prints_the_summary_and_the_files_exist(runs, capsys):
    code = main(["eval", "demo", "--runs-dir", str(runs), "--max-new-tokens", "4", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert list(summary["models"]) == ["base", "final"] and summary["rows"]["heldout"] == 3
    folder = next((runs / "demo" / "eval").iterdir())
    assert json.loads((folder / "summary.json").read_text())["verdict"] == summary["verdict"]

    assert main(["eval", "demo", "--runs-dir", str(runs), "--tag", "2=made_up"]) == 0
    rows = [json.loads(x) for x in (folder / "rows.jsonl").read_text().splitlines()]
    assert rows[1]["tags"] == ["made_up"]
    assert main(["eval", "demo", "--runs-dir", str(runs), "--untag", "2=made_up"]) == 0
    rows = [json.loads(x) for x in (folder / "rows.jsonl").read_text().splitlines()]
    assert rows[1]["tags"] == []


def test_a_model_without_a_run_with_a_prompts_file(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Say [bold]hi[/]\nWhat is 2+2?\n")
    code = main(
        [
            "eval",
            str(tiny_model_dir),
            "--prompts",
            str(prompts),
            "--max-new-tokens",
            "3",
            "--runs-dir",
            str(tmp_path / "runs"),
        ]  # fmt: skip
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "report:" in out
    folder = next((tmp_path / "runs" / "eval").iterdir())
    rows = [json.loads(x) for x in (folder / "rows.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["Say [bold]hi[/]", "What is 2+2?"]
    assert [o["model"] for o in rows[0]["outputs"]] == ["model"]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--prompts", "{bad}"], "bad.jsonl:2"),
        (["--checkpoints", "7"], "no checkpoint '7'"),
        (["--bench", "hellaswagg"], "closest: hellaswag"),
        (["--temperature", "0,hot"], "--temperature"),
    ],
)
def test_bad_input_is_a_message_before_any_model_loads(
    runs, tmp_path, capsys, monkeypatch, args, expected
):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{oops\n')
    args = [str(bad) if a == "{bad}" else a for a in args]
    no_model_loads(monkeypatch)
    code = main(["eval", "demo", "--runs-dir", str(runs), *args])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err


def test_importing_eval_loads_nothing_heavy():
    code = "import tunewiz.core.eval, tunewiz.cli.eval\nimport sys; print(' '.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    heavy = {"torch", "transformers", "textual", "lm_eval", "rouge_score", "peft"}
    assert not heavy & {m.split(".")[0] for m in out.split()}
