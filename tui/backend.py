"""The one place where the wizard calls `core/`.

Screens call these plain functions (from workers when they may take time), so
that a change in a core signature is fixed here once. Everything is imported
inside the functions: the first frame must not wait for any of it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import RunConfig

log = logging.getLogger(__name__)

PRESETS = ("sample-demo", "quick-test", "standard", "thorough")
PRESET_LABELS = {
    "sample-demo": "Sample demo",
    "quick-test": "Quick test",
    "standard": "Standard",
    "thorough": "Thorough",
}
CPU = "no GPU (CPU)"


# -- runs -----------------------------------------------------------------------


def list_runs(runs_dir: Path) -> list:
    from core.runs import list_runs as _list

    return _list(runs_dir)


def launch(cfg: RunConfig) -> Path:
    """Start training in its own detached process; returns the run directory."""
    from core.train import launch as _launch

    return Path(_launch(cfg))


def load_preset(name: str) -> dict:
    """A preset's overrides as a nested dict ({section: {field: value}})."""
    from core.train.presets import load_preset as _load

    return _load(name)


def apply_preset(cfg: RunConfig, name: str) -> RunConfig:
    """The config with a preset applied: training options start again from the defaults
    (so nothing of the previous preset lingers); model and data choices are kept."""
    from core.config import TrainingConfig

    out = RunConfig.from_dict(cfg.to_dict(), where="wizard")
    out.training = TrainingConfig()
    out.update(load_preset(name), where=f"preset {name}")
    return out


# -- data -----------------------------------------------------------------------


def task_help() -> dict[str, str]:
    try:
        from core.data import TASK_HELP

        return dict(TASK_HELP)
    except ImportError:
        # The config's help line reads "instruction: ...; chat: ...; text: ...".
        from core.config import section_fields

        help_line = next(f for f in section_fields("data") if f.name == "task").metadata["help"]
        parts = (p.split(":", 1) for p in help_line.rstrip(".").split("; "))
        return {k.strip(): v.strip() for k, v in parts}


def task_formats() -> dict[str, tuple]:
    from core.data import TASK_FORMATS

    return dict(TASK_FORMATS)


def needs_bundled_conversion(model: str) -> bool:
    """True when `model` is the bundled default and its GGUF has not been converted yet."""
    from core import bundled

    return bundled.is_default(model) and not bundled.is_converted()


def load_tokenizer(model: str):
    """The model's tokenizer (imports transformers: call from a worker)."""
    from core.models import load_tokenizer as _load

    return _load(model)


class Cancelled(Exception):
    """Stands in for core.data.DataCancelled until core.data is imported."""


def inspect_data(cfg: RunConfig, tokenizer, cancel: threading.Event, progress=None):
    from core.data import DataCancelled
    from core.data import inspect_data as _inspect

    try:
        return _inspect(
            cfg.data, tokenizer, cancel=cancel, progress=progress, objective=cfg.training.objective
        )
    except DataCancelled:
        raise Cancelled() from None


def masking_preview(example: Any, tokenizer, cfg: RunConfig) -> list[tuple[str, bool]]:
    from core.data import masking_preview as _mask

    return _mask(example, tokenizer)


# -- models, GPUs, estimates -------------------------------------------------------


def catalog_models() -> list:
    from core.profiles import catalog_models as _models

    return list(_models())


def catalog_gpus() -> list:
    from core.profiles import load_gpus

    return list(load_gpus())


@dataclass
class LocalGpu:
    name: str
    memory_gib: float


def detect_gpus() -> list[LocalGpu]:
    """The GPUs on this machine through NVML (no torch); [] when there are none."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver, no GPU: the common laptop case
        return []
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
            out.append(LocalGpu(name, mem))
        return out
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def load_arch(model: str):
    from core.profiles import load_model_arch

    return load_model_arch(model)


def estimate_for(arch, cfg: RunConfig, device: str):
    """(Estimate, EstimateRequest) for the config on a device ("cpu" or a GPU name)."""
    from core.estimate import estimate, request_from_run_config

    req = request_from_run_config(cfg, device=device)
    return estimate(arch, req), req


def recommend(arch, req, gpu_mem_gib: float):
    from core.estimate import recommend as _rec

    return _rec(arch, req, gpu_mem_gib)


def rent_table(arch, req, tokens: int) -> list:
    from core.estimate import rent_table as _rent

    return list(_rent(arch, req, tokens))
