"""Benchmarks through lm-eval on our loaded model: a local multiple-choice task written by the
test, our number against `lm_eval.simple_evaluate` called directly, and the errors users meet."""

from __future__ import annotations

import json

import pytest

from tunewiz.core.errors import UserError
from tunewiz.core.eval.bench import prepare_tasks, run_bench

DOCS = [
    {"question": "The capital of Lumen Isle is", "choices": ["Harrowmere", "Paris"], "answer": 0},
    {"question": "Two plus two is", "choices": ["five", "four", "six"], "answer": 1},
    {"question": "The sky is", "choices": ["blue", "made of cheese"], "answer": 0},
    {"question": "Fire is", "choices": ["cold", "hot"], "answer": 1},
]


@pytest.fixture
def task_yaml(tmp_path):
    data = tmp_path / "mc.json"
    data.write_text(json.dumps(DOCS))
    yaml = tmp_path / "tw_mc.yaml"
    yaml.write_text(
        "task: tw_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return yaml


def test_our_wrapper_gives_what_simple_evaluate_gives(task_yaml, tiny_model_dir):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from tunewiz.core.loading import load_for_chat

    loaded = load_for_chat(str(tiny_model_dir), device="cpu")
    prepared = prepare_tasks([str(task_yaml)])
    ours = {
        (s.task, s.metric): (s.value, s.stderr)
        for s in run_bench(loaded, prepared, limit=None, batch_size=4)
    }
    direct = lm_eval.simple_evaluate(
        model=HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=4),
        tasks=["tw_mc"],
        task_manager=TaskManager(include_path=str(task_yaml.parent)),
    )["results"]["tw_mc"]
    assert ours[("tw_mc", "acc")] == (direct["acc,none"], direct["acc_stderr,none"])
    assert 0 <= ours[("tw_mc", "acc")][0] <= 1 and ours[("tw_mc", "acc")][1] > 0


def test_unknown_benchmark_names_the_closest(task_yaml):
    with pytest.raises(UserError) as info:
        prepare_tasks(["arc_easyy"])
    assert "arc_easy" in str(info.value).split("closest:")[1]


def test_missing_lm_eval_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a)
    )
    with pytest.raises(UserError, match=r"tunewiz\[eval\]"):
        prepare_tasks(["arc_easy"])


def test_hub_task_without_network_fails_before_any_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError) as info:
        prepare_tasks(["arc_easy"])
    assert "network" in str(info.value)


def test_bench_alone_on_a_model_without_a_run(task_yaml, tiny_model_dir, tmp_path, capsys):
    from tunewiz.cli import main

    code = main(
        [
            "eval",
            str(tiny_model_dir),
            "--bench",
            str(task_yaml),
            "--limit",
            "2",
            "--json",
            "--runs-dir",
            str(tmp_path),
        ]  # fmt: skip
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == {"heldout": 0, "train": 0}
    (score,) = summary["bench"]["scores"]["model"]
    assert (score["task"], score["metric"]) == ("tw_mc", "acc") and score["stderr"] is not None
