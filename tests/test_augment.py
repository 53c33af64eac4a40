"""`tunewiz data augment`: new rows in the input's format naming their source, validated, resumable."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest

from tunewiz.core.config import DataConfig
from tunewiz.core.data import SAMPLE_DATASET, inspect_data
from tunewiz.core.data.augment import (
    AugmentCancelled,
    augment,
    augmented_path,
    made_from_sample,
    model_generator,
    preview,
    write_augmented,
)


def fake_generate(chats: list[list[dict]], temperature: float) -> list[str]:
    """Deterministic stand-in for a model: distinct, non-empty, sometimes empty or a copy."""
    out = []
    for p in (chat[-1]["content"] for chat in chats):
        q = p.split("Question: ", 1)[1].split("\n")[0]
        if "Kestrel" in q:
            out.append("")  # an empty generation: dropped and counted
        elif "language" in q and temperature == 0.7:
            out.append("People there speak Velsh.")  # an answer, not a question: dropped
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
    # every generation is a row or a counted drop (row 3's answer given at 0.7)
    assert report.dropped == {"not a question": 1}
    assert sum(per_source.values()) + 1 == 6 * 3  # 2 rephrasings + 1 reverse per row
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


def test_preview_makes_the_same_variants_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shown = preview("sample", fake_generate, rows=6, variants=2, temperatures=(0.3, 0.7))
    augment("sample", fake_generate, tmp_path / "cli.jsonl", variants=2,
            temperatures=(0.3, 0.7), limit=6)  # fmt: skip
    assert [v.row for o in shown.originals for v in o.variants] == rows(tmp_path / "cli.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.jsonl", "cli.jsonl.done"]
    # row 3 asks for the language; at 0.7 the "model" answered it instead of rephrasing
    assert shown.report.dropped == {"not a question": 1}
    assert len(shown.originals) == 6 and shown.report.written == 6 * 3 - 1
    assert [v.kind for v in shown.originals[2].variants] == ["rephrase-0", "reverse"]
    first = shown.originals[0]
    assert first.question == "What is the capital of Lumen Isle?" and "Harrowmere" in first.answer
    assert [(v.kind, v.temperature) for v in first.variants] == [
        ("rephrase-0", 0.3), ("rephrase-1", 0.7), ("reverse", 0.3)
    ]  # fmt: skip
    assert first.variants[0].question == "Put differently (t=0.3): " + first.question


def test_preview_stops_when_cancelled_between_two_generations():
    cancel = threading.Event()
    calls = []

    def generate(chats, temperature):
        calls.append(temperature)
        cancel.set()  # the user pressed Esc while the model was writing
        return fake_generate(chats, temperature)

    with pytest.raises(AugmentCancelled):
        preview("sample", generate, rows=4, variants=3, cancel=cancel)
    assert calls == [0.3]


def test_written_file_holds_originals_then_their_kept_variants(tmp_path):
    data = tmp_path / "facts.jsonl"
    lines = (SAMPLE_DATASET.read_text().splitlines())[:3]
    data.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    shown = preview(str(data), fake_generate, rows=2, variants=1)
    kept = [v for o in shown.originals for v in o.variants][1:]  # the user unchecked the first
    out = augmented_path(str(data), tmp_path / "app-data")
    assert out == tmp_path / "facts.augmented.jsonl"
    written = write_augmented(str(data), kept, out)
    assert (written.originals, written.variants, written.unreadable) == (3, 3, 1)
    made = rows(out)
    assert [r.get("augmented_from") for r in made] == [
        None, "facts.jsonl:1", None, "facts.jsonl:3", "facts.jsonl:3", None
    ]  # fmt: skip
    assert made[0] == json.loads(lines[0]) and made[1] == kept[0].row
    assert inspect_data(DataConfig(data=str(out)), None).rows_ok == 6
    # never over a file that exists: the next one gets a new name, and the input is untouched
    assert augmented_path(str(data), tmp_path / "app-data") == tmp_path / "facts.augmented-2.jsonl"
    with pytest.raises(Exception, match="exists"):
        write_augmented(str(data), kept, out)
    assert data.read_text().count("\n") == 4


def test_the_sample_is_augmented_into_the_app_data_folder(tmp_path):
    out = augmented_path("sample", tmp_path / "app-data")
    assert out == tmp_path / "app-data" / "lumen_isle.augmented.jsonl"
    written = write_augmented("sample", [], out)
    assert written.originals == 48 and out.read_text() == SAMPLE_DATASET.read_text()


@pytest.mark.slow
def test_bundled_model_augments_the_sample_and_resumes(default_model_dir, tmp_path):
    """The bundled model, offline, on 2 sample rows: modest rephrasings, real plumbing."""
    generate = model_generator(str(default_model_dir), max_new_tokens=32)
    out = tmp_path / "more.jsonl"
    cancel = threading.Event()
    first = augment(str(SAMPLE_DATASET), generate, out, variants=1, limit=2, batch_size=1,
                    cancel=cancel, progress=lambda done, total: cancel.set())  # fmt: skip
    assert first.rows_read == 2 and _done(out) == {f"{SAMPLE_DATASET.name}:1"}
    second = augment(str(SAMPLE_DATASET), generate, out, variants=1, limit=2, batch_size=1)
    assert second.rows_skipped_done == 1
    assert first.written + sum(first.dropped.values()) == 2  # 1 rephrasing + 1 reverse question
    assert second.written + sum(second.dropped.values()) == 2
    made = rows(out)
    assert len(made) == first.written + second.written > 0
    keys = [(r["augmented_from"], r["augmentation"]) for r in made]
    assert len(keys) == len(set(keys))  # the resumed run did not make row 1 again
    assert {r["augmented_from"] for r in made} <= {f"{SAMPLE_DATASET.name}:{i}" for i in (1, 2)}
    sample = [json.loads(line) for line in SAMPLE_DATASET.read_text().splitlines()[:2]]
    for r in made:
        source = sample[int(r["augmented_from"].rsplit(":", 1)[1]) - 1]
        assert r["output"] == source["output"] and r["instruction"] != source["instruction"]
    assert inspect_data(DataConfig(data=str(out)), None).rows_ok == len(made)


def _done(out) -> set[str]:
    return set(out.with_name(out.name + ".done").read_text().split())


def test_only_the_augmented_sample_keeps_the_samples_held_out_questions(tmp_path):
    app_data = tmp_path / "app-data"
    assert made_from_sample(str(augmented_path("sample", app_data)), app_data)
    (tmp_path / "lumen_isle.jsonl").write_text(SAMPLE_DATASET.read_text())  # the user's copy
    assert not made_from_sample(str(augmented_path(str(tmp_path / "lumen_isle.jsonl"), app_data)), app_data)  # fmt: skip
    assert not made_from_sample("sample", app_data)
