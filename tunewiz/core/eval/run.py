"""Run an evaluation: load each model once, generate every prompt set in batches, score.

Models are loaded one at a time (two large models never share the GPU): the base
first, then each checkpoint. Progress is reported in prompts generated, so a
caller can show a bar with an ETA; `cancel` stops within one batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunewiz.core.chat import ChatSession, GenerationSettings, unload
from tunewiz.core.eval.generate import EvalCancelled, Generation, generate_batched
from tunewiz.core.eval.plan import EvalRequest, Plan, make_plan
from tunewiz.core.eval.prompts import EvalItem, run_items, sample

if TYPE_CHECKING:
    from tunewiz.core.eval.summary import EvalResult
    from tunewiz.core.loading import LoadedModel

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (prompts done, prompts in all, what is running)


@dataclass
class Outputs:
    """What the models produced, before scoring."""

    plan: Plan
    items: list[EvalItem]
    training_answers: list[tuple[str, str]]  # (where, answer) of every training row
    variants: list[tuple[float, int]]  # (temperature, sample)
    gens: dict[str, dict[tuple[float, int], list[Generation]]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    bench: dict[str, list] = field(default_factory=dict)
    seconds: float = 0.0


def variants(req: EvalRequest) -> list[tuple[float, int]]:
    """(temperature, sample index) pairs: one sample under greedy decoding, --samples otherwise."""
    return [(t, k) for t in req.temperatures for k in range(1 if t == 0 else req.samples)]


def _load(plan: Plan, which: str) -> LoadedModel:
    from tunewiz.core.loading import load_for_chat

    req = plan.request
    target = str(plan.run_dir) if plan.run_dir is not None else req.target
    return load_for_chat(
        target,
        None if which == "model" else which,
        runs_dir=req.runs_dir,
        device=req.device,
        trust_remote_code=req.trust_remote_code,
    )


def _items(plan: Plan, tokenizer: Any) -> tuple[list[EvalItem], list[tuple[str, str]]]:
    """Held-out items (file or validation rows) + a training sample, and all training answers."""
    req = plan.request
    items = list(plan.file_items or [])
    train: list[EvalItem] = []
    if plan.run_dir is not None:
        if not plan.file_items and req.heldout:
            items = run_items(plan.run_dir, tokenizer, "heldout")
        if (plan.run_dir / "data" / "train.jsonl").is_file():
            train = run_items(plan.run_dir, tokenizer, "train")
    answers = [(t.where, t.reference) for t in train if t.reference]
    picked = sample(train, req.train_sample, req.seed) if req.train_sample else []
    return items + picked, answers


def prompt_ids(loaded: LoadedModel, item: EvalItem) -> list[int]:
    """The item's prompt tokens: as training rendered them, else through the model's template."""
    if item.input_ids:
        return list(item.input_ids)
    msgs = item.messages or [{"role": "user", "content": item.prompt}]
    system = msgs[0]["content"] if msgs[0]["role"] == "system" else None
    session = ChatSession(loaded, system=system)
    session.history = [m for m in msgs[:-1] if m["role"] != "system"]
    text = session.render(msgs[-1]["content"])
    return loaded.tokenizer(text, add_special_tokens=False)["input_ids"]


def _settings(req: EvalRequest, temperature: float, k: int) -> GenerationSettings:
    return GenerationSettings(
        temperature=temperature,
        greedy=temperature == 0,
        max_new_tokens=req.max_new_tokens,
        seed=req.seed + k,
    )


def _generate_model(
    out: Outputs,
    loaded: LoadedModel,
    which: str,
    tick: Callable[[int], None],
    cancel: threading.Event,
) -> None:
    from transformers import set_seed

    req = out.plan.request
    ids = [prompt_ids(loaded, it) for it in out.items]
    out.gens[which] = {}
    for temperature, k in out.variants:
        if temperature > 0:
            set_seed(req.seed + k)
        out.gens[which][(temperature, k)] = generate_batched(
            loaded,
            ids,
            _settings(req, temperature, k),
            batch_size=req.batch_size,
            cancel=cancel,
            progress=tick,
        )


def generate_all(
    plan: Plan, *, progress: Progress | None = None, cancel: threading.Event | None = None
) -> Outputs:
    """Every model over every item and variant (and the benchmarks), one model at a time."""
    cancel = cancel or threading.Event()
    req, started = plan.request, time.perf_counter()
    out: Outputs | None = None
    done = [0]
    for which in plan.models:
        if cancel.is_set():
            raise EvalCancelled()
        loaded = _load(plan, which)
        if out is None:
            items, answers = _items(plan, loaded.tokenizer)
            out = Outputs(plan, items, answers, variants(req))
        total = len(plan.models) * len(out.items) * len(out.variants)
        out.labels[which] = loaded.label

        def tick(n: int, which: str = which, total: int = total) -> None:
            done[0] += n
            if progress:
                progress(done[0], total, which)

        if progress:
            progress(done[0], total, f"{which}: loaded")
        _generate_model(out, loaded, which, tick, cancel)
        if plan.bench is not None:
            from tunewiz.core.eval.bench import run_bench

            if progress:
                progress(done[0], total, f"{which}: benchmarks")
            out.bench[which] = run_bench(
                loaded, plan.bench, limit=req.limit, batch_size=req.batch_size
            )
        unload(loaded)
    assert out is not None
    out.seconds = time.perf_counter() - started
    return out


def evaluate(
    req: EvalRequest, *, progress: Progress | None = None, cancel: threading.Event | None = None
) -> EvalResult:
    """Plan, generate, score and write; returns the EvalResult (see tunewiz.core.eval.summary)."""
    from tunewiz.core.eval.report import write_all
    from tunewiz.core.eval.summary import summarise

    plan = make_plan(req)
    outputs = generate_all(plan, progress=progress, cancel=cancel)
    result = summarise(outputs)
    write_all(result, plan.out_dir)
    return result
