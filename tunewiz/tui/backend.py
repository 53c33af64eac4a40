"""The screens' calls into `core/` that take time or import heavy libraries.

The rule: a call that may take time (a hub look-up, NVML, a tokenizer, a data
scan, an estimate, starting a run, an evaluation, a chat model) or that imports
torch, transformers or datasets goes through a plain function here, called from
a worker, with its core import inside the function so that the first frame
waits for none of it; tests replace these functions to script the slow part.
Light, quick reads (config, errors, text, run folders and their checkpoints,
data checks, eval reports, task and preset tables) are imported from core
directly where they are used. The wizard's presets are here too (PRESETS,
`apply_preset`): they are the settings screen's table, not a core concept.
"""

from __future__ import annotations

import copy
import logging
import threading
from pathlib import Path
from typing import Any

from tunewiz.core.config import RunConfig
from tunewiz.core.nvml import LocalGpu, local_gpus

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


def launch(cfg: RunConfig) -> Path:
    """Start training in its own detached process; returns the run directory."""
    from tunewiz.core.train import launch as _launch

    return Path(_launch(cfg))


def load_preset(name: str) -> dict:
    """A preset's overrides as a nested dict ({section: {field: value}})."""
    from tunewiz.core.train.presets import load_preset as _load

    return _load(name)


def apply_preset(cfg: RunConfig, name: str) -> RunConfig:
    """The config with a preset applied: training options start again from the defaults
    (so nothing of the previous preset lingers); model and data choices are kept."""
    from tunewiz.core.config import TrainingConfig

    # A draft, as the wizard's is (it may not be whole yet): copied, not made anew and checked.
    out = copy.deepcopy(cfg)
    out.training = TrainingConfig()
    out.update(load_preset(name), where=f"preset {name}")
    return out


# -- data -----------------------------------------------------------------------


def needs_bundled_conversion(model: str) -> bool:
    """True when `model` is the bundled default and its GGUF has not been converted yet."""
    from tunewiz.core import bundled

    return bundled.is_default(model) and not bundled.is_converted()


# Scans, masking previews and counts run in threads; two first imports of transformers
# at once end in ImportError, so loading tokenizers goes one at a time.
_TOKENIZER_LOCK = threading.Lock()


def load_tokenizer(model: str):
    """The model's tokenizer (imports transformers: call from a worker)."""
    from tunewiz.core.loading import load_tokenizer as _load

    with _TOKENIZER_LOCK:
        return _load(model)


def counting_tokenizer(model: str):
    """(tokenizer, note): the model's own tokenizer, or the bundled one with a note saying the
    counts are approximate (offline, or a hub model never downloaded). Call from a worker."""
    from tunewiz.core.loading import counting_tokenizer as _counting

    with _TOKENIZER_LOCK:
        return _counting(model)


def inspect_data(cfg: RunConfig, tokenizer, cancel: threading.Event, progress=None):
    """Scan the data (call from a worker); raises tunewiz.core.data.DataCancelled when cancelled."""
    from tunewiz.core.data import inspect_data as _inspect

    return _inspect(
        cfg.data, tokenizer, cancel=cancel, progress=progress, objective=cfg.training.objective
    )


def row_view(cfg: RunConfig, number: int, tokenizer):
    """Row `number` (1-based) as the user wrote it, tokenized for the masking preview."""
    from tunewiz.core.data import row_view as _row

    return _row(cfg.data, number, tokenizer)


def masking_preview(example: Any, tokenizer, cfg: RunConfig) -> list[tuple[str, bool]]:
    from tunewiz.core.data import masking_preview as _mask

    return _mask(example, tokenizer)


# -- models, GPUs, estimates -------------------------------------------------------


def catalog_models() -> list:
    from tunewiz.core.profiles import catalog_models as _models

    return list(_models())


def catalog_gpus() -> list:
    from tunewiz.core.profiles import load_gpus

    return list(load_gpus())


def detect_gpus() -> list[LocalGpu]:
    """The GPUs on this machine through NVML (no torch); [] when there are none."""
    return local_gpus()


def load_arch(model: str):
    from tunewiz.core.profiles import load_model_arch

    return load_model_arch(model)


def estimate_for(arch, cfg: RunConfig, device: str):
    """(Estimate, EstimateRequest) for the config on a device ("cpu" or a GPU name)."""
    from tunewiz.core.estimate import estimate, request_from_run_config

    req = request_from_run_config(cfg, device=device)
    return estimate(arch, req), req


def recommend(arch, req, gpu_mem_gib: float):
    from tunewiz.core.estimate import recommend as _rec

    return _rec(arch, req, gpu_mem_gib)


def rent_table(arch, req, tokens: int) -> list:
    from tunewiz.core.estimate import rent_table as _rent

    return list(_rent(arch, req, tokens))


# -- evaluation -------------------------------------------------------------------


def eval_request(target: str, runs_dir: Path, **fields: Any):
    from tunewiz.core.eval import EvalRequest

    return EvalRequest(target, runs_dir=str(runs_dir), **fields)


def evaluate(req, progress, cancel: threading.Event):
    """Run an evaluation (call from a worker); raises tunewiz.core.eval.EvalCancelled when cancelled."""
    from tunewiz.core.eval import evaluate as _evaluate

    return _evaluate(req, progress=progress, cancel=cancel)


def latest_eval(run_dir: Path):
    """The newest saved evaluation of a run, or None."""
    from tunewiz.core.eval import latest_eval as _latest
    from tunewiz.core.eval import load_eval

    folder = _latest(Path(run_dir) / "eval")
    return load_eval(folder) if folder is not None else None


def set_tag(folder: Path, row_id: int, tag: str, on: bool = True):
    from tunewiz.core.eval import set_tag as _set

    return _set(folder, row_id, tag, on=on)


# -- chat -------------------------------------------------------------------------


def load_for_chat(target: str, checkpoint: str | None, runs_dir: Path):
    """A model and tokenizer to chat with (loads torch and the weights: call from a worker)."""
    from tunewiz.core.loading import load_for_chat as _load

    return _load(target, checkpoint, runs_dir=runs_dir)


def chat_session(loaded, *, system: str | None, settings):
    """A conversation with a loaded model (tunewiz.core.chat.ChatSession)."""
    from tunewiz.core.chat import ChatSession

    return ChatSession(loaded, system=system, settings=settings)


# -- augmenting data (the data screen's Augment… review) ---------------------------


def check_augmentable(cfg: RunConfig) -> None:
    """UserError when the run's data has no questions to rephrase (reads a few rows)."""
    from tunewiz.core.data.augment import check_augmentable as _check

    _check(cfg.data)


def augment_generator(model: str):
    """generate(prompts, temperature) with `model` (loads it: call from a worker)."""
    from tunewiz.core.data.augment import model_generator

    with _TOKENIZER_LOCK:  # the model's tokenizer loads too: one first import at a time
        return model_generator(model)


def augment_preview(
    cfg: RunConfig,
    generate,
    *,
    rows: int,
    variants: int,
    temperatures: tuple[float, ...],
    reverse: bool,
    batch_size: int,
    progress,
    cancel: threading.Event,
):
    """The first `rows` rows of the run's data with their variants (nothing written);
    raises DataCancelled (core's AugmentCancelled) when `cancel` is set."""
    from tunewiz.core.data.augment import preview

    return preview(
        cfg.data, generate, rows=rows, variants=variants, temperatures=temperatures,
        reverse=reverse, batch_size=batch_size, progress=progress, cancel=cancel,
    )  # fmt: skip


def write_augmented(cfg: RunConfig, chosen: list):
    """The run's data and the `chosen` variants written to a new file (a core `Written`)."""
    from tunewiz.core import paths
    from tunewiz.core.data.augment import augmented_path, write_augmented

    out = augmented_path(cfg.data.data, paths.data_dir())
    return write_augmented(cfg.data, chosen, out)


def made_from_sample(data: str) -> bool:
    """True when `data` is the sample with variants added by the wizard."""
    from tunewiz.core import paths
    from tunewiz.core.data.augment import made_from_sample as _made

    return _made(data, paths.data_dir())
