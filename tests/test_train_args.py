"""tunewiz.core.train.args: how a RunConfig becomes the TrainingArguments transformers reads.

Nothing else checks this mapping directly: a wrong name here trains with a
different schedule, optimizer or precision than the config says, silently.
"""

from __future__ import annotations

import pytest
from transformers import TrainingArguments
from transformers.training_args import OptimizerNames

from tunewiz.core.config import ATTN_IMPLEMENTATIONS, DISTRIBUTED, OPTIMS, PRECISIONS, RunConfig
from tunewiz.core.estimate.for_run import (
    ESTIMATOR_ATTENTIONS,
    ESTIMATOR_OPTIMIZERS,
    request_from_run_config,
)
from tunewiz.core.estimate.memory import ATTENTIONS, ESTIMATE_PRECISIONS, OPTIMIZERS
from tunewiz.core.train.args import TRANSFORMERS_OPTIMIZERS, training_kwargs
from tunewiz.core.train.model import resolve_precision


def kwargs(cfg: RunConfig, tmp_path, *, precision="fp32", has_eval=True, packed=False) -> dict:
    return training_kwargs(
        cfg, tmp_path, precision=precision, has_eval=has_eval, cuda=False, packed=packed
    )


@pytest.mark.parametrize(
    ("ratio", "steps", "warmup"), [(0.05, 200, 10), (0.1, 35, 4), (0.0, 50, 0)]
)
def test_warmup_ratio_is_read_by_transformers_as_a_ratio_of_the_steps(
    tmp_path, ratio, steps, warmup
):
    cfg = RunConfig()
    cfg.training.warmup_ratio = ratio
    args = TrainingArguments(**kwargs(cfg, tmp_path))
    assert args.get_warmup_steps(steps) == warmup


@pytest.mark.parametrize("ours", OPTIMS)
def test_every_optimizer_choice_is_a_name_transformers_knows(tmp_path, ours):
    cfg = RunConfig()
    cfg.training.optim = ours
    name = kwargs(cfg, tmp_path)["optim"]
    assert name == TRANSFORMERS_OPTIMIZERS.get(ours, ours)
    OptimizerNames(name)  # raises ValueError for a name transformers does not know


@pytest.mark.parametrize("ours", OPTIMS)
def test_every_optimizer_choice_can_also_be_estimated(ours):
    assert ESTIMATOR_OPTIMIZERS[ours] in OPTIMIZERS


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_choice_is_priced_as_an_estimator_precision(precision):
    cfg = RunConfig()
    cfg.model.precision = precision
    for device in ("cuda", "cpu", "Tesla T4"):
        assert request_from_run_config(cfg, device=device).precision in ESTIMATE_PRECISIONS


@pytest.mark.parametrize("attn", [a for a in ATTN_IMPLEMENTATIONS if a != "auto"])
def test_every_attention_choice_has_an_estimator_name(attn):
    assert ESTIMATOR_ATTENTIONS[attn] in ATTENTIONS


@pytest.mark.parametrize(
    ("strategy", "zero"), [("none", 0), ("ddp", 0), ("zero2", 2), ("zero3", 3), ("fsdp", 3)]
)
def test_every_distributed_choice_is_priced_with_its_sharding(strategy, zero):
    assert set(DISTRIBUTED) == {"none", "ddp", "zero2", "zero3", "fsdp"}  # the table is whole
    cfg = RunConfig()
    cfg.distributed.distributed, cfg.distributed.num_processes = strategy, 2
    req = request_from_run_config(cfg, device="cuda")
    assert req.zero == zero and req.gpus == (1 if strategy == "none" else 2)


def test_friendlier_optimizer_name_maps_to_bitsandbytes_adamw(tmp_path):
    cfg = RunConfig()
    cfg.training.optim = "adamw_8bit"
    assert kwargs(cfg, tmp_path)["optim"] == "adamw_bnb_8bit"


@pytest.mark.parametrize(
    ("precision", "bf16", "fp16"),
    [("bf16", True, False), ("fp16", False, True), ("fp32", False, False)],
)
def test_resolved_precision_sets_at_most_one_mixed_precision_flag(tmp_path, precision, bf16, fp16):
    kw = kwargs(RunConfig(), tmp_path, precision=precision)
    assert (kw["bf16"], kw["fp16"]) == (bf16, fp16)


def test_on_a_cpu_every_precision_trains_in_fp32_and_the_arguments_build(tmp_path):
    for asked in ("auto", "bf16", "fp16", "fp32"):
        precision = resolve_precision(asked, cuda=False)
        assert precision == "fp32"
        args = TrainingArguments(**kwargs(RunConfig(), tmp_path, precision=precision))
        assert not args.bf16 and not args.fp16 and args.use_cpu


def test_without_eval_rows_evaluation_and_best_model_are_off(tmp_path):
    cfg = RunConfig()
    cfg.training.eval_strategy = "steps"
    cfg.training.load_best_model_at_end = True
    cfg.training.save_strategy = "steps"
    with_eval = kwargs(cfg, tmp_path, has_eval=True)
    assert (with_eval["eval_strategy"], with_eval["load_best_model_at_end"]) == ("steps", True)
    without = kwargs(cfg, tmp_path, has_eval=False)
    assert (without["eval_strategy"], without["load_best_model_at_end"]) == ("no", False)
    TrainingArguments(**without)  # a consistent set: transformers accepts it


def test_limits_reporting_and_batching_follow_the_config(tmp_path):
    cfg = RunConfig()
    cfg.training.save_total_limit = 0
    cfg.training.report_to = "none"
    kw = kwargs(cfg, tmp_path)
    assert kw["save_total_limit"] is None  # 0 means "keep every checkpoint"
    assert kw["report_to"] == []
    assert kw["train_sampling_strategy"] == "random"
    assert kwargs(cfg, tmp_path, packed=True)["train_sampling_strategy"] == "group_by_length"
    cfg.training.save_total_limit = 2
    assert kwargs(cfg, tmp_path)["save_total_limit"] == 2
    t = cfg.training
    kw = kwargs(cfg, tmp_path)
    assert (kw["learning_rate"], kw["per_device_train_batch_size"], kw["seed"]) == (
        t.learning_rate,
        t.per_device_train_batch_size,
        t.seed,
    )
