"""Where tunewiz keeps things on disk.

`TUNEWIZ_HOME` overrides everything (tests point it at a temporary folder).
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Root of tunewiz's own files: converted models, user profiles, wizard state."""
    env = os.environ.get("TUNEWIZ_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tunewiz"))


def models_cache_dir() -> Path:
    """Models converted once (the bundled GGUF becomes a Hugging Face folder here)."""
    return home() / "models"


def config_dir() -> Path:
    """User additions to the shipped profiles (own GPUs, prices) and wizard state."""
    env = os.environ.get("TUNEWIZ_HOME")
    if env:
        return Path(env).expanduser() / "config"
    from platformdirs import user_config_dir

    return Path(user_config_dir("tunewiz"))


def default_runs_dir() -> Path:
    """Runs live next to where the user works, like `./runs` in most trainers."""
    return Path(os.environ.get("TUNEWIZ_RUNS_DIR", "runs"))


def profiles_dir() -> Path:
    """The shipped data: GPUs, models, presets, the sample dataset."""
    return Path(__file__).resolve().parent.parent / "profiles"


def data_dir() -> Path:
    """Datasets tunewiz makes for the user where theirs cannot go (an augmented sample)."""
    return home() / "data"
