"""tunewiz.core.config: TOML round trip, overrides, and errors that name the option."""

from __future__ import annotations

import dataclasses

import pytest

from tunewiz.core.config import RunConfig, options, validate
from tunewiz.core.errors import UserError


def test_toml_round_trip_keeps_every_field(tmp_path):
    cfg = RunConfig(name="demo")
    cfg.set("training.learning_rate", "1e-3")
    cfg.set("per_device_train_batch_size", 8)
    cfg.set("data.columns", "prompt=question,response=answer")
    cfg.set("model.gradient_checkpointing", "true")
    path = tmp_path / "config.toml"
    cfg.save(path)
    again = RunConfig.load(path)
    assert again == cfg
    assert again.training.learning_rate == 1e-3
    assert again.data.columns == {"prompt": "question", "response": "answer"}


def test_written_toml_explains_each_option():
    text = RunConfig().to_toml()
    for option in options("training"):
        assert f"{option.name} = " in text
        assert f"# {option.help}" in text


def test_every_option_has_one_line_of_help():
    for section in (None, *RunConfig.SECTIONS):
        for option in options(section):
            assert option.help and "\n" not in option.help, option.dotted


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[training]\nlearning_rat = 0.1\n")
    with pytest.raises(UserError) as err:
        RunConfig.load(path)
    assert "bad.toml" in str(err.value) and "learning_rat" in str(err.value)
    assert "learning_rate" in str(err.value)  # the hint lists the real names


def test_bad_types_and_choices_say_which_option():
    cfg = RunConfig()
    with pytest.raises(UserError, match="per_device_train_batch_size"):
        cfg.set("training.per_device_train_batch_size", "two")
    with pytest.raises(UserError, match="not one of"):
        cfg.set("model.method", "dora")
    with pytest.raises(UserError, match="whole number"):
        cfg.set("training.max_steps", 2.5)


def test_invalid_toml_is_a_user_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[training\n")
    with pytest.raises(UserError, match="not valid TOML"):
        RunConfig.load(path)


@pytest.mark.parametrize(
    ("option", "value", "where"),
    [
        ("model.lora_r", 0, "model.lora_r"),
        ("training.per_device_train_batch_size", -1, "per_device_train_batch_size"),
        ("training.max_steps", 0, "training.max_steps"),
        ("training.warmup_ratio", 1.5, "warmup_ratio"),
    ],
)
def test_impossible_values_are_refused_where_they_are_set(option, value, where):
    cfg = RunConfig()
    with pytest.raises(UserError) as err:
        cfg.set(option, value)
    assert where in str(err.value)
    # and validate() finds the same value put there behind set()'s back
    section, name = option.split(".")
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(UserError) as err:
        validate(cfg)
    assert where in str(err.value)


def test_validate_accepts_defaults_and_checks_cross_field_rules():
    validate(RunConfig())
    cfg = RunConfig()
    cfg.training = dataclasses.replace(
        cfg.training, load_best_model_at_end=True, eval_strategy="no"
    )
    with pytest.raises(UserError, match="load_best_model_at_end"):
        validate(cfg)
    cfg = RunConfig()
    cfg.set("distributed.distributed", "ddp")
    with pytest.raises(UserError, match="num_processes"):
        validate(cfg)


def test_the_samples_held_out_questions_go_with_the_sample_only():
    from tunewiz.core.config import validate

    cfg = RunConfig()
    cfg.data.data, cfg.data.validation_file = "sample", "sample-heldout"
    validate(cfg)
    cfg.data.data = "mine.jsonl"
    with pytest.raises(UserError, match="only go with") as err:
        validate(cfg)
    assert err.value.where == "data.validation_file"


# -- choices: Literal types, their tuples derived once ----------------------------------

CHOICE_TUPLES = {
    "Method": "METHODS",
    "Precision": "PRECISIONS",
    "AttnImplementation": "ATTN_IMPLEMENTATIONS",
    "AutoSwitch": "AUTO_SWITCHES",
    "QuantType": "QUANT_TYPES",
    "ComputeDtype": "COMPUTE_DTYPES",
    "Task": "TASKS",
    "DataFormat": "DATA_FORMATS",
    "TextSplit": "TEXT_SPLITS",
    "OnBadRows": "ON_BAD_ROWS",
    "Objective": "OBJECTIVES",
    "LrScheduler": "LR_SCHEDULERS",
    "Optim": "OPTIMS",
    "IntervalStrategy": "INTERVAL_STRATEGIES",
    "DpoLoss": "DPO_LOSSES",
    "KtoLoss": "KTO_LOSSES",
    "LossType": "LOSS_TYPES",
    "ReportTo": "REPORT_TOS",
    "Distributed": "DISTRIBUTED",
    "Section": "SECTIONS",
}


def test_every_choice_tuple_is_the_get_args_of_its_literal():
    from typing import Literal, get_args, get_origin

    from tunewiz.core import config

    literals = {n for n, v in vars(config).items() if get_origin(v) is Literal}
    assert literals == set(CHOICE_TUPLES)  # a new choice gets its tuple here too
    for literal, choices in CHOICE_TUPLES.items():
        assert getattr(config, choices) == get_args(getattr(config, literal)), choices


def test_every_choice_option_offers_and_takes_exactly_its_literals_values():
    from typing import get_args, get_type_hints

    from tunewiz.core.config import _SECTION_TYPES

    seen = 0
    for section, cls in _SECTION_TYPES.items():
        hints = get_type_hints(cls)
        for option in options(section):
            assert option.choices == get_args(hints[option.name]), option.dotted
            for value in option.choices:
                RunConfig().set(option.dotted, value)  # each choice is taken on its own
            if option.choices:
                seen += 1
                with pytest.raises(UserError, match="not one of") as err:
                    RunConfig().set(option.dotted, "no-such-choice")
                assert err.value.where == option.dotted
    assert seen >= 15


def test_other_declarations_of_a_config_choice_are_the_config_tuple():
    import argparse

    import tunewiz.cli.data as cli_data
    import tunewiz.cli.estimate as cli_estimate
    from tunewiz.core import config
    from tunewiz.core.estimate import memory

    assert memory.OBJECTIVES is config.OBJECTIVES
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli_data.register(sub)
    cli_estimate.register(sub)
    inspect = sub.choices["data"]._subparsers._group_actions[0].choices["inspect"]
    flags = {a.dest: a.choices for a in inspect._actions}
    assert flags["task"] is config.TASKS and flags["format"] is config.DATA_FORMATS
    assert flags["text_split"] is config.TEXT_SPLITS and flags["objective"] is config.OBJECTIVES
    estimate_flags = {a.dest: a.choices for a in sub.choices["estimate"]._actions}
    assert estimate_flags["objective"] is config.OBJECTIVES


def test_a_section_built_in_code_checks_its_values():
    from tunewiz.core.config import DataConfig, ModelConfig

    with pytest.raises(UserError) as err:
        DataConfig(max_seq_len=0)
    assert err.value.where == "data.max_seq_len"
    with pytest.raises(UserError, match="not one of") as err:
        ModelConfig(method="dora")  # type: ignore[arg-type]
    assert err.value.where == "model.method"


# -- made whole, checked once: sources laid over each other --------------------------------


def test_a_flag_fixes_a_bad_value_in_the_file(tmp_path):
    from tunewiz.core.config import Source

    path = tmp_path / "run.toml"
    path.write_text('[training]\nlearning_rate = -1.0\nmax_steps = "many"\nsave_steps = 7\n')
    flags = Source("flags", {"training": {"learning_rate": "1e-4", "max_steps": "3"}}, flags=True)
    cfg = RunConfig.load(path, flags)
    assert cfg.training.learning_rate == 1e-4 and cfg.training.max_steps == 3
    assert cfg.training.save_steps == 7  # the file's other values stay


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[training]\nlearning_rate = -1.0\n", "training.learning_rate"),  # its own rule
        ('[model]\nmethod = "dora"\n', "model.method"),  # a choice
        ("[training]\nmax_steps = 2.5\n", "training.max_steps"),  # a type
        ('[distributed]\ndistributed = "ddp"\n', "distributed.num_processes"),  # across options
        ("[training]\nload_best_model_at_end = true\neval_strategy = 'no'\n", "load_best"),
    ],
)
def test_a_bad_value_left_in_the_file_is_refused_naming_file_and_option(tmp_path, text, where):
    from tunewiz.core.config import Source

    path = tmp_path / "bad.toml"
    path.write_text(text)
    other_flag = Source("flags", {"training": {"seed": "3"}}, flags=True)
    for made in (lambda: RunConfig.load(path), lambda: RunConfig.load(path, other_flag)):
        with pytest.raises(UserError) as err:
            made()
        assert str(path) in (err.value.where or "") and where in (err.value.where or "")


def test_a_bad_flag_is_named_by_its_flag_after_the_merge():
    from tunewiz.core.config import Source

    flags = Source("flags", {"training": {"warmup_ratio": "2"}}, flags=True)
    with pytest.raises(UserError) as err:
        RunConfig.from_sources(Source("preset x", {"training": {"max_steps": 5}}), flags)
    assert err.value.where == "--warmup-ratio"


def test_a_run_folders_bad_config_is_reported_as_damage(tmp_path):
    from tunewiz.core.config import load_run_config

    run = tmp_path / "run"
    run.mkdir()
    RunConfig(name="run").save(run / "config.toml")
    assert load_run_config(run).name == "run"
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(text.replace("lora_r = 16", "lora_r = -3"))
    with pytest.raises(UserError, match="this run is damaged") as err:
        load_run_config(run)
    assert "config.toml" in (err.value.where or "") and "model.lora_r" in (err.value.where or "")
