"""Hostile inputs other than run folders (issue 9): escape sequences, damaged data files,
NaN options, impossible settings, the length histogram and remote code. Every file is made
here, in tmp_path."""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import lzma
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunewiz.cli import main as cli_main
from tunewiz.core.config import DataConfig, RunConfig, coerce, validate
from tunewiz.core.data import inspect_data
from tunewiz.core.data.stats import token_stats
from tunewiz.core.errors import UserError
from tunewiz.core.text import visible

ESC_TEXT = "a\x1b]52;c;cm0gLXJm\x07b\x1b]8;;http://x\x1b\\c\x1b[2J\x9b1m\x7f[bold red]d[/]"


def rows_file(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ALPACA = [{"instruction": f"question {i}?", "output": f"answer {i}."} for i in range(12)]


# -- nothing raw reaches the terminal ------------------------------------------------


def test_visible_escapes_every_control_and_keeps_text():
    shown = visible(ESC_TEXT + "\n\tokü\udcff\u202eevil")
    assert not any(c in shown for c in "\x1b\x07\x9b\x7f\u202e\udcff")
    assert "\\x1b]52;c;" in shown and "\\x07" in shown and "\\x9b" in shown
    assert "[bold red]d[/]" in shown  # markup stays literal text
    assert "\n\tokü" in shown and "\\xff" in shown and "\\u202e" in shown
    assert visible("a\nb", newlines=False) == "a\\nb"


def test_data_inspect_prints_dataset_text_escaped(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    path = rows_file(tmp_path / "esc.jsonl", [{"instruction": ESC_TEXT, "output": ESC_TEXT}] * 3)
    assert cli_main(["data", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "[bold red]d[/]" in out and "\\x1b]52" in out


def test_chat_cli_prints_replies_escaped(capsys):
    from tunewiz.cli.chat import answer_once, stream_reply

    reply = SimpleNamespace(text=ESC_TEXT, tokens=3, seconds=1.0)
    loaded = SimpleNamespace(label="run\x1b[31m", checkpoint="final")
    session = SimpleNamespace(
        reply=lambda p: reply,
        stream=lambda p: iter([ESC_TEXT[:3], ESC_TEXT[3:]]),
        loaded=loaded,
        notices=[],
        last_reply=reply,
    )
    args = SimpleNamespace(json=False, prompt="hi", target="run")
    answer_once(args, [session, session])
    from rich.console import Console

    stream_reply(session, "hi", Console(highlight=False), labelled=True)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "[bold red]d[/]" in out


async def test_wizard_chat_pane_shows_replies_escaped():
    from textual.app import App

    from tunewiz.tui.widgets.chat_log import ChatLog

    class ChatApp(App):
        def compose(self):
            yield ChatLog()

    app = ChatApp()
    async with app.run_test() as pilot:
        log = app.query_one(ChatLog)
        message = log.add("assistant", who="model\x07")
        log.append(message, ESC_TEXT)
        await pilot.pause()
        shown = str(message.render())
        assert "\x1b" not in shown and "\x07" not in shown
        assert "\\x1b]52" in shown and "[bold red]d[/]" in shown


def test_json_output_escapes_what_json_leaves_raw(tmp_path, capsys):
    from tunewiz.core.text import dumps_json

    text = dumps_json({"a": "ü\x9b\x1b\u202e\udcff"})
    assert text.isascii() is False and "ü" in text  # readable, yet no raw control
    assert not any(c in text for c in "\x9b\x1b\u202e\udcff")
    assert json.loads(text) == {"a": "ü\x9b\x1b\u202e\udcff"}
    with pytest.raises(ValueError):
        dumps_json({"loss": math.nan})
    path = rows_file(tmp_path / "c1\x9b2J.jsonl", ALPACA)  # a file name is text from outside
    assert cli_main(["data", "inspect", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert "\x9b" not in out and "\\u009b" in out


def test_wizard_data_cells_and_error_dialog_are_escaped():
    from tunewiz.tui.screens.data import _cell
    from tunewiz.tui.widgets.error_dialog import ErrorDialog

    assert "\x1b" not in _cell(ESC_TEXT) and _cell("\x07[b]x[/b]") == "\\x07[b]x[/b]"
    dialog = ErrorDialog("t\x1b", ESC_TEXT, "h\x07")
    assert not any(c in dialog.title_text + dialog.message + dialog.hint for c in "\x1b\x07")


@pytest.mark.parametrize("name", ["bad\x1b[31mname", "two\nlines", "bell\x07", "rtl\u202eexe"])
def test_run_names_must_be_printable(name):
    cfg = RunConfig(name=name)
    with pytest.raises(UserError, match="printable") as err:
        validate(cfg)
    assert "\x1b" not in str(err.value) and "\x07" not in str(err.value)
    validate(RunConfig(name="my run-2 ü"))  # spaces and letters of any script are fine


# -- bad inputs get messages -----------------------------------------------------------


def damaged_compressed(tmp_path: Path) -> list[tuple[Path, str]]:
    good = "".join(json.dumps(r) + "\n" for r in ALPACA * 200).encode()
    import zstandard

    files = []
    for ext, compress in (
        ("gz", gzip.compress),
        ("bz2", bz2.compress),
        ("xz", lzma.compress),
        ("zst", zstandard.ZstdCompressor().compress),
    ):
        fake = tmp_path / f"fake.jsonl.{ext}"
        fake.write_bytes(good)
        files.append((fake, "not a valid"))
        data = compress(good)
        cut = tmp_path / f"cut.jsonl.{ext}"
        cut.write_bytes(data[: len(data) // 2])
        files.append((cut, "truncated"))
    return files


def test_damaged_or_fake_compressed_files_are_messages(tmp_path):
    for path, words in damaged_compressed(tmp_path):
        with pytest.raises(UserError, match=words) as err:
            inspect_data(DataConfig(data=str(path)))
        assert str(path) in str(err.value), path


def test_a_zst_file_of_several_frames_reads_whole(tmp_path):
    import zstandard

    one = "".join(json.dumps(r) + "\n" for r in ALPACA).encode()
    c = zstandard.ZstdCompressor()
    path = tmp_path / "multi.jsonl.zst"
    path.write_bytes(c.compress(one) + c.compress(one))
    report = inspect_data(DataConfig(data=str(path)))
    assert report.rows_total == 24


def test_deeply_nested_json_is_a_row_problem(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    lines = [json.dumps(r) for r in ALPACA[:3]]
    jsonl = tmp_path / "deep.jsonl"
    jsonl.write_text("\n".join(lines[:2] + ['{"instruction": ' + deep + "}", lines[2]]) + "\n")
    report = inspect_data(DataConfig(data=str(jsonl)))
    assert report.rows_ok == 3
    assert [(p.where, p.kind) for p in report.problems] == [("deep.jsonl:3", "invalid_json")]
    assert "nested too deeply" in report.problems[0].message
    array = tmp_path / "deep.json"
    array.write_text("[" + lines[0] + ", " + deep + "]")
    report = inspect_data(DataConfig(data=str(array)))
    assert report.rows_ok == 1 and "nested too deeply" in report.problems[0].message
    whole = tmp_path / "whole.json"
    whole.write_text('{"train": ' + deep + "}")
    report = inspect_data(DataConfig(data=str(whole)))
    assert report.rows_ok == 0 and report.problem_counts == {"invalid_json": 1}


def test_an_unclosed_csv_quote_names_its_line_and_what_it_swallowed(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('prompt,response\n"a",b\n"c,d\ne,f\ng,h\n"i",j\nk,l\n', encoding="utf-8")
    report = inspect_data(DataConfig(data=str(path)))
    assert report.rows_ok == 2  # lines 2 and 7
    (problem,) = report.problems
    assert problem.where == "q.csv:3" and problem.kind == "unclosed_quote"
    assert "starts on line 3" in problem.message and "next 3 lines (to line 6)" in problem.message
    path.write_text('prompt,response\n"a",b\n"c,d\ne,f\n', encoding="utf-8")  # open to the end
    (problem,) = inspect_data(DataConfig(data=str(path))).problems
    assert problem.where == "q.csv:3" and "next 1 lines (to line 4)" in problem.message
    path.write_text('prompt,response\n"multi\nline",fine\n', encoding="utf-8")  # legal CSV
    assert inspect_data(DataConfig(data=str(path))).rows_ok == 1


def test_a_binary_prompts_file_is_a_message(tmp_path):
    from tunewiz.core.compare import load_prompt_file

    path = tmp_path / "prompts.txt"
    path.write_bytes(b"first\nsecond\n\xff\xfe\x00binary\n")
    with pytest.raises(UserError, match="not UTF-8") as err:
        load_prompt_file(path)
    assert "prompts.txt:3: holds bytes that are not UTF-8" in str(err.value)  # the bad line
    path = tmp_path / "prompts.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match="nested too deeply"):
        load_prompt_file(path)


def test_mixed_formats_read_every_row_the_task_takes(tmp_path):
    chat = [
        {"messages": [{"role": "user", "content": f"u{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(6)
    ]
    path = rows_file(tmp_path / "mixed.jsonl", chat + ALPACA[:3])
    report = inspect_data(DataConfig(data=str(path), task="chat"))
    assert report.format == "openai" and report.rows_ok == 9 and not report.problems
    report = inspect_data(DataConfig(data=str(path), task="instruction"))
    assert report.format == "alpaca" and report.rows_ok == 3 and report.rows_bad == 6
    assert any("does not read" in line for line in report.evidence)


# -- options ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", float("nan"), float("inf"), "1e400"])
def test_nan_and_inf_are_refused_as_config_numbers(value):
    with pytest.raises(UserError, match="finite"):
        coerce(value, float, where="training.learning_rate")
    cfg = RunConfig()
    with pytest.raises(UserError):
        cfg.update({"training": {"learning_rate": value}})


@pytest.mark.parametrize(
    "argv",
    [
        ["estimate", "default", "--gpu-mem", "nan"],
        ["estimate", "default", "--gpu-mem", "24", "--dataset-tokens", "9", "--epochs", "inf"],
        ["train", "--learning-rate", "nan"],
        ["chat", "default", "--temperature", "inf", "--prompt", "x"],
    ],
)
def test_nan_and_inf_flags_are_refused(argv, capsys):
    try:
        code = cli_main(argv)
    except SystemExit as exc:  # argparse refuses the value itself
        code = exc.code
    assert code == 2
    assert "finite number" in capsys.readouterr().err


def test_chat_settings_refuse_nan():
    from tunewiz.core.chat import GenerationSettings

    for name in ("temperature", "top_p", "repetition_penalty"):
        with pytest.raises(UserError, match="finite"):
            GenerationSettings(**{name: math.nan}).check()


def test_user_gpus_toml_refuses_nan(tmp_path):
    from tunewiz.core.profiles import load_gpus

    path = tmp_path / "gpus.toml"
    path.write_text('[[gpu]]\nname = "RTX 4090"\nprice_per_hour_usd = nan\n')
    with pytest.raises(UserError, match="finite"):
        load_gpus(path)


def test_estimate_json_has_no_nan(capsys):
    assert cli_main(["estimate", "default", "--gpu-mem", "24", "--json"]) == 0
    json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"printed {c}"))


def test_max_seq_len_above_the_models_context_is_refused():
    from tunewiz.core.train.limits import check_context

    cfg = RunConfig()
    cfg.data.max_seq_len = 4096
    with pytest.raises(UserError, match="context of 2048") as err:
        check_context(cfg, SimpleNamespace(max_position_embeddings=2048))
    assert err.value.where == "data.max_seq_len"
    check_context(cfg, SimpleNamespace(n_positions=4096))
    check_context(cfg, SimpleNamespace())  # unknown context: no opinion


def test_train_refuses_max_seq_len_above_context_before_creating_the_run(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    argv = ["train", "--preset", "sample-demo", "--max-seq-len", "100000"]
    assert cli_main([*argv, "--runs-dir", str(runs_dir)]) == 2
    assert "context of 8192 tokens" in " ".join(capsys.readouterr().err.split())
    assert not runs_dir.exists()


def test_a_batch_that_fits_no_gpu_is_refused_with_the_estimate():
    from tunewiz.core.train.limits import check_batch_fits_somewhere

    cfg = RunConfig()
    cfg.model.model = "meta-llama/Llama-3.1-8B"
    cfg.data.max_seq_len = 8192
    cfg.training.per_device_train_batch_size = 4096
    with pytest.raises(UserError, match="GiB per device by the estimate") as err:
        check_batch_fits_somewhere(cfg)
    assert err.value.where == "training.per_device_train_batch_size"
    assert "use a batch of" in (err.value.hint or "")
    cfg.training.per_device_train_batch_size = 1
    check_batch_fits_somewhere(cfg)


def test_a_validation_split_larger_than_training_is_refused(default_model_dir):
    from tunewiz.core.data import prepare
    from tunewiz.core.loading import load_tokenizer

    tokenizer = load_tokenizer(str(default_model_dir))
    with pytest.raises(UserError, match="leaving only 5 to train on") as err:
        prepare(DataConfig(data="sample", validation_split=0.9), tokenizer)
    assert err.value.where == "data.validation_split"
    prepared = prepare(DataConfig(data="sample", validation_split=24), tokenizer)
    assert len(prepared.train) == len(prepared.eval) == 24


def test_data_inspect_exit_codes_and_json_errors(tmp_path, capsys):
    good = rows_file(tmp_path / "good.jsonl", ALPACA)
    assert cli_main(["data", "inspect", str(good), "--json"]) == 0
    capsys.readouterr()
    unreadable = tmp_path / "bad.jsonl"
    unreadable.write_text("{not json\n[1]\n")
    assert cli_main(["data", "inspect", str(unreadable)]) == 1  # the report, no usable row
    assert "no usable row" in capsys.readouterr().out
    assert cli_main(["data", "inspect", str(tmp_path / "missing.jsonl"), "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["message"] == "data file not found"
    assert error["where"] == str(tmp_path / "missing.jsonl")


# -- the length histogram ----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=200_000), min_size=1, max_size=300))
def test_histogram_counts_every_row_and_the_suggestion_keeps_99_percent(lengths):
    stats = token_stats(lengths, 512)
    assert stats is not None
    assert sum(n for _, _, n in stats.histogram) == len(lengths)
    for a, b, n in stats.histogram:
        assert n == sum(1 for x in lengths if a <= x < b)
    kept = sum(1 for x in lengths if x <= stats.suggested_max_len)
    assert kept >= 0.99 * len(lengths)
    assert stats.rows_over_suggested == len(lengths) - kept
    assert stats.suggested_max_len % 64 == 0


def test_histogram_edge_cases_that_lost_the_longest_row():
    for lengths in ([14, 183], [14, 222], [1000, 1999], [7, 7, 7]):
        stats = token_stats(lengths, 512)
        assert sum(n for _, _, n in stats.histogram) == len(lengths), lengths


def test_rows_whose_answer_is_cut_off_are_in_the_histogram(tmp_path, default_model_dir):
    from tunewiz.core.loading import load_tokenizer

    rows = [
        {"instruction": f"row {i} " + "word " * (40 if i % 3 else 400), "output": "ok"}
        for i in range(30)
    ]
    path = rows_file(tmp_path / "long.jsonl", rows)
    tokenizer = load_tokenizer(str(default_model_dir))
    report = inspect_data(DataConfig(data=str(path), max_seq_len=128), tokenizer)
    stats = report.token_stats
    assert report.problem_counts.get("no_trainable") == 10
    assert sum(n for _, _, n in stats.histogram) == 30  # 20 usable + 10 cut off
    assert stats.suggested_max_len > 400 and stats.rows_over_suggested == 0


# -- remote code ---------------------------------------------------------------------------


def test_a_run_folders_trust_remote_code_needs_the_flag(tmp_path, caplog):
    from tunewiz.core.models import trust_for_run

    cfg = RunConfig()
    cfg.model.trust_remote_code = True
    with caplog.at_level(logging.WARNING, logger="tunewiz.core.models"):
        assert trust_for_run(tmp_path, cfg, False) is False
    assert "not honoured without --trust-remote-code" in caplog.text
    assert trust_for_run(tmp_path, cfg, True) is True
    assert trust_for_run(tmp_path, RunConfig(), False) is False


class Loaded(Exception):
    """Raised by the stand-in loader once it has seen what chat/export would pass on."""


@pytest.mark.parametrize("flag", [False, True])
def test_chat_compare_and_export_honour_only_the_flag(tmp_path, monkeypatch, flag):
    import tunewiz.core.loading
    from tunewiz.core.compare import compare_batch
    from tunewiz.core.export import merge_run

    run = tmp_path / "runs" / "remote"
    (run / "final").mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json"):
        (run / "final" / name).write_text("{}")
    cfg = RunConfig(name="remote", runs_dir=str(tmp_path / "runs"))
    cfg.model.trust_remote_code = True
    cfg.save(run / "config.toml")
    seen = []

    def loader(path, fallback, trust_remote_code):
        seen.append(trust_remote_code)
        raise Loaded

    monkeypatch.setattr(tunewiz.core.loading, "load_checkpoint_tokenizer", loader)
    runs_dir = tmp_path / "runs"
    with pytest.raises(Loaded):
        tunewiz.core.loading.load_for_chat(
            "remote", runs_dir=runs_dir, device="cpu", trust_remote_code=flag
        )
    with pytest.raises(Loaded):
        compare_batch("remote", runs_dir=runs_dir, device="cpu", trust_remote_code=flag)
    with pytest.raises(Loaded):
        merge_run("remote", tmp_path / "out", runs_dir=runs_dir, trust_remote_code=flag)
    assert seen == [flag, flag, flag]


def test_binary_toml_files_name_the_file_and_line(tmp_path, capsys):
    from tunewiz.core.profiles import load_gpus

    path = tmp_path / "run.toml"
    path.write_bytes(b'name = "x"\n[model]\n\xff\xfe\x00\x01binary\n')
    assert cli_main(["train", str(path)]) == 2
    assert f"{path}:3: not a text file" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(UserError) as err:
        load_gpus(path)
    assert err.value.where == f"{path}:3"
    path.write_text("a = " + "[" * 100_000)
    with pytest.raises(UserError, match="not valid TOML"):
        RunConfig.load(path)
