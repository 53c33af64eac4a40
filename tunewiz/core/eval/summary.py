"""Turn generations into scored rows and a summary (plain dicts: what the files hold).

A row: {id, split, where, prompt, reference, outputs: [{model, temperature, sample,
text, tokens, stopped, metrics, categories}], tags}. The summary holds the totals per
model and split, category counts, the overfitting verdict, the per-checkpoint table
with the recommendation, and benchmark scores with deltas against the base.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tunewiz.core.eval.analysis import (
    CheckpointScore,
    categorise,
    is_right,
    overfitting_verdict,
    recommend,
)
from tunewiz.core.eval.metrics import RowScores, score_row, totals
from tunewiz.core.eval.run import Outputs


@dataclass
class EvalResult:
    summary: dict
    rows: list[dict]
    out_dir: Path


def variant_name(temperature: float, k: int, many: bool) -> str:
    if temperature == 0:
        return "greedy"
    return f"t={temperature:g}" + (f" #{k + 1}" if many else "")


def _row(out: Outputs, i: int, scores: dict) -> dict:
    item = out.items[i]
    row: dict = {
        "id": i + 1,
        "split": item.split,
        "where": item.where,
        "prompt": item.prompt,
        "reference": item.reference,
        "outputs": [],
        "tags": [],
    }
    many = out.plan.request.samples > 1
    for which, by_variant in out.gens.items():
        for (t, k), gens in by_variant.items():
            g, s = gens[i], scores[which][(t, k)][i]
            base = scores.get("base", {}).get((t, k))
            cats = categorise(
                g.text,
                item.reference,
                s,
                max_new_tokens=out.plan.request.max_new_tokens,
                training_answers=out.training_answers,
                base_scores=base[i] if base is not None and which != "base" else None,
            )
            row["outputs"].append(
                {
                    "model": which,
                    "variant": variant_name(t, k, many),
                    "temperature": t,
                    "sample": k,
                    "text": g.text,
                    "tokens": g.tokens,
                    "stopped": g.stopped,
                    "metrics": s.to_dict(),
                    "right": is_right(s),
                    "categories": [c.to_dict() for c in cats],
                }
            )
    return row


def _right(rows: list[dict], model: str, split: str, variant: str) -> tuple[int, int]:
    outs = [
        o
        for r in rows
        if r["split"] == split
        for o in r["outputs"]
        if o["model"] == model and o["variant"] == variant and o["right"] is not None
    ]
    return sum(1 for o in outs if o["right"]), len(outs)


def _metrics(out: Outputs, scores: dict) -> dict:
    """{model: {variant: {split: totals}}}."""
    many = out.plan.request.samples > 1
    table: dict = {}
    for which, by_variant in scores.items():
        for (t, k), rows in by_variant.items():
            per_split: dict = {}
            for split in ("heldout", "train"):
                picked = [s for s, it in zip(rows, out.items, strict=True) if it.split == split]
                if picked:
                    per_split[split] = totals(picked)
            table.setdefault(which, {})[variant_name(t, k, many)] = per_split
    return table


def _categories(rows: list[dict]) -> dict:
    counts: dict[str, Counter] = {}
    for r in rows:
        for o in r["outputs"]:
            c = counts.setdefault(o["model"], Counter())
            c.update(cat["name"] for cat in o["categories"])
    return {m: dict(c) for m, c in counts.items()}


def _checkpoint_table(out: Outputs, metrics: dict, rows: list[dict], variant: str) -> list[dict]:
    table = []
    for which in out.plan.models:
        heldout = metrics.get(which, {}).get(variant, {}).get("heldout") or {}
        table.append(
            {
                "name": which,
                "step": out.plan.steps.get(which),
                "eval_loss": out.plan.eval_losses.get(which),
                "heldout_rouge_l": heldout.get("rouge_l"),
                "heldout_right": list(_right(rows, which, "heldout", variant)),
                "train_right": list(_right(rows, which, "train", variant)),
            }
        )
    return table


def _bench(out: Outputs) -> dict:
    scores = {m: [s.to_dict() for s in v] for m, v in out.bench.items()}
    deltas = []
    base = {(s["task"], s["metric"]): s for s in scores.get("base", [])}
    for model, rows in scores.items():
        if model == "base":
            continue
        for s in rows:
            b = base.get((s["task"], s["metric"]))
            if b is not None:
                deltas.append(
                    {**s, "model": model, "base": b["value"], "delta": s["value"] - b["value"]}
                )
    return {"scores": scores, "deltas": deltas}


def summarise(out: Outputs) -> EvalResult:
    req = out.plan.request
    scores: dict[str, dict[tuple[float, int], list[RowScores]]] = {
        which: {
            v: [
                score_row(g.text, it.reference, g.stopped)
                for g, it in zip(gens, out.items, strict=True)
            ]
            for v, gens in by_variant.items()
        }
        for which, by_variant in out.gens.items()
    }
    rows = [_row(out, i, scores) for i in range(len(out.items))]
    metrics = _metrics(out, scores)
    variant = variant_name(*out.variants[0], req.samples > 1)
    table = _checkpoint_table(out, metrics, rows, variant)
    trained = [c for c in table if c["name"] not in ("base", "model")]
    pick, why = recommend(
        [
            CheckpointScore(c["name"], c["heldout_rouge_l"], c["eval_loss"], c["step"])
            for c in trained
        ]
    )
    judged = pick or (trained[-1]["name"] if trained else out.plan.models[-1])
    summary = {
        "target": req.target,
        "run": str(out.plan.run_dir) if out.plan.run_dir else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(out.seconds, 1),
        "settings": {
            "temperatures": req.temperatures,
            "samples": req.samples,
            "max_new_tokens": req.max_new_tokens,
            "batch_size": req.batch_size,
            "seed": req.seed,
            "prompts": req.prompts or ("validation rows" if out.plan.run_dir else None),
            "train_sample": req.train_sample,
        },
        "models": {m: out.labels.get(m, m) for m in out.plan.models},
        "main_variant": variant,
        "rows": {s: sum(1 for it in out.items if it.split == s) for s in ("heldout", "train")},
        "metrics": metrics,
        "categories": _categories(rows),
        "tags": {},
        "checkpoints": table,
        "recommended": {"checkpoint": pick, "why": why} if trained else None,
        "judged": judged,
        "verdict": overfitting_verdict(
            _right(rows, judged, "train", variant), _right(rows, judged, "heldout", variant)
        ),
        "bench": _bench(out) if out.bench else None,
    }
    return EvalResult(summary, rows, out.plan.out_dir)
