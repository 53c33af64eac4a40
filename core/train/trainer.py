"""A Trainer whose checkpoints are all-or-nothing, and helpers to find and trim what a run left."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

from transformers import Trainer

from core.train.collate import TOKENS_KEY

log = logging.getLogger(__name__)

COMPLETE_MARKER = "trainer_state.json"  # written last by Trainer._save_checkpoint


class RunTrainer(Trainer):
    def __init__(self, *args, fault: tuple[str, int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._fault = fault
        self.tokens_seen = 0  # real (non-padding) tokens trained on by this process

    def training_step(self, model, inputs, *args, **kwargs):
        self.tokens_seen += int(inputs.pop(TOKENS_KEY, 0))
        return super().training_step(model, inputs, *args, **kwargs)

    def prediction_step(self, model, inputs, *args, **kwargs):
        inputs.pop(TOKENS_KEY, None)
        return super().prediction_step(model, inputs, *args, **kwargs)

    def _save_checkpoint(self, model, trial):
        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        try:
            if (
                self._fault
                and self._fault[0] == "enospc"
                and self._fault[1] == self.state.global_step
            ):
                self._inject_enospc()
            super()._save_checkpoint(model, trial)
        except BaseException:
            # A half-written checkpoint must never be taken as the latest one (resume would load it).
            if self.args.should_save and folder.exists():
                log.error("saving %s failed: removing the partial checkpoint", folder.name)
                shutil.rmtree(folder, ignore_errors=True)
            raise

    def _inject_enospc(self) -> None:
        original = self._save_optimizer_and_scheduler

        def failing(output_dir):
            self._save_optimizer_and_scheduler = original
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), output_dir)

        self._save_optimizer_and_scheduler = failing


def checkpoints(run_dir: Path) -> list[Path]:
    """checkpoint-N folders, oldest first."""
    found = [
        p
        for p in Path(run_dir).glob("checkpoint-*")
        if p.is_dir() and p.name.split("-")[1].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that was written to the end (a kill mid-save leaves no trainer_state.json)."""
    for ckpt in reversed(checkpoints(run_dir)):
        if (ckpt / COMPLETE_MARKER).is_file():
            return ckpt
        log.warning("ignoring incomplete checkpoint %s", ckpt.name)
    return None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics logged after `step`: a resumed run logs those steps again."""
    if not path.is_file():
        return
    kept = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except json.JSONDecodeError:
                continue  # a line cut by a crash
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)
