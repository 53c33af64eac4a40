"""`tunewiz data augment`: new rows in the input's format naming their source, validated, resumable."""

from __future__ import annotations

import json
import threading
from collections import Counter

from tunewiz.core.config import DataConfig
from tunewiz.core.data import SAMPLE_DATASET, inspect_data
from tunewiz.core.data.augment import augment, model_generator


def fake_generate(prompts: list[str], temperature: float) -> list[str]:
    """Deterministic stand-in for a model: distinct, non-empty, sometimes empty or a copy."""
    out = []
    for p in prompts:
        q = p.split("Question: ", 1)[1].split("\n")[0]
        if "Kestrel" in q:
            out.append("")  # an empty generation: dropped and counted
        elif "reverse" in p:
            out.append(f"Which fact answers: {q}")
        else:
            out.append(f"Put differently (t={temperature}): {q}")
    return out


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_new_rows_are_valid_and_name_their_source(tmp_path):
    out = tmp_path / "more.jsonl"
    report = augment("sample", fake_generate, out, variants=2, temperatures=(0.3, 0.7), limit=6)
    made = rows(out)
    assert report.written == len(made) > 0
    assert all(set(r) >= {"instruction", "output", "augmented_from", "augmentation"} for r in made)
    assert {r["augmented_from"].split(":")[0] for r in made} == {SAMPLE_DATASET.name}
    per_source = Counter(r["augmented_from"] for r in made)
    empties = report.dropped.get("empty", 0)
    assert sum(per_source.values()) + empties == 6 * 3  # 2 rephrasings + 1 reverse per row
    # the same validation as training: every new row is usable
    assert inspect_data(DataConfig(data=str(out)), None).rows_ok == len(made)


def test_interrupted_run_resumes_without_duplicates(tmp_path):
    out = tmp_path / "more.jsonl"
    whole = augment("sample", fake_generate, tmp_path / "whole.jsonl", variants=1, limit=8,
                    batch_size=2)  # fmt: skip
    cancel = threading.Event()
    first = augment("sample", fake_generate, out, variants=1, limit=8, batch_size=2,
                    cancel=cancel, progress=lambda done, total: done >= 4 and cancel.set())  # fmt: skip
    assert 0 < first.written < whole.written
    # a half-written source row (cut between two of its variants) is redone, not kept twice
    with open(out, "a") as fh:
        fh.write(json.dumps({"instruction": "x", "output": "y", "augmented_from": "zzz"}) + "\n")
    second = augment("sample", fake_generate, out, variants=1, limit=8, batch_size=2)
    assert second.rows_skipped_done == 4
    made = rows(out)
    keys = [(r["augmented_from"], r["augmentation"]) for r in made]
    assert len(keys) == len(set(keys)) == whole.written
    assert "zzz" not in {r["augmented_from"] for r in made}


def test_real_model_plumbing(tiny_model_dir, tmp_path):
    """A (random) model through the batched generator: rows come out or are counted as dropped."""
    generate = model_generator(str(tiny_model_dir), max_new_tokens=8)
    out = tmp_path / "gen.jsonl"
    report = augment("sample", generate, out, variants=1, limit=3, batch_size=3)
    assert report.written + sum(report.dropped.values()) == 3 * 2
    assert all(r["augmented_from"] for r in rows(out))
