"""Preference files (TRL and LLaMA-Factory layouts, HH, ShareGPT, KTO): counts, shapes, broken rows by place."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tunewiz.core.config import DataConfig, RunConfig, validate
from tunewiz.core.data import inspect_data, masking_preview, prepare
from tunewiz.core.data.preference_rows import normalize_kto, normalize_pair
from tunewiz.core.errors import UserError

GOOD = [
    # TRL plain
    {"prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Green."},
    # TRL conversational
    {
        "prompt": [{"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    },
    # Anthropic HH text: the shared beginning is the prompt
    {
        "chosen": "\n\nHuman: Name a fruit.\n\nAssistant: Apple.",
        "rejected": "\n\nHuman: Name a fruit.\n\nAssistant: A car.",
    },
    # HH as messages (TRL implicit prompt)
    {
        "chosen": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ],
        "rejected": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "5"},
        ],
    },
    # ShareGPT / LLaMA-Factory
    {
        "conversations": [{"from": "human", "value": "Capital of France?"}],
        "chosen": {"from": "gpt", "value": "Paris."},
        "rejected": {"from": "gpt", "value": "Lyon."},
    },
    # LLaMA-Factory alpaca-style pair
    {"instruction": "Add", "input": "1 and 1", "chosen": "2", "rejected": "3"},
]
BROKEN = [
    {"prompt": "Same?", "chosen": "Yes.", "rejected": "Yes."},
    {"prompt": "Empty?", "chosen": "Fine.", "rejected": "  "},
    {"prompt": "Wrong type", "chosen": 5, "rejected": "y"},
    {"prompt": "No rejected", "chosen": "ok"},
    GOOD[0],  # a duplicate
]


def write(tmp_path, rows, name="pref.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_every_layout_reads_to_the_same_shape():
    col = {}.get
    for row in GOOD:
        pair, issues, _ = normalize_pair(row, col)
        assert issues == [], row
        assert pair["prompt"][-1]["role"] == "user"
        assert [m["role"] for m in pair["chosen"]] == ["assistant"]
        assert pair["chosen"] != pair["rejected"]
    hh, _, _ = normalize_pair(GOOD[2], col)
    assert hh == {
        "prompt": [{"role": "user", "content": "Name a fruit."}],
        "chosen": [{"role": "assistant", "content": "Apple."}],
        "rejected": [{"role": "assistant", "content": "A car."}],
    }
    alpaca, _, _ = normalize_pair(GOOD[5], col)
    assert alpaca["prompt"] == [{"role": "user", "content": "Add\n\n1 and 1"}]


def test_counts_and_broken_rows_with_places(tmp_path, default_model_dir):
    from tunewiz.core.loading import load_tokenizer

    tok = load_tokenizer(str(default_model_dir))
    path = write(tmp_path, GOOD + BROKEN)
    report = inspect_data(DataConfig(data=path), tok, objective="dpo")
    assert (report.format, report.rows_total, report.rows_ok) == ("preference", 11, 6)
    places = {(p.where, p.kind) for p in report.problems}
    assert places == {
        ("pref.jsonl:7 field 'chosen'", "same_answers"),
        ("pref.jsonl:8 field 'rejected'", "empty_field"),
        ("pref.jsonl:9 field 'chosen'", "non_string"),
        ("pref.jsonl:10 field 'rejected'", "missing_field"),
        ("pref.jsonl:11", "duplicate"),
    }
    # both sides previewed, with the answer trained and the prompt not
    pieces = masking_preview(report.examples[0], tok)
    text = "".join(p for p, _ in pieces)
    assert "── chosen ──" in text and "── rejected ──" in text
    trained = "".join(p for p, t in pieces if t)
    assert "Blue." in trained and "Green." in trained and "Sky" not in trained
    assert report.token_stats is not None and report.token_stats.count == 6


def test_kto_rows_need_the_kto_objective(tmp_path):
    rows = [
        {"prompt": "Q1", "completion": "Good answer", "label": True},
        {"prompt": "Q2", "completion": "Bad answer", "label": False},
        {"prompt": "Q3", "completion": "Unlabelled", "label": "yes"},
    ]
    path = write(tmp_path, rows, "kto.jsonl")
    report = inspect_data(DataConfig(data=path), None, objective="kto")
    assert (report.format, report.rows_ok) == ("kto", 2)
    assert [(p.where, p.kind) for p in report.problems] == [
        ("kto.jsonl:3 field 'label'", "non_bool")
    ]
    assert any("good (label true) or bad" in n for n in report.notes)
    # never trained as sft (every answer would be learnt as good), nor as pairs
    with pytest.raises(UserError, match="--objective kto"):
        inspect_data(DataConfig(data=path), None)
    with pytest.raises(UserError, match="needs pairs"):
        inspect_data(DataConfig(data=path), None, objective="dpo")
    kto, issues, _ = normalize_kto(rows[1], {}.get)
    assert issues == [] and kto["label"] is False


def test_pairs_become_two_kto_rows_on_one_side_of_the_split(tmp_path, default_model_dir):
    from tunewiz.core.loading import load_tokenizer

    tok = load_tokenizer(str(default_model_dir))
    path = write(tmp_path, GOOD)
    prepared = prepare(DataConfig(data=path, validation_split=2), tok, objective="kto")
    assert len(prepared.train) == 8 and len(prepared.eval) == 4
    assert Counter(r["label"] for r in prepared.train) == {True: 4, False: 4}
    prompts = lambda rows: {json.dumps(r["prompt"]) for r in rows}  # noqa: E731
    assert not prompts(prepared.train) & prompts(prepared.eval)


def test_sft_on_pairs_trains_the_chosen_answer(tmp_path):
    report = inspect_data(DataConfig(data=write(tmp_path, GOOD)), None)
    assert report.rows_ok == 6
    assert report.preview[0]["messages"][-1] == {"role": "assistant", "content": "Blue."}
    assert any("`rejected` is not used" in n for n in report.notes)


def test_preference_options_are_checked():
    cfg = RunConfig()
    cfg.training.objective, cfg.training.loss_type = "dpo", "kto"
    with pytest.raises(UserError, match="not a dpo loss") as err:
        validate(cfg)
    assert err.value.where == "training.loss_type"
    cfg.training.loss_type, cfg.training.beta = "ipo", 0
    with pytest.raises(UserError, match="positive"):
        validate(cfg)
    cfg.training.beta = 0.1
    validate(cfg)
    assert 'objective = "dpo"' in cfg.to_toml() and "# dpo/kto: how far" in cfg.to_toml()


def test_cli_inspect_shows_both_sides(tmp_path, capsys):
    from tunewiz.cli import main

    path = write(tmp_path, GOOD + BROKEN)
    assert main(["data", "inspect", path, "--objective", "dpo"]) == 0
    out = capsys.readouterr().out
    assert "6 usable" in out and "same_answers" in out
    assert "chosen: Blue." in out and "rejected: Green." in out


def test_preference_scan_reports_progress_and_batches_change_nothing(
    tmp_path, monkeypatch, default_model_dir
):
    """The data screen showed no progress for dpo/orpo/kto: the preference scan took none."""
    import threading

    from tunewiz.core.data import pipeline
    from tunewiz.core.loading import load_tokenizer
    from tunewiz.tui import backend

    pairs = [{"prompt": f"Q{i}?", "chosen": f"Yes {i}.", "rejected": f"No {i}."} for i in range(50)]
    path = tmp_path / "pairs.jsonl"
    rows = [*pairs, pairs[1], {"prompt": "only a prompt"}]  # a duplicate and a broken row
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokenizer = load_tokenizer(str(default_model_dir))
    whole = inspect_data(DataConfig(data=str(path)), tokenizer, objective="dpo")
    monkeypatch.setattr(pipeline, "BATCH", 20)
    cfg = RunConfig()
    cfg.data.data, cfg.training.objective = str(path), "dpo"
    seen: list[int] = []
    # what the data screen's scan worker calls
    report = backend.inspect_data(cfg, tokenizer, threading.Event(), progress=seen.append)
    assert seen == [20, 40, 52]
    assert report.rows_ok == 50 and report.token_stats is not None
    assert report.to_dict() == whole.to_dict()


def test_preparing_preference_data_for_training_reports_progress(tmp_path, monkeypatch):
    """The worker's `preparing` state shows rows read; preparing dpo data told it nothing."""
    from tunewiz.core.data import pipeline, prepare

    pairs = [{"prompt": f"Q{i}?", "chosen": f"Yes {i}.", "rejected": f"No {i}."} for i in range(50)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    monkeypatch.setattr(pipeline, "BATCH", 20)
    seen: list[int] = []
    prepared = prepare(DataConfig(data=str(path)), None, objective="dpo", progress=seen.append)
    assert seen == [20, 40, 50]
    assert len(prepared.train) + len(prepared.eval or []) == 50
