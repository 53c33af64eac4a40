"""The quick checks before a run starts, in the user's terminal (about two seconds, no torch).

Options against each other, the packages they need, the model's shape from its
config.json, whether a hub model is cached or reachable, the model's limits, and
the data's format on its first rows. Everything slower (reading and tokenizing
every row) is the worker's (tunewiz.core.train.prepare), which fails the run with
the same messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tunewiz.core.config import RunConfig, validate
from tunewiz.core.errors import UserError
from tunewiz.core.train.limits import check_limits

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from tunewiz.core.profiles import ModelArch


def check_run(cfg: RunConfig) -> tuple[str, ModelArch | None]:
    """UserError on the first problem a run would meet; else (what from_pretrained takes for
    the model, the model's shape or None when the estimator does not know it)."""
    from tunewiz.core.models import check_model_here_or_reachable, resolve_model

    validate(cfg)
    check_optional_packages(cfg)
    model_path = resolve_model(cfg.model.model)
    arch = model_arch(cfg, model_path)
    check_model_here_or_reachable(cfg.model.model)
    check_limits(cfg, arch)
    check_data(cfg)
    return model_path, arch


def model_arch(cfg: RunConfig, model_path: str) -> ModelArch | None:
    """The model's shape from its config.json, read as plain JSON (importing transformers would
    take most of the launcher's two seconds); transformers' own reader for what JSON cannot tell."""
    from tunewiz.core.profiles import load_model_arch

    try:
        return load_model_arch(model_path)
    except UserError:
        if not Path(model_path).exists():
            raise UserError(
                f"cannot find the model {cfg.model.model!r}",
                where="model.model",
                hint="offline? give a local model folder or the bundled default",
            ) from None
    _load_model_config(cfg, model_path)  # a clear message if transformers cannot read it either
    return None  # readable, but of a shape the estimator does not know: no disk check


def _load_model_config(cfg: RunConfig, model_path: str) -> PretrainedConfig:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
    except ValueError as exc:
        hint = "set model.trust_remote_code = true only if you trust this model's code"
        raise UserError(
            f"cannot read the model's config: {exc}", where="model.model", hint=hint
        ) from None
    except OSError as exc:
        raise UserError(
            f"cannot find the model {cfg.model.model!r}: {exc}".splitlines()[0],
            where="model.model",
            hint="offline? give a local model folder or the bundled default",
        ) from None


def check_optional_packages(cfg: RunConfig) -> None:
    """Options that need a package we do not depend on: say so now, not in train.log later."""
    import importlib.util

    from tunewiz.core import kernels

    kernels.for_run(cfg.model)  # flash_attention_2 / liger_kernel = true where they cannot run
    if cfg.training.report_to == "tensorboard" and not (
        importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
    ):
        raise UserError(
            "logging to TensorBoard needs the tensorboard package",
            where="training.report_to",
            hint="pip install 'tunewiz[tensorboard]', or set report_to = none",
        )


def check_data(cfg: RunConfig) -> None:
    """The data is readable and its format fits the task, judged on its first rows (fast).

    Every row is read and tokenized later, by the worker: a bad row found there
    fails the run with the same message (file, line, field) this would have printed.
    """
    import dataclasses

    from tunewiz.core import data

    files = [("data.data", cfg.data)]
    if cfg.data.validation_file:
        files.append(
            ("data.validation_file", dataclasses.replace(cfg.data, data=cfg.data.validation_file))
        )
    for _, dcfg in files:
        fmt, _, _ = data.detect(dcfg)
        data.check_task_reads(cfg.data.task, fmt)
    if (
        cfg.training.load_best_model_at_end
        and not cfg.data.validation_file
        and not cfg.data.validation_split
    ):
        raise UserError(
            "load_best_model_at_end needs validation rows",
            where="training.load_best_model_at_end",
            hint="set data.validation_split above 0 or give data.validation_file",
        )
