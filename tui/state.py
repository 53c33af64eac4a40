"""The wizard's state: every choice made so far, saved so that a closed wizard reopens where it was.

The state is the RunConfig being built plus the few choices that are not part
of a run's config (which screen was open, the GPU to estimate for, the preset).
It is written as JSON after every change; a broken or outdated file is ignored
rather than stopping the wizard from opening.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from core.config import RunConfig
from core.errors import UserError

log = logging.getLogger(__name__)

STATE_FILE = "wizard.json"
SCREENS = ("start", "task", "data", "model", "settings")

# Learns the bundled sample in ~2 minutes on a CPU, so the first run shows a visible change.
DEFAULT_PRESET = "sample-demo"


def default_config() -> RunConfig:
    """What a new user gets: the bundled model and sample with the sample-demo preset,
    which finishes on a laptop CPU in about two minutes and changes the model's answers."""
    from core.train.presets import load_preset

    cfg = RunConfig()
    try:
        cfg.update(load_preset(DEFAULT_PRESET), where=f"preset {DEFAULT_PRESET}")
    except UserError as exc:  # a broken install must not stop the wizard from opening
        log.warning("wizard defaults without the %s preset: %s", DEFAULT_PRESET, exc)
    return cfg


class WizardState:
    """The RunConfig being built (kept as an object: rebuilding it from a dict costs
    milliseconds, and the estimate panel has 50 ms) plus the wizard's own choices."""

    def __init__(self) -> None:
        self.cfg = default_config()
        self.screen = "start"
        self.gpu = ""  # a catalog GPU name to estimate for; "" = the one found here (or CPU)
        self.preset = DEFAULT_PRESET
        self.catalog_filter = ""
        self.data_tokens = 0  # tokens in the scanned data, for the time and cost of renting

    # -- the config ---------------------------------------------------------

    @property
    def config(self) -> dict:
        """The config as a nested dict (a fresh copy: edit through set())."""
        return self.cfg.to_dict()

    def run_config(self) -> RunConfig:
        return copy.deepcopy(self.cfg)

    def set_config(self, cfg: RunConfig) -> None:
        self.cfg = copy.deepcopy(cfg)

    def set(self, dotted: str, value: Any) -> None:
        """Set one config option; a bad value raises UserError and changes nothing."""
        self.cfg.set(dotted, value)

    def get(self, dotted: str) -> Any:
        section, _, name = dotted.rpartition(".")
        return getattr(getattr(self.cfg, section), name) if section else getattr(self.cfg, name)

    # -- disk -----------------------------------------------------------------

    def to_json(self) -> dict:
        return {
            "screen": self.screen,
            "config": self.config,
            "gpu": self.gpu,
            "preset": self.preset,
            "catalog_filter": self.catalog_filter,
            "data_tokens": self.data_tokens,
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> WizardState:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable wizard state %s: %s", path, exc)
            return cls()
        state = cls()
        if not isinstance(raw, dict):
            return state
        try:
            cfg = default_config()
            cfg.update(raw.get("config") or {}, where=str(path))
            state.cfg = cfg
        except UserError as exc:  # an option renamed since: keep the defaults
            log.warning("ignoring outdated wizard config in %s: %s", path, exc)
        screen = raw.get("screen", "start")
        state.screen = screen if screen in SCREENS else "start"
        state.gpu = str(raw.get("gpu") or "")
        state.preset = str(raw.get("preset") or DEFAULT_PRESET)
        state.catalog_filter = str(raw.get("catalog_filter") or "")
        try:
            state.data_tokens = max(0, int(raw.get("data_tokens") or 0))
        except (TypeError, ValueError):
            state.data_tokens = 0
        return state
