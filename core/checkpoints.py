"""A run's checkpoints: what exists on disk, with its losses, and which one the user means.

Everything comes from files the Hugging Face Trainer already writes
(`checkpoint-N/trainer_state.json`, whose `log_history` holds every logged loss
up to that step) plus the run's `metrics.jsonl` for `final/`, which has no
trainer state of its own. No torch here: the wizard lists checkpoints instantly.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TAGS = ("best", "last", "final")


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


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_metrics(run_dir: Path) -> list[dict]:
    """Rows of metrics.jsonl; a half-written last line (training still running) is skipped."""
    rows: list[dict] = []
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _losses_at(
    history: list[dict], step: int | None
) -> tuple[float | None, float | None, float | None]:
    """(epoch, train loss, eval loss) as last logged at or before `step` (None = the end)."""
    epoch = train = evaluation = None
    for row in history:
        row_step = row.get("step")
        if step is not None and isinstance(row_step, (int, float)) and row_step > step:
            continue
        if isinstance(row.get("epoch"), (int, float)):
            epoch = float(row["epoch"])
        if isinstance(row.get("loss"), (int, float)):
            train = float(row["loss"])
        elif isinstance(row.get("train_loss"), (int, float)) and train is None:
            train = float(row["train_loss"])  # the Trainer's end-of-run average
        if isinstance(row.get("eval_loss"), (int, float)):
            evaluation = float(row["eval_loss"])
    return epoch, train, evaluation


def _is_model_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() or (path / "config.json").is_file()


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """The run's checkpoints in step order, `final` last, each tagged best/last/final."""
    run_dir = Path(run_dir)
    found: list[Checkpoint] = []
    best_name: str | None = None
    latest_state_step = -1
    for path in run_dir.glob("checkpoint-*"):
        match = CHECKPOINT_RE.match(path.name)
        if not match or not path.is_dir() or not _is_model_dir(path):
            continue  # a checkpoint still being written has no config yet
        step = int(match.group(1))
        state = _read_json(path / "trainer_state.json") or {}
        history = state.get("log_history") or []
        epoch, train, evaluation = _losses_at(history, step)
        if isinstance(state.get("epoch"), (int, float)):
            epoch = float(state["epoch"])
        found.append(Checkpoint(path.name, path, step, epoch, train, evaluation))
        # The newest trainer state knows the best checkpoint over the whole run.
        if state.get("best_model_checkpoint") and step > latest_state_step:
            latest_state_step = step
            best_name = Path(str(state["best_model_checkpoint"])).name
    found.sort(key=lambda c: c.step or 0)

    final = run_dir / "final"
    if final.is_dir() and _is_model_dir(final):
        metrics = _read_metrics(run_dir)
        steps = [r["step"] for r in metrics if isinstance(r.get("step"), (int, float))]
        epoch, train, evaluation = _losses_at(metrics, None)
        state = _read_json(final / "trainer_state.json") or {}
        if state.get("log_history"):
            epoch, train, evaluation = _losses_at(state["log_history"], None)
        final_step = int(max(steps)) if steps else state.get("global_step")
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


def resolve_checkpoint(run_dir: str | Path, which: str = "final") -> Checkpoint:
    """The checkpoint named `best`, `last`, `final`, `N` or `checkpoint-N`."""
    run_dir = Path(run_dir)
    which = str(which).strip()
    checkpoints = list_checkpoints(run_dir)
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
