"""Finding complete checkpoints and trimming metrics for a resume (light: no torch)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

COMPLETE_MARKER = "trainer_state.json"  # written last by Trainer._save_checkpoint


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


def trainer_state(ckpt: Path) -> dict:
    """A checkpoint's trainer_state.json ({} when missing or unreadable)."""
    try:
        state = json.loads((Path(ckpt) / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def final_complete(final: Path) -> bool:
    """final/ written to the end: weights, then the tokenizer (saved last by the worker)."""
    final = Path(final)
    weights = any(final.glob("*.safetensors")) or any(
        final.glob("*model*.bin")
    )  # not training_args.bin
    return weights and (final / "tokenizer_config.json").is_file()


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
