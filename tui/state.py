"""The wizard's state: every choice made so far, saved so that a closed wizard reopens where it was.

The state is the RunConfig being built plus the few choices that are not part
of a run's config (which screen was open, the GPU to estimate for, the preset).
It is written as JSON after every change; a broken or outdated file is ignored
rather than stopping the wizard from opening.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.config import RunConfig
from core.errors import UserError

log = logging.getLogger(__name__)

STATE_FILE = "wizard.json"
SCREENS = ("start", "task", "data", "model", "settings")

DEFAULT_PRESET = "quick-test"


def default_config() -> RunConfig:
    """What a new user gets: the bundled model and sample with the quick-test preset,
    which finishes on a laptop CPU in a few minutes."""
    from core.train.presets import load_preset

    cfg = RunConfig()
    try:
        cfg.update(load_preset(DEFAULT_PRESET), where=f"preset {DEFAULT_PRESET}")
    except UserError as exc:  # a broken install must not stop the wizard from opening
        log.warning("wizard defaults without the %s preset: %s", DEFAULT_PRESET, exc)
    return cfg


@dataclass
class WizardState:
    screen: str = "start"
    config: dict = field(default_factory=lambda: default_config().to_dict())
    gpu: str = ""  # a catalog GPU name to estimate for; "" = the one found here (or CPU)
    preset: str = DEFAULT_PRESET
    catalog_filter: str = ""
    data_tokens: int = 0  # tokens in the scanned data, for the time and cost of renting

    # -- the config ---------------------------------------------------------

    def run_config(self) -> RunConfig:
        return RunConfig.from_dict(self.config, where="wizard state")

    def set_config(self, cfg: RunConfig) -> None:
        self.config = cfg.to_dict()

    def set(self, dotted: str, value: Any) -> None:
        """Set one config option (raises UserError for a bad value, leaving the state unchanged)."""
        cfg = self.run_config()
        cfg.set(dotted, value)
        self.config = cfg.to_dict()

    def get(self, dotted: str) -> Any:
        section, _, name = dotted.rpartition(".")
        return self.config[section][name] if section else self.config[name]

    # -- disk -----------------------------------------------------------------

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
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
        try:
            cfg = default_config()
            cfg.update(raw.get("config") or {}, where=str(path))
            state.config = cfg.to_dict()
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
