"""Error analysis: automatic categories with their evidence, the overfitting verdict, and
which checkpoint to keep. Pure functions over scores and strings (no model).

Thresholds are named here once; the README states them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tunewiz.core.eval.metrics import RowScores, normalise, rouge_l

RIGHT_ROUGE = 0.7  # an answer this close to the reference (ROUGE-L F) counts as right
WRONG_ROUGE = 0.4  # below this it is `wrong`
TOO_LONG = 2.0  # output words / reference words
TOO_SHORT = 0.5
REPETITIVE = 0.3  # share of repeated 3-grams
COPIED_ROUGE = 0.8  # this close to a different training row's answer: copied
GAP = 0.3  # train - held-out share right above which the model memorised
CATEGORIES = (
    "empty",
    "too_long",
    "too_short",
    "repetitive",
    "no_stop",
    "wrong",
    "copied_training_answer",
    "regressed",
)


@dataclass(frozen=True)
class Category:
    name: str
    evidence: str

    def to_dict(self) -> dict:
        return {"name": self.name, "evidence": self.evidence}


def is_right(s: RowScores) -> bool | None:
    """Exact match or ROUGE-L >= RIGHT_ROUGE; None without a reference."""
    if s.exact is None:
        return None
    return bool(s.exact) or (s.rouge_l or 0.0) >= RIGHT_ROUGE


def categorise(
    output: str,
    reference: str | None,
    s: RowScores,
    *,
    max_new_tokens: int,
    training_answers: Sequence[tuple[str, str]] = (),
    base_scores: RowScores | None = None,
) -> list[Category]:
    """Every category the row falls in, each with the number that triggered it."""
    out: list[Category] = []
    if not output.strip():
        out.append(Category("empty", "the reply is empty"))
    ratio = s.length_ratio
    if ratio is not None and ratio > TOO_LONG:
        out.append(Category("too_long", f"{s.length} words, reference {s.length / ratio:.0f}"))
    if ratio is not None and output.strip() and ratio < TOO_SHORT:
        out.append(Category("too_short", f"{s.length} words, reference {s.length / ratio:.0f}"))
    if s.repetition >= REPETITIVE:
        out.append(Category("repetitive", f"{s.repetition:.0%} of its 3-word runs repeat"))
    if not s.stopped:
        out.append(Category("no_stop", f"ran into the limit of {max_new_tokens} new tokens"))
    if reference is not None and not s.exact and (s.rouge_l or 0.0) < WRONG_ROUGE:
        out.append(Category("wrong", f"ROUGE-L {s.rouge_l:.2f} against the reference"))
    copied = copied_from(output, reference, training_answers)
    if copied is not None:
        out.append(Category("copied_training_answer", copied))
    if base_scores is not None and is_right(base_scores) and not is_right(s):
        out.append(
            Category(
                "regressed",
                f"the base was right (ROUGE-L {base_scores.rouge_l:.2f}), this is not "
                f"({s.rouge_l or 0:.2f})",
            )
        )
    return out


def copied_from(
    output: str, reference: str | None, training_answers: Sequence[tuple[str, str]]
) -> str | None:
    """Evidence when the output reproduces the answer of a *different* training row."""
    if not output.strip():
        return None
    own = normalise(reference) if reference else None
    for where, answer in training_answers:
        if normalise(answer) == own:
            continue  # this row's own answer: right, not copied
        if normalise(output) == normalise(answer) or rouge_l(output, answer) >= COPIED_ROUGE:
            return f'repeats the training answer "{answer}" ({where})'
    return None


def overfitting_verdict(train_right: tuple[int, int], heldout_right: tuple[int, int]) -> str:
    """The gap between training and held-out questions, in words."""
    (tr, tn), (hr, hn) = train_right, heldout_right
    if not tn or not hn:
        return "no overfitting check: it needs training rows and held-out rows with references"
    said = f"right on {tr}/{tn} training questions, {hr}/{hn} new ones"
    t, h = tr / tn, hr / hn
    if t < 0.5:
        return f"{said}: the model has not learned the training data yet; train longer or raise the learning rate"
    if t - h >= GAP:
        return f"{said}: the model memorised rather than learned; more varied data or fewer epochs"
    return f"{said}: what it learned carries over to new questions"


@dataclass(frozen=True)
class CheckpointScore:
    name: str
    heldout: float | None  # mean ROUGE-L on held-out rows
    eval_loss: float | None
    step: int | None


def recommend(scores: list[CheckpointScore]) -> tuple[str | None, str]:
    """(checkpoint to keep, why): the best held-out score, ties to lower eval loss, then earlier."""
    scored = [c for c in scores if c.heldout is not None]
    if not scored:
        with_loss = [c for c in scores if c.eval_loss is not None]
        if not with_loss:
            return None, "no held-out score or eval loss to choose by"
        best = min(with_loss, key=lambda c: c.eval_loss or 0.0)
        return best.name, f"lowest eval loss ({best.eval_loss:.4f}); no held-out prompts scored"
    best = min(
        scored,
        key=lambda c: (
            -(c.heldout or 0.0),
            c.eval_loss if c.eval_loss is not None else 1e9,
            c.step or 0,
        ),
    )
    why = f"best held-out ROUGE-L {best.heldout:.3f}"
    last = scores[-1]
    if last.name != best.name and last.heldout is not None:
        why += f" (the last, {last.name}, scores {last.heldout:.3f})"
    if best.eval_loss is not None:
        lowest = min((c.eval_loss for c in scores if c.eval_loss is not None), default=None)
        why += f"; eval loss {best.eval_loss:.4f}" + (
            " (lowest)" if best.eval_loss == lowest else ""
        )
    return best.name, why
