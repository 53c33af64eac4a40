"""TrainingArguments from a RunConfig: the config keeps TrainingArguments' names, so this is mostly a copy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewiz.core.config import RunConfig

if TYPE_CHECKING:
    from transformers import TrainingArguments

# Config optimizer names -> the names TrainingArguments expects, where they differ
# (tunewiz.core.estimate.for_run.ESTIMATOR_OPTIMIZERS maps the same config names to the estimator's).
TRANSFORMERS_OPTIMIZERS = {"adamw_8bit": "adamw_bnb_8bit"}


def training_kwargs(
    cfg: RunConfig,
    output_dir: Path,
    *,
    precision: str,
    has_eval: bool,
    cuda: bool,
    packed: bool = False,
    liger: bool = False,
) -> dict[str, Any]:
    t = cfg.training
    eval_strategy = t.eval_strategy if has_eval else "no"
    kw = dict(
        output_dir=str(output_dir),
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        # transformers 5 folded warmup_ratio into warmup_steps: a float below 1 is a ratio.
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=TRANSFORMERS_OPTIMIZERS.get(t.optim, t.optim),
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy=t.save_strategy,
        save_steps=t.save_steps,
        eval_strategy=eval_strategy,
        eval_steps=t.eval_steps,
        save_total_limit=t.save_total_limit if t.save_total_limit > 0 else None,
        load_best_model_at_end=t.load_best_model_at_end and eval_strategy != "no",
        metric_for_best_model=t.metric_for_best_model,
        greater_is_better=t.greater_is_better,
        seed=t.seed,
        report_to=[] if t.report_to == "none" else [t.report_to],
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda,
        # Our rows are plain lists of dicts already shaped for the model.
        remove_unused_columns=False,
        # A NaN loss must reach our callback, not be averaged away.
        logging_nan_inf_filter=False,
        # train.log is a file: one line per log beats carriage-return progress bars.
        disable_tqdm=True,
        dataloader_pin_memory=cuda,
        # Packed rows are filled in order, so some are short; batching rows of similar length
        # keeps the padding of a packed batch small.
        train_sampling_strategy="group_by_length" if packed else "random",
        # (gradient checkpointing is set up on the model, non-reentrant, in tunewiz.core.train.model)
        # Liger's fused kernels (tunewiz.core.kernels.use_liger decides; Trainer patches the model).
        use_liger_kernel=liger,
    )
    if cfg.distributed.distributed != "none":
        kw["ddp_find_unused_parameters"] = False
    return kw


def build_training_args(
    cfg: RunConfig, output_dir: Path, *, precision: str, has_eval: bool, packed: bool = False
) -> TrainingArguments:
    import os

    import torch
    from transformers import TrainingArguments

    from tunewiz.core import kernels

    if cfg.training.report_to == "tensorboard":
        # transformers 5 reads the TensorBoard folder from the environment (no logging_dir argument).
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(Path(output_dir) / "tensorboard"))

    return TrainingArguments(
        **training_kwargs(
            cfg,
            output_dir,
            precision=precision,
            has_eval=has_eval,
            cuda=torch.cuda.is_available(),
            packed=packed,
            liger=kernels.for_run(cfg.model)[1],
        )
    )
