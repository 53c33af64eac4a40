"""Evaluation: is the fine-tune better than the base, where does it fail, which checkpoint to keep.

    result = evaluate(EvalRequest("my-run", checkpoints=["all"]), progress=..., cancel=...)
    result.summary["verdict"], result.rows, result.out_dir   # summary.json, rows.jsonl, report.md

Headless (no textual); torch, transformers and lm-eval are imported only inside the
functions that need them.
"""

from __future__ import annotations

from tunewiz.core.eval.generate import EvalCancelled, Generation, generate_batched
from tunewiz.core.eval.plan import EvalRequest, Plan, make_plan
from tunewiz.core.eval.report import latest_eval, load_eval, set_tag
from tunewiz.core.eval.run import evaluate
from tunewiz.core.eval.summary import EvalResult

__all__ = [
    "EvalCancelled",
    "EvalRequest",
    "EvalResult",
    "Generation",
    "Plan",
    "evaluate",
    "generate_batched",
    "latest_eval",
    "load_eval",
    "make_plan",
    "set_tag",
]
