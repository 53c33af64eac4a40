"""Token statistics, the train/validation split and packing: small pure functions."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from tunewiz.core.data.report import TokenStats
from tunewiz.core.data.template import IGNORE_INDEX


def token_stats(
    lengths: Sequence[int],
    max_seq_len: int,
    *,
    trained_tokens: int = 0,
    batch_size: int = 4,
    bins: int = 10,
    truncates: bool = True,
    cut: Sequence[int] = (),
) -> TokenStats | None:
    """Statistics of the usable rows' lengths in tokens (before truncation). None for no rows.

    `cut`: lengths of rows dropped because truncation left nothing to train on; the
    histogram and the suggested max_seq_len count them too, since they are what a longer
    max_seq_len would save."""
    if not lengths:
        return None
    import numpy as np

    arr = np.asarray(lengths, dtype=np.int64)
    every = np.concatenate([arr, np.asarray(cut, dtype=np.int64)])
    over = arr[arr > max_seq_len]
    edges = histogram_edges(int(every.min()), int(every.max()), bins)
    counts, _ = np.histogram(every, bins=edges)
    suggested = suggest_max_len(every)
    return TokenStats(
        count=int(arr.size),
        total=int(arr.sum()),
        min=int(arr.min()),
        median=int(np.median(arr)),
        p95=int(np.percentile(arr, 95)),
        max=int(arr.max()),
        max_seq_len=max_seq_len,
        histogram=[(edges[i], edges[i + 1], int(c)) for i, c in enumerate(counts)],
        rows_truncated=int(over.size) if truncates else 0,
        tokens_lost=int((over - max_seq_len).sum()) if truncates else 0,
        suggested_max_len=suggested,
        rows_over_suggested=int((every > suggested).sum()),
        trained_tokens=trained_tokens,
        batch_size=batch_size,
    )


def histogram_edges(low: int, top: int, bins: int) -> list[int]:
    """`bins + 1` evenly spaced edges, multiples of the step (they read well), with
    low >= edges[0] and top < edges[-1]: every row falls in a bin `from <= length < to`."""
    bins = max(2, bins)
    step = max(1, -(-(top + 1 - low) // bins))
    if low - low % step + step * bins <= top:
        # rounding the start down cost more than a step's slack: a step this wide
        # covers low..top from any start within one step below low
        step = -(-(top + 1 - low) // (bins - 1))
    start = low - low % step
    return [start + step * i for i in range(bins + 1)]


def suggest_max_len(lengths: Sequence[int] | Any, share: float = 0.99) -> int:
    """The smallest multiple of 64 that holds `share` of the rows whole: the length of the
    ceil(share * n)-th shortest row, rounded up (a percentile would interpolate below it)."""
    import numpy as np

    ordered = np.sort(np.asarray(lengths, dtype=np.int64))
    keep = max(1, -(-int(share * 1000) * ordered.size // 1000))  # ceil without float error
    return max(64, int(-(-int(ordered[keep - 1]) // 64) * 64))


def eval_count(n: int, validation: float) -> int:
    """Rows of `n` held out for `validation` (< 1 a fraction, >= 1 a count); one row always
    stays to train on, so a large count on a small file leaves training almost nothing."""
    if validation <= 0 or n < 2:
        return 0
    n_eval = int(validation) if validation >= 1 else max(1, round(n * validation))
    return min(n_eval, n - 1)


def split(items: list, validation: float, seed: int) -> tuple[list, list]:
    """(train, validation): `validation` < 1 is a fraction, >= 1 a count; seeded and reproducible."""
    n = len(items)
    n_eval = eval_count(n, validation)
    if not n_eval:
        return list(items), []
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    train = [x for i, x in enumerate(items) if i not in held]
    evals = [items[i] for i in sorted(held)]
    return train, evals


def pack(examples: list[dict], max_len: int) -> list[dict]:
    """Concatenate rows into sequences of at most `max_len` tokens, in order.

    Every token is kept exactly once; rows are never split. `position_ids`
    restart at 0 at each row, which is how transformers tells the rows apart
    (no attention across them) when the batch carries no attention_mask. The
    first label of each row is -100 so no row learns to predict the next one's
    first token (unpacked, that label is never used either).
    """
    packed: list[dict] = []
    cur: dict | None = None
    for ex in examples:
        ids = ex["input_ids"]
        labels = list(ex.get("labels", ids))
        if labels:
            labels[0] = IGNORE_INDEX
        if cur is None or len(cur["input_ids"]) + len(ids) > max_len:
            cur = {"input_ids": [], "labels": [], "position_ids": []}
            packed.append(cur)
        cur["input_ids"].extend(ids)
        cur["labels"].extend(labels)
        cur["position_ids"].extend(range(len(ids)))
    return packed


def packed_count(lengths: Sequence[int], max_len: int) -> int:
    """How many sequences `pack` makes from rows of these lengths."""
    count, used = 0, max_len + 1
    for n in lengths:
        n = min(n, max_len)
        if used + n > max_len:
            count, used = count + 1, 0
        used += n
    return count
