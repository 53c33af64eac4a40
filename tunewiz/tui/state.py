"""The wizard's state: every choice made so far, saved so that a closed wizard reopens where it was.

The state is the RunConfig being built plus the few choices that are not part
of a run's config (which screen was open, the GPU to estimate for, the preset).
It is written as JSON after every change; a broken or outdated file is set aside
(renamed, with a notice) rather than stopping the wizard from opening or being
reopened again and again.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

from tunewiz.core.config import RunConfig
from tunewiz.core.data.checks import DataFacts, data_warnings
from tunewiz.core.errors import UserError

log = logging.getLogger(__name__)

STATE_FILE = "wizard.json"
SCREENS = ("start", "task", "data", "model", "settings")

# Learns the bundled sample in ~2 minutes on a CPU, so the first run shows a visible change.
DEFAULT_PRESET = "sample-demo"


def default_config() -> RunConfig:
    """What a new user gets: the bundled model and sample with the sample-demo preset,
    which finishes on a laptop CPU in about two minutes and changes the model's answers."""
    from tunewiz.core.train.presets import load_preset

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
        # What the last scan found (rows, tokens, lengths), for the cost of renting and the
        # checks of data-dependent settings; the note says why token counts are approximate.
        self.data = DataFacts()
        self.data_tokens_note = ""
        self.estimate_only = False  # came from "Estimate a model before renting": no task/data
        self.selected_run = ""  # the run the start screen selects (the last one started)
        self.notice = ""  # said once when the wizard opens (a saved state set aside); not saved

    # -- the data scanned -------------------------------------------------------

    def set_data(self, facts: DataFacts, note: str = "") -> None:
        self.data, self.data_tokens_note = facts, note

    @property
    def data_tokens(self) -> int:
        return self.data.tokens

    @property
    def data_rows(self) -> int:
        return self.data.rows

    def data_warnings(self) -> list[str]:
        """What in the config does not suit the data scanned (validation split, length, steps)."""
        return data_warnings(self.cfg, self.data)

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
            "data_facts": self.data.to_dict(),
            "data_tokens_note": self.data_tokens_note,
            "estimate_only": self.estimate_only,
            "selected_run": self.selected_run,
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> WizardState:
        """The saved state; a file that cannot be used is renamed aside and a notice says so."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            return cls.from_json(raw, str(path))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, UserError) as exc:
            state = cls()
            state.notice = set_aside(path, exc)
            return state

    @classmethod
    def from_json(cls, raw: dict, where: str) -> WizardState:
        state = cls()
        cfg = default_config()
        cfg.update(raw.get("config") or {}, where=where)  # UserError: renamed options
        state.cfg = cfg
        screen = raw.get("screen", "start")
        state.screen = screen if screen in SCREENS else "start"
        state.gpu = str(raw.get("gpu") or "")
        state.preset = str(raw.get("preset") or DEFAULT_PRESET)
        state.catalog_filter = str(raw.get("catalog_filter") or "")
        state.data_tokens_note = str(raw.get("data_tokens_note") or "")
        state.estimate_only = raw.get("estimate_only") is True
        state.selected_run = str(raw.get("selected_run") or "")
        state.data = DataFacts.from_dict(raw.get("data_facts") or {})
        return state


def set_aside(path: Path, why: BaseException) -> str:
    """Rename an unusable state file so the next start is clean; the notice to show."""
    aside = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
    reason = why.message if isinstance(why, UserError) else str(why)
    log.warning("setting aside the unusable wizard state %s: %s", path, reason)
    try:
        path.replace(aside)
    except OSError:
        return f"The saved wizard state could not be read ({reason}); starting afresh."
    return f"The saved wizard state could not be read ({reason}); it was kept as {aside.name}."
