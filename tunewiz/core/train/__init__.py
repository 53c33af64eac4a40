"""Training: detached runs (full / LoRA / QLoRA) that write everything into their run directory.

    from tunewiz.core.train import launch, resume
    run_dir = launch(cfg)            # validates, creates runs/<name>/, starts the worker, returns at once
    resume(run_dir)                  # continues from the last complete checkpoint

Reading runs (state, metrics, logs, stop) is `tunewiz.core.runs`, which needs no torch.
"""

from __future__ import annotations

from pathlib import Path


def launch(cfg, *, foreground: bool = False) -> Path:
    from tunewiz.core.train.launcher import launch as _launch

    return _launch(cfg, foreground=foreground)


def resume(run_dir, *, foreground: bool = False) -> Path:
    from tunewiz.core.train.launcher import resume as _resume

    return _resume(run_dir, foreground=foreground)


__all__ = ["launch", "resume"]
