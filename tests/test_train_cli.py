"""`tunewiz train|runs|logs|stop|resume` argument handling and presets (no training here)."""

from __future__ import annotations

import argparse
import json
import os
import time

import pytest

import tunewiz.cli.train as cli_train
from tunewiz.core import runs
from tunewiz.core.config import RunConfig, options, validate
from tunewiz.core.errors import UserError
from tunewiz.core.train.presets import load_preset, preset_description, preset_names


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli_train.register(parser.add_subparsers())
    return parser.parse_args(list(argv))


def test_every_config_option_has_a_flag_with_its_help():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli_train.register(sub)
    help_text = sub.choices["train"].format_help()
    for section in RunConfig.SECTIONS:
        for option in options(section):
            assert "--" + option.name.replace("_", "-") in help_text
    assert "--runs-dir" in help_text and "--name" in help_text and "--foreground" in help_text


def test_flags_override_the_config_file_and_keep_its_other_values(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'name = "from-file"\n[training]\nmax_steps = 50\nlearning_rate = 0.001\n[model]\nmethod = "full"\n'
    )
    args = parse(
        "train",
        str(path),
        "--max-steps",
        "3",
        "--per-device-train-batch-size",
        "2",
        "--max-seq-len",
        "256",
        "--lora-r",
        "8",
        "--gradient-checkpointing",
        "--columns",
        "prompt=question,response=answer",
    )
    cfg = cli_train.config_from_args(args)
    assert cfg.name == "from-file" and cfg.model.method == "full"
    assert cfg.training.max_steps == 3 and cfg.training.learning_rate == 0.001
    assert cfg.training.per_device_train_batch_size == 2
    assert cfg.data.max_seq_len == 256 and cfg.model.lora_r == 8
    assert cfg.model.gradient_checkpointing is True
    assert cfg.data.columns == {"prompt": "question", "response": "answer"}


def test_a_bad_flag_value_names_the_flag():
    with pytest.raises(UserError) as err:
        cli_train.config_from_args(parse("train", "--max-steps", "three"))
    assert err.value.where == "--max-steps"
    with pytest.raises(SystemExit):  # argparse rejects values outside the choices
        parse("train", "--method", "sideways")


def test_a_bad_config_file_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[training]\nmax_stepz = 3\n")
    with pytest.raises(UserError) as err:
        cli_train.config_from_args(parse("train", str(path)))
    assert "bad.toml" in str(err.value) and "max_stepz" in str(err.value)


def test_preset_then_file_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[training]\nsave_steps = 7\n")
    cfg = cli_train.config_from_args(
        parse("train", str(path), "--preset", "quick-test", "--max-steps", "4")
    )
    assert cfg.training.save_steps == 7  # the file beats the preset
    assert cfg.training.max_steps == 4  # the flag beats both
    assert (
        cfg.data.max_seq_len == load_preset("quick-test")["data"]["max_seq_len"]
    )  # the preset filled the rest


@pytest.mark.parametrize("name", ["quick-test", "standard", "thorough"])
def test_presets_are_valid_run_configs_with_a_runnable_header(name):
    assert name in preset_names()
    cfg = RunConfig.from_dict(load_preset(name), where=name)  # unknown keys or bad values raise
    validate(cfg)
    assert preset_description(name)
    header = [
        line
        for line in (
            runs.Path(__file__).parent.parent / "tunewiz" / "profiles" / "presets" / f"{name}.toml"
        )
        .read_text()
        .splitlines()
        if line.startswith("#")
    ]
    assert any(f"tunewiz train --preset {name}" in line for line in header)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(UserError) as err:
        load_preset("turbo")
    assert "quick-test" in str(err.value)


def test_runs_json_and_table_and_logs(tmp_path, capsys):
    run = tmp_path / "demo"
    run.mkdir()
    (run / "config.toml").write_text("")
    now = time.time()
    runs.write_status(
        run,
        state="finished",
        step=10,
        total_steps=10,
        last_loss=0.5,
        best_eval_loss=0.6,
        started_at=now - 65,
        ended_at=now,
        created_at=now,
        method="lora",
        pid=os.getpid(),
    )
    (run / "train.log").write_text("first\n[bold]literal[/bold]\nlast\n")
    assert cli_train.cmd_runs(parse("runs", "--json", "--runs-dir", str(tmp_path))) == 0
    rows = json.loads(capsys.readouterr().out)
    assert (
        rows[0]["name"] == "demo" and rows[0]["state"] == "finished" and rows[0]["progress"] == 1.0
    )
    assert cli_train.cmd_runs(parse("runs", "--runs-dir", str(tmp_path))) == 0
    table = capsys.readouterr().out
    assert "demo" in table and "finished" in table and "0.5000" in table and "1m05s" in table
    assert cli_train.cmd_logs(parse("logs", "demo", "-n", "2", "--runs-dir", str(tmp_path))) == 0
    assert capsys.readouterr().out == "[bold]literal[/bold]\nlast\n"
    with pytest.raises(UserError, match="not running"):
        cli_train.cmd_stop(parse("stop", "demo", "--runs-dir", str(tmp_path)))
    with pytest.raises(UserError, match="already finished"):
        cli_train.cmd_resume(parse("resume", "demo", "--runs-dir", str(tmp_path)))


@pytest.mark.parametrize(
    ("kind", "dtype", "strategy"),
    [("ddp", "MULTI_GPU", None), ("fsdp", "FSDP", "FULL_SHARD"), ("zero2", "FSDP", "SHARD_GRAD_OP"),
     ("zero3", "FSDP", "FULL_SHARD")],
)  # fmt: skip
def test_distributed_choice_becomes_an_accelerate_config(tmp_path, kind, dtype, strategy):
    import yaml

    from tunewiz.core.train.distributed import write_accelerate_config

    cfg = RunConfig()
    cfg.distributed.distributed = kind
    cfg.distributed.num_processes = 16
    cfg.distributed.num_machines = 2
    cfg.distributed.main_process_ip = "10.0.0.1"
    written = yaml.safe_load(
        write_accelerate_config(tmp_path, cfg, cuda=True, precision="bf16").read_text()
    )
    assert written["distributed_type"] == dtype and written["num_processes"] == 16
    assert written["num_machines"] == 2 and written["main_process_ip"] == "10.0.0.1"
    assert written["mixed_precision"] == "bf16" and written["use_cpu"] is False
    assert written.get("fsdp_config", {}).get("fsdp_sharding_strategy") == strategy


def test_worker_command_uses_torchrun_without_gpus_and_plain_python_otherwise(tmp_path):
    import sys

    from tunewiz.core.train.launcher import worker_command

    cfg = RunConfig()
    assert worker_command(tmp_path, cfg) == [
        sys.executable,
        "-m",
        "tunewiz.core.train.worker",
        str(tmp_path.absolute()),
    ]
    cfg.distributed.distributed = "ddp"
    cfg.distributed.num_processes = 2
    cmd = worker_command(tmp_path, cfg, resume=True)
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--nproc-per-node=2" in cmd
    assert cmd[-4:] == ["-m", "tunewiz.core.train.worker", str(tmp_path.absolute()), "--resume"]
    assert (tmp_path / "accelerate_config.yaml").is_file()


def test_options_needing_missing_packages_are_refused_before_anything_starts(monkeypatch):
    import importlib.util

    from tunewiz.core.train.preflight import check_optional_packages

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            None if name in ("flash_attn", "tensorboard", "tensorboardX") else real(name, *a)
        ),
    )
    cfg = RunConfig()
    cfg.model.attn_implementation = "flash_attention_2"
    with pytest.raises(UserError, match="flash-attn"):
        check_optional_packages(cfg)
    cfg = RunConfig()
    cfg.training.report_to = "tensorboard"
    with pytest.raises(UserError) as err:
        check_optional_packages(cfg)
    assert err.value.where == "training.report_to"


def test_local_paths_are_made_absolute_for_a_reproducible_config(tmp_path, monkeypatch):
    from tunewiz.core.train.launcher import absolutize_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.jsonl").write_text("{}\n")
    cfg = RunConfig()
    cfg.data.data = "rows.jsonl"
    cfg.runs_dir = "runs"
    absolutize_paths(cfg)
    assert cfg.data.data == str(tmp_path / "rows.jsonl")
    assert cfg.runs_dir == str(tmp_path / "runs")
    assert cfg.model.model == RunConfig().model.model  # a hub id stays as it is
    assert cfg.data.validation_file == ""


def test_an_uncached_hub_model_offline_is_refused_before_any_run_folder(tmp_path, monkeypatch):
    """Offline, a hub model whose files are not cached would only fail in the detached worker:
    the quick checks refuse it first, with what to do, and create nothing."""
    from tunewiz.core.train.launcher import launch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    cfg = RunConfig()
    cfg.model.model, cfg.runs_dir = "Qwen/Qwen2.5-7B", str(tmp_path / "runs")
    with pytest.raises(UserError, match="not on this machine and HF_HUB_OFFLINE is set") as err:
        launch(cfg)
    assert err.value.where == "model.model" and "local model folder" in err.value.hint
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_bad_value_in_the_file_fixed_by_a_flag_starts_the_run(tmp_path, monkeypatch, capsys):
    """The file is read whole with the flags over it, then checked: the flag's value is the one
    the run gets, and the config.toml it writes is one the worker reads back."""
    from tunewiz.cli import main as cli_main
    from tunewiz.core.config import load_run_config
    from tunewiz.core.train import launcher

    started = []
    monkeypatch.setattr(launcher, "start_worker", lambda run_dir, cfg, **kw: started.append(cfg))
    monkeypatch.setattr(runs, "read_status", lambda run_dir: {"pid": 1})
    path = tmp_path / "run.toml"
    path.write_text("[training]\nlearning_rate = -1.0\nmax_steps = 2\n")
    runs_dir = tmp_path / "runs"
    argv = ["train", str(path), "--preset", "sample-demo", "--learning-rate", "1e-4"]
    assert cli_main([*argv, "--runs-dir", str(runs_dir)]) == 0, capsys.readouterr().err
    (cfg,) = started
    assert cfg.training.learning_rate == 1e-4 and cfg.training.max_steps == 2
    (run_dir,) = runs_dir.iterdir()
    assert load_run_config(run_dir).training.learning_rate == 1e-4


def test_a_bad_value_left_in_the_file_is_refused_naming_file_and_option(tmp_path, capsys):
    from tunewiz.cli import main as cli_main

    path = tmp_path / "run.toml"
    path.write_text("[training]\nlearning_rate = -1.0\n")
    runs_dir = tmp_path / "runs"
    argv = ["train", str(path), "--preset", "sample-demo", "--max-steps", "2"]
    assert cli_main([*argv, "--runs-dir", str(runs_dir)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{path}: training.learning_rate: must be positive" in err
    assert not runs_dir.exists()
