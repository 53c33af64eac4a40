"""Preference tuning (dpo / orpo / kto) with TRL's trainers, inside tunewiz's run machinery.

The worker calls `build_trainer` instead of making a RunTrainer: the trainer
classes here are TRL's with RunTrainer's all-or-nothing checkpoints and token
counting mixed in, so stop, resume, NaN/OOM handling and metrics.jsonl work as
for SFT. Where TRL 1.16 keeps them: `trl.DPOTrainer`, `trl.KTOTrainer` (back in
the main package; `trl.experimental.kto` is a deprecated alias) and
`trl.experimental.orpo.ORPOTrainer`.

The reference model: with adapters (lora, qlora) TRL receives the base model and
a `peft_config`, and computes the reference with the adapters disabled (no
second copy). With full or freeze training a frozen copy is loaded in the
compute dtype, unless `precompute_ref_log_probs` scores the data once before
training (then no copy is kept). ORPO has no reference model.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewiz.core.config import RunConfig
from tunewiz.core.train.collate import TOKENS_KEY

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from torch import nn
    from transformers import (
        PreTrainedModel,
        PreTrainedTokenizerBase,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from tunewiz.core.train.trainer import RunTrainer

log = logging.getLogger(__name__)

# Per-step metrics that TRL logs and metrics.jsonl keeps (the live panel reads the rewards).
METRIC_PREFIXES = ("rewards/", "logps/")
METRIC_KEYS = ("nll_loss", "log_odds_ratio", "kl")


def uses_adapters(cfg: RunConfig) -> bool:
    return cfg.model.method in ("lora", "qlora")


def needs_reference_copy(cfg: RunConfig) -> bool:
    """Full/freeze dpo or kto keeps a frozen starting model, unless its log-probs are precomputed."""
    t = cfg.training
    return (
        t.objective in ("dpo", "kto") and not uses_adapters(cfg) and not t.precompute_ref_log_probs
    )


def objective_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """The objective's own options, under TRL's names."""
    t, objective = cfg.training, cfg.training.objective
    kw: dict[str, Any] = {"beta": t.beta, "max_length": cfg.data.max_seq_len}
    if objective == "dpo":
        kw["loss_type"] = [t.loss_type if t.loss_type != "auto" else "sigmoid"]
    if objective == "kto":
        kw["loss_type"] = t.loss_type if t.loss_type != "auto" else "kto"
        kw["desirable_weight"] = t.desirable_weight
        kw["undesirable_weight"] = t.undesirable_weight
    if objective in ("dpo", "kto"):
        kw["precompute_ref_log_probs"] = t.precompute_ref_log_probs
    return kw


def trl_classes(objective: str) -> tuple[type[TrainingArguments], type[Trainer]]:
    """(config class, trainer class) of TRL for an objective."""
    if objective == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer
    if objective == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    return ORPOConfig, ORPOTrainer


def build_args(
    cfg: RunConfig, run_dir: Path, *, precision: str, has_eval: bool
) -> TrainingArguments:
    import torch

    from tunewiz.core.train.args import training_kwargs

    config_cls, _ = trl_classes(cfg.training.objective)
    kw = training_kwargs(
        cfg, run_dir, precision=precision, has_eval=has_eval, cuda=torch.cuda.is_available()
    )
    # TRL's configs default to gradient checkpointing on; ours is set on the model already.
    kw["gradient_checkpointing"] = False
    kw["dataset_num_proc"] = None
    if cfg.training.objective == "kto":
        # TRL's KL estimate pairs each row with its batch neighbours: the order must be fixed
        # (the rows were shuffled once, with the split seed, when the data was prepared).
        kw["train_sampling_strategy"] = "sequential"
    return config_cls(**kw, **objective_kwargs(cfg))


@cache
def run_trainer_class(objective: str) -> type[RunTrainer]:
    """TRL's trainer with RunTrainer's checkpointing and token counting (RunTrainer first in the MRO)."""
    from tunewiz.core.train.trainer import RunTrainer

    _, base = trl_classes(objective)

    class PreferenceRunTrainer(RunTrainer, base):  # type: ignore[misc, valid-type]
        def training_step(
            self, model: nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any
        ) -> torch.Tensor:
            # Batches hold chosen and rejected (or KTO's completion) rows: count every sequence.
            masks = [v for k, v in inputs.items() if k.endswith("attention_mask")]
            self.tokens_seen += int(sum(int(m.sum()) for m in masks))
            self.padded_tokens_seen += sum(m.numel() for m in masks)
            inputs.pop(TOKENS_KEY, None)
            return super(RunTrainer, self).training_step(model, inputs, *args, **kwargs)

    PreferenceRunTrainer.__name__ = f"Run{base.__name__}"
    return PreferenceRunTrainer


def build_trainer(
    cfg: RunConfig,
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    *,
    run_dir: Path,
    precision: str,
    callbacks: list[TrainerCallback],
    fault: tuple[str, int] | None,
) -> RunTrainer:
    from datasets import Dataset

    args = build_args(cfg, run_dir, precision=precision, has_eval=bool(eval_rows))
    kwargs: dict[str, Any] = {}
    if uses_adapters(cfg):
        from tunewiz.core.train.model import lora_config

        kwargs["peft_config"] = lora_config(cfg.model)
    elif needs_reference_copy(cfg):
        kwargs["ref_model"] = load_reference(cfg, precision)
    trainer = run_trainer_class(cfg.training.objective)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        callbacks=callbacks,
        fault=fault,
        **kwargs,
    )
    return trainer


def load_reference(cfg: RunConfig, precision: str) -> PreTrainedModel:
    """The frozen starting model, in the compute dtype (16-bit on a GPU, fp32 on the CPU)."""
    from transformers import AutoModelForCausalLM

    from tunewiz.core import kernels
    from tunewiz.core.loading import torch_dtype
    from tunewiz.core.models import resolve_model

    ref = AutoModelForCausalLM.from_pretrained(
        resolve_model(cfg.model.model),
        dtype=torch_dtype(precision),
        trust_remote_code=cfg.model.trust_remote_code,
        attn_implementation=kernels.for_run(cfg.model)[0],  # the same attention as the policy
    )
    ref.requires_grad_(False)
    return ref.eval()


def metric_row(logs: dict[str, Any]) -> dict[str, Any]:
    """The objective's metrics among a log entry's, for metrics.jsonl."""
    return {
        k: v
        for k, v in logs.items()
        if k.startswith(METRIC_PREFIXES) or k in METRIC_KEYS or k.startswith("eval_rewards/")
    }
