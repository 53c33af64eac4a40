"""Per-row scores of a generated answer against its reference, and their totals.

Pure functions over strings: no model, no torch. ROUGE-L comes from Google's
`rouge-score` package (the reference implementation), not our own.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import asdict, dataclass

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
REPETITION_N = 3  # n-gram size for the repetition score


def normalise(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces.

    Rajpurkar et al. 2016, `normalize_answer` in the official SQuAD v1.1 evaluation script.
    """
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(output: str, reference: str) -> bool:
    return normalise(output) == normalise(reference)


def token_f1(output: str, reference: str) -> float:
    """SQuAD token F1: harmonic mean of precision and recall of the normalised tokens' overlap."""
    out, ref = normalise(output).split(), normalise(reference).split()
    if not out or not ref:
        return float(out == ref)
    common = sum((Counter(out) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(out), common / len(ref)
    return 2 * precision * recall / (precision + recall)


_SCORER = None


def rouge_l(output: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence, Lin 2004) from `rouge-score`, stemmed."""
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(_SCORER.score(reference, output)["rougeL"].fmeasure)


def repetition(text: str, n: int = REPETITION_N) -> float:
    """Share of the word n-grams that repeat an earlier one: 0 = none, near 1 = a loop.

    `1 - distinct_n / total_n` (the complement of Li et al. 2016's distinct-n).
    """
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


@dataclass(frozen=True)
class RowScores:
    exact: bool | None  # None without a reference
    f1: float | None
    rouge_l: float | None
    length: int  # words in the output
    length_ratio: float | None  # output words / reference words
    stopped: bool  # ended at end-of-turn (False: ran into max_new_tokens)
    repetition: float

    def to_dict(self) -> dict:
        return asdict(self)


def score_row(output: str, reference: str | None, stopped: bool) -> RowScores:
    length = len(output.split())
    if reference is None:
        return RowScores(None, None, None, length, None, stopped, repetition(output))
    ref_len = len(reference.split())
    return RowScores(
        exact_match(output, reference),
        token_f1(output, reference),
        rouge_l(output, reference),
        length,
        length / ref_len if ref_len else None,
        stopped,
        repetition(output),
    )


TOTAL_KEYS = ("exact", "f1", "rouge_l", "length", "length_ratio", "stopped", "repetition")


def totals(scores: list[RowScores]) -> dict[str, float | int | None]:
    """Mean of each score over the rows that have it (booleans become shares), and counts."""
    out: dict[str, float | int | None] = {"rows": len(scores)}
    for key in TOTAL_KEYS:
        values = [float(getattr(s, key)) for s in scores if getattr(s, key) is not None]
        out[key] = sum(values) / len(values) if values else None
    out["exact_count"] = sum(1 for s in scores if s.exact)
    out["with_reference"] = sum(1 for s in scores if s.exact is not None)
    return out
