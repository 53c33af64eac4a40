"""`tunewiz chat | compare` from the command line: one-shot, JSON, the REPL, literal output."""

from __future__ import annotations

import argparse
import io
import json
from types import SimpleNamespace

import pytest
from chat_runs import make_run

import tunewiz.cli.chat as chat_cli
from tunewiz.core.chat import GenerationSettings


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    chat_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs"), tiny_model_dir, steps=(2, 4))


class FakeSession:
    """Replies with text that would be markup if Rich parsed it."""

    def __init__(self, pieces):
        self.pieces = pieces
        self.loaded = SimpleNamespace(label="fake", checkpoint=None)
        self.notices: list[str] = []
        self.last_reply = None
        self.settings = GenerationSettings()

    def stream(self, text):
        yield from self.pieces
        self.last_reply = SimpleNamespace(text="".join(self.pieces), tokens=3, seconds=0.5)

    def reply(self, text):
        list(self.stream(text))
        return self.last_reply


MARKUP = ["[bold red]x[/]", " and ", "[link=http://a]y[/link]"]


def test_model_text_that_looks_like_markup_prints_literally(capsys):
    from rich.console import Console

    args = SimpleNamespace(json=False, prompt="hi", target="t")
    chat_cli.answer_once(args, [FakeSession(MARKUP)])
    assert "[bold red]x[/] and [link=http://a]y[/link]" in capsys.readouterr().out

    out = io.StringIO()
    chat_cli.stream_reply(FakeSession(MARKUP), "hi", Console(file=out, width=200), labelled=False)
    assert "[bold red]x[/] and [link=http://a]y[/link]" in out.getvalue()


def test_prompt_json_answers_once_with_the_documented_keys(run_dir, capsys):
    code = run_cli(
        [
            "chat",
            str(run_dir),
            "--prompt",
            "hello",
            "--json",
            "--greedy",
            "--max-new-tokens",
            "5",
            "--compare",
            "base",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert {"target", "checkpoint", "reply", "compare_reply", "tokens", "seconds"} <= set(out)
    assert out["checkpoint"] == "final" and out["target"] == str(run_dir)
    assert 0 < out["tokens"] <= 5 and out["seconds"] > 0
    assert out["reply"] != out["compare_reply"]  # the adapter changed the answer


def test_repl_commands_change_the_session(run_dir, monkeypatch, capsys):
    script = (
        "/set temperature 0.2\n/system Be terse.\nhello\n/settings\n/reset\n/set nope 1\n/quit\n"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    code = run_cli(
        [
            "chat",
            run_dir.name,
            "--runs-dir",
            str(run_dir.parent),
            "--max-new-tokens",
            "4",
            "--seed",
            "3",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "(temperature = 0.2)" in captured.out
    assert "system prompt set" in captured.out
    rows = {tuple(line.split()) for line in captured.out.splitlines()}  # /settings, a table
    assert ("temperature", "0.2") in rows and ("seed", "3") in rows
    assert "(conversation cleared)" in captured.out
    assert "unknown setting 'nope'" in captured.err
    assert "tokens/s" in captured.out


def test_json_without_prompt_and_base_of_a_plain_model_are_user_errors(tiny_model_dir):
    from tunewiz.core.errors import UserError

    with pytest.raises(UserError, match="--json needs --prompt"):
        run_cli(["chat", str(tiny_model_dir), "--json"])
    with pytest.raises(UserError, match="has no base"):
        run_cli(
            [
                "chat",
                str(tiny_model_dir),
                "--prompt",
                "x",
                "--compare",
                "base",
                "--max-new-tokens",
                "2",
            ]
        )
