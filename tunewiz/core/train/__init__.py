"""Training: detached runs (full, freeze, LoRA, QLoRA; SFT or preference) writing into their run dir.

    from tunewiz.core.train import launch, resume
    run_dir = launch(cfg)            # checks, creates runs/<name>/, starts the worker, returns at once
    resume(run_dir)                  # continues from the last complete checkpoint

Reading runs (state, metrics, logs, stop) is `tunewiz.core.runs`, which needs no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunewiz.core.config import RunConfig


def launch(cfg: RunConfig, *, foreground: bool = False) -> Path:
    from tunewiz.core.train.launcher import launch as _launch

    return _launch(cfg, foreground=foreground)


def resume(run_dir: str | Path, *, foreground: bool = False) -> Path:
    from tunewiz.core.train.launcher import resume as _resume

    return _resume(run_dir, foreground=foreground)


__all__ = ["launch", "resume"]
