"""What an evaluation will do, checked before any model is loaded.

Every mistake the user can make (a checkpoint that does not exist, a bad prompts
file, a run without validation rows, an unknown benchmark, lm-eval missing)
is found here, in seconds, and not after minutes of loading models.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tunewiz.core.errors import UserError
from tunewiz.core.eval.prompts import EvalItem, load_prompts

if TYPE_CHECKING:
    from tunewiz.core.eval.bench import PreparedTasks


@dataclass
class EvalRequest:
    """One evaluation; each field is a `tunewiz eval` option (help text in cli/eval.py)."""

    target: str
    checkpoints: list[str] = field(default_factory=list)  # [] = final (else last); ["all"]
    prompts: str | None = None
    heldout: bool = True
    train_sample: int = 16
    temperatures: list[float] = field(default_factory=lambda: [0.0])
    samples: int = 1
    max_new_tokens: int = 64
    batch_size: int = 16
    bench: list[str] = field(default_factory=list)
    limit: int | None = None
    base: bool = True
    runs_dir: str = "runs"
    device: str | None = None
    trust_remote_code: bool = False
    seed: int = 0
    out: str | None = None


@dataclass
class Plan:
    request: EvalRequest
    run_dir: Path | None
    models: list[str]  # "base", checkpoint names, or "model" for a plain model
    eval_losses: dict[str, float | None]
    steps: dict[str, int | None]
    file_items: list[EvalItem] | None
    bench: PreparedTasks | None
    out_dir: Path


def check_request(req: EvalRequest) -> None:
    if req.max_new_tokens < 1:
        raise UserError("must be at least 1", where="--max-new-tokens")
    if req.samples < 1:
        raise UserError("must be at least 1", where="--samples")
    if any(t < 0 for t in req.temperatures) or not req.temperatures:
        raise UserError(
            "temperatures are 0 (greedy) or more, e.g. 0,0.5,1.0", where="--temperature"
        )
    if req.limit is not None and req.limit < 1:
        raise UserError("must be at least 1", where="--limit")
    if req.train_sample < 0:
        raise UserError("must be 0 or more", where="--train-sample")


def _checkpoints(run_dir: Path, wanted: list[str]) -> list:
    from tunewiz.core.checkpoints import list_checkpoints, resolve_checkpoint

    if wanted == ["all"]:
        found = list_checkpoints(run_dir)
        if not found:
            raise UserError("this run has saved no checkpoint yet", where=str(run_dir))
        return found
    # None: resolve_checkpoint's default (final, else the last); raises, listing what exists
    names: list[str | None] = list(wanted) or [None]
    picked = [resolve_checkpoint(run_dir, w) for w in names]
    return list({c.name: c for c in picked}.values())


def _check_trust(run_dir: Path, req: EvalRequest) -> None:
    """Refused up front, before minutes of loading, where chat and export would load the model
    without its code (`tunewiz.core.models.untrusted_code` is the rule for both)."""
    from tunewiz.core.config import load_run_config
    from tunewiz.core.models import TRUST_FLAG, untrusted_code

    cfg = load_run_config(run_dir)
    if untrusted_code(cfg, req.trust_remote_code):
        raise UserError(
            "this run's model runs its own Python code (trust_remote_code in its config.toml)",
            where=str(run_dir / "config.toml"),
            hint=f"pass {TRUST_FLAG} if you trust where this run and its model came from",
        )


def _run_plan(req: EvalRequest, run_dir: Path) -> tuple[list[str], dict, dict]:
    _check_trust(run_dir, req)
    chosen = _checkpoints(run_dir, req.checkpoints)
    if not req.prompts and req.heldout and not (run_dir / "data" / "eval.jsonl").is_file():
        raise UserError(
            "this run has no validation rows to evaluate on",
            where=str(run_dir),
            hint="pass --prompts FILE, or train with data.validation_split (e.g. 0.1) or "
            "data.validation_file",
        )
    models = (["base"] if req.base else []) + [c.name for c in chosen]
    losses = {c.name: c.eval_loss for c in chosen}
    steps = {c.name: c.step for c in chosen}
    return models, losses, steps


def make_plan(req: EvalRequest) -> Plan:
    """Check everything that can be checked without a model; UserError on the first problem."""
    from tunewiz.core.models import find_run

    check_request(req)
    if req.bench and not req.prompts:  # benchmarks alone, as asked: no generation eval
        req = dataclasses.replace(req, heldout=False, train_sample=0)
    run_dir = find_run(req.target, req.runs_dir)
    if run_dir is not None:
        models, losses, steps = _run_plan(req, run_dir)
    else:
        if req.checkpoints:
            raise UserError(
                f"{req.target!r} is not a run, so it has no checkpoints", where="--checkpoints"
            )
        if not req.prompts and not req.bench:
            raise UserError(
                "a model without a run needs --prompts FILE (or --bench)", where=req.target
            )
        models, losses, steps = ["model"], {}, {}
    items = load_prompts(req.prompts) if req.prompts else None
    bench = None
    if req.bench:
        from tunewiz.core.eval.bench import prepare_tasks

        bench = prepare_tasks(req.bench)
    return Plan(req, run_dir, models, losses, steps, items, bench, _out_dir(req, run_dir))


def _out_dir(req: EvalRequest, run_dir: Path | None) -> Path:
    if req.out:
        return Path(req.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = run_dir / "eval" if run_dir is not None else Path(req.runs_dir) / "eval"
    out = root / stamp
    n = 2
    while out.exists():
        out, n = root / f"{stamp}-{n}", n + 1
    return out
