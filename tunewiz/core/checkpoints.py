"""A run's checkpoints: which are complete, what they hold, and which one the user means.

The one rule of a complete checkpoint lives here, and everything that picks a
checkpoint uses it: resume (`resume_checkpoint`: complete, and its trainer state
readable), chat, eval and export
(`list_checkpoints`, `resolve_checkpoint`), the live panel and a run whose
status.json was lost (`final_complete`).

Everything comes from files the Hugging Face Trainer already writes
(`checkpoint-N/trainer_state.json`, whose `log_history` holds every logged loss
up to that step) plus the run's `metrics.jsonl` for `final/`, which has no
trainer state of its own. No torch here: the wizard lists checkpoints instantly.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewiz.core.errors import UserError
from tunewiz.core.runs import clean_metrics_row, count, finite, read_json_object, read_metrics

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-([0-9]+)$")  # [0-9]: int() must read what matched
TAGS = ("best", "last", "final")

MODEL_CONFIGS = ("adapter_config.json", "config.json")  # a PEFT adapter, or a full model
# Weight files of save_pretrained: model.safetensors, model-00001-of-00002.safetensors,
# adapter_model.safetensors, or pytorch_model.bin / adapter_model.bin (not training_args.bin).
WEIGHT_PATTERNS = ("*.safetensors", "*model*.bin")
TRAINER_STATE = "trainer_state.json"  # the last file Trainer._save_checkpoint writes
TOKENIZER_CONFIG = "tokenizer_config.json"  # the last file the worker writes into final/


# -- complete or not: the one rule ------------------------------------------------


def has_weights(folder: Path) -> bool:
    """A model or adapter config next to weight files: what loading the folder needs."""
    return any((folder / name).is_file() for name in MODEL_CONFIGS) and any(
        p.is_file() for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern)
    )


def checkpoint_complete(path: Path) -> bool:
    """checkpoint-N was written to the end: weights, and trainer_state.json, which the Trainer
    writes last (a kill or a full disk mid-save leaves none).

    Its content is not judged: a damaged trainer_state.json is a complete checkpoint whose
    losses are unknown (listed without them), as the weights beside it are whole.
    """
    path = Path(path)
    return path.is_dir() and has_weights(path) and (path / TRAINER_STATE).is_file()


def final_complete(final: Path) -> bool:
    """final/ was written to the end: weights, then the tokenizer (saved last by the worker)."""
    final = Path(final)
    return final.is_dir() and has_weights(final) and (final / TOKENIZER_CONFIG).is_file()


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The run's checkpoint-N folders, complete or not, oldest first."""
    found = [
        (int(match.group(1)), path)
        for path in Path(run_dir).glob("checkpoint-*")
        if (match := CHECKPOINT_RE.match(path.name)) and path.is_dir()
    ]
    return [path for _step, path in sorted(found)]


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (what a resume starts from), None when there is none."""
    for path in reversed(checkpoint_dirs(run_dir)):
        if checkpoint_complete(path):
            return path
        log.warning("ignoring incomplete checkpoint %s", path.name)
    return None


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a resume continues from: the newest complete one whose trainer_state.json
    reads. The Trainer restores the step, scheduler and RNG from that file, so a damaged one
    would crash the resumed run; it is passed over (logged) for the one before. Chat and eval
    may still load its weights: for them the file only carries the losses."""
    for path in reversed(checkpoint_dirs(run_dir)):
        if not checkpoint_complete(path):
            log.warning("ignoring incomplete checkpoint %s", path.name)
            continue
        _, problem = read_json_object(path / TRAINER_STATE)
        if not problem:
            return path
        log.warning("not resuming from %s: its %s is %s", path.name, TRAINER_STATE, problem)
    return None


def trainer_state(path: Path) -> dict[str, Any]:
    """A checkpoint's trainer_state.json, {} when missing or damaged (the damage is logged)."""
    state, problem = read_json_object(Path(path) / TRAINER_STATE)
    if problem and problem != "missing":
        log.warning("%s/%s: %s", path, TRAINER_STATE, problem)
    return state


@dataclass
class Checkpoint:
    name: str  # "checkpoint-120" or "final"
    path: Path
    step: int | None = None
    epoch: float | None = None
    train_loss: float | None = None
    eval_loss: float | None = None
    tags: set[str] = field(default_factory=set)

    @property
    def is_adapter(self) -> bool:
        """A PEFT adapter (LoRA/QLoRA) rather than a full model."""
        return (self.path / "adapter_config.json").is_file()

    def describe(self) -> str:
        """One line for listings: `checkpoint-40  step 40  epoch 2.00  loss 0.812  eval 0.901  [best]`."""
        parts = [self.name]
        if self.step is not None:
            parts.append(f"step {self.step}")
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch:.2f}")
        if self.train_loss is not None:
            parts.append(f"loss {self.train_loss:.4f}")
        if self.eval_loss is not None:
            parts.append(f"eval {self.eval_loss:.4f}")
        tags = [t for t in TAGS if t in self.tags]
        if tags:
            parts.append("[" + ",".join(tags) + "]")
        return "  ".join(parts)


def _state_and_history(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A checkpoint's trainer_state.json and its log history with only finite numbers;
    a damaged file reads as empty (the checkpoint is still listed, without losses)."""
    state = trainer_state(path)
    history = state.get("log_history")
    rows = [clean_metrics_row(r) for r in history] if isinstance(history, list) else []
    return state, [r for r in rows if r is not None]


def _losses_at(
    history: list[dict[str, Any]], step: int | None
) -> tuple[float | None, float | None, float | None]:
    """(epoch, train loss, eval loss) as last logged at or before `step` (None = the end).
    `history` rows come through `clean_metrics_row`: every number in them is finite."""
    epoch = train = evaluation = None
    for row in history:
        row_step = finite(row.get("step"))
        if step is not None and row_step is not None and row_step > step:
            continue
        epoch = _first_number(row.get("epoch"), epoch)
        if finite(row.get("loss")) is not None:
            train = finite(row["loss"])
        elif train is None:
            train = finite(row.get("train_loss"))  # the Trainer's end-of-run average
        evaluation = _first_number(row.get("eval_loss"), evaluation)
    return epoch, train, evaluation


def _first_number(value: object, default: float | None) -> float | None:
    number = finite(value)
    return default if number is None else number


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """The run's checkpoints in step order, `final` last, each tagged best/last/final."""
    run_dir = Path(run_dir)
    found: list[Checkpoint] = []
    best_name: str | None = None
    latest_state_step = -1
    for path in checkpoint_dirs(run_dir):
        if not checkpoint_complete(path):
            continue  # being written, or cut off by a kill: not offered (resume skips it too)
        step = int(path.name.split("-")[1])
        state, history = _state_and_history(path)
        epoch, train, evaluation = _losses_at(history, step)
        epoch = _first_number(state.get("epoch"), epoch)
        found.append(Checkpoint(path.name, path, step, epoch, train, evaluation))
        # The newest trainer state knows the best checkpoint over the whole run.
        best = state.get("best_model_checkpoint")
        if isinstance(best, str) and best and step > latest_state_step:
            latest_state_step = step
            best_name = Path(best).name

    final = run_dir / "final"
    if final_complete(final):
        metrics = read_metrics(run_dir)
        steps = [r["step"] for r in metrics if "step" in r]  # clean rows: a whole number
        epoch, train, evaluation = _losses_at(metrics, None)
        state, history = _state_and_history(final)
        if history:
            epoch, train, evaluation = _losses_at(history, None)
        final_step = int(max(steps)) if steps else count(state.get("global_step"))
        if final_step is None and found:
            final_step = found[-1].step
        found.append(Checkpoint("final", final, final_step, epoch, train, evaluation, {"final"}))

    numbered = [c for c in found if c.name != "final"]
    if numbered:
        numbered[-1].tags.add("last")
        names = {c.name for c in numbered}
        if best_name not in names:
            # No recorded best (load_best_model_at_end off): the lowest eval loss is the best.
            scored = [c for c in numbered if c.eval_loss is not None]
            best_name = min(scored, key=lambda c: c.eval_loss or 0.0).name if scored else None
        for c in numbered:
            if c.name == best_name:
                c.tags.add("best")
    return found


def resolve_checkpoint(run_dir: str | Path, which: str | None = None) -> Checkpoint:
    """The checkpoint named `best`, `last`, `final`, `N` or `checkpoint-N`; with no name, the
    default of chat, eval and export: `final` when the run has one, else the last saved."""
    run_dir = Path(run_dir)
    checkpoints = list_checkpoints(run_dir)
    if not which:
        which = "final" if any("final" in c.tags for c in checkpoints) else "last"
    which = str(which).strip()
    if which in TAGS:
        match = [c for c in checkpoints if which in c.tags]
    else:
        name = f"checkpoint-{which}" if which.isdigit() else which
        match = [c for c in checkpoints if c.name == name]
    if match:
        return match[-1]
    available = ", ".join(
        c.name + ("" if not c.tags else f" ({','.join(sorted(c.tags))})") for c in checkpoints
    )
    raise UserError(
        f"run has no checkpoint {which!r}",
        where=str(run_dir),
        hint=f"available: {available}" if available else "the run has saved no checkpoint yet",
    )
