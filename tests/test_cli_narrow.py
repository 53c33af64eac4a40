"""Command-line output read at 80 columns, as users on a laptop terminal see it."""

from __future__ import annotations

import os

from rich.console import Console

from tunewiz.core import runs
from tunewiz.core.chat import GenerationSettings
from tunewiz.core.config import RunConfig


def test_runs_at_80_columns_shows_whole_names(tmp_path, capsys, monkeypatch):
    from tunewiz.cli import build_parser
    from tunewiz.cli import train as cli_train

    names = ["SmolLM2-135M-Instruct-lora", "SmolLM2-135M-Instruct-full"]
    for name in names:
        run = tmp_path / name
        run.mkdir()
        RunConfig(name=name).save(run / "config.toml")
        runs.write_status(run, state="finished", pid=os.getpid(), step=10, total_steps=10)
    monkeypatch.setenv("COLUMNS", "80")
    args = build_parser().parse_args(["runs", "--runs-dir", str(tmp_path)])
    assert cli_train.cmd_runs(args) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    lines = out.splitlines()
    width = lines[0].index("state")  # the run column, names wrapped whole inside it
    column = "".join(line[:width].strip() for line in lines[1:])
    assert all(name in column for name in names)  # not all cut to the same prefix
    assert "10/10" in out and "finished" in out


def test_repl_settings_print_as_a_table():
    from tunewiz.cli.chat import settings_table

    console = Console(width=80, record=True, file=open(os.devnull, "w"))
    console.print(settings_table(GenerationSettings(temperature=0.2)))
    text = console.export_text()
    assert text.split()[:2] == ["setting", "value"]
    line = next(ln for ln in text.splitlines() if "temperature" in ln)
    assert line.split() == ["temperature", "0.2"]
