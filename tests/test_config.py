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
