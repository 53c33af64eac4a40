"""Evaluation speed on the bundled default model, figures from one run.

    .venv/bin/python bench/bench_eval.py [--prompts 32] [--new-tokens 32] [--docs 40]

1. Batched generation (tunewiz.core.eval.generate_batched, left padding, 16 per call) against one
   prompt at a time, over the sample's 32 first questions, greedy: the ratio of wall times
   (target >= 3x) and whether the outputs are equal.
2. Benchmarks through our wrapper (tunewiz.core.eval.bench: prepare_tasks + run_bench) against
   `lm_eval.simple_evaluate` called directly on the same model and a local multiple-choice
   task written here (target >= 0.9x the direct speed), and whether the scores agree.
Both sides of each pair run in this process, interleaved, so machine load hits them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TUNEWIZ_HOME", str(ROOT / ".tunewiz-home"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def bench_generation(loaded, n: int, new_tokens: int) -> None:
    from tunewiz.core.chat import GenerationSettings
    from tunewiz.core.data import SAMPLE_DATASET
    from tunewiz.core.eval.generate import generate_batched
    from tunewiz.core.eval.prompts import load_prompts
    from tunewiz.core.eval.run import prompt_ids

    items = load_prompts(SAMPLE_DATASET)[:n]
    ids = [prompt_ids(loaded, it) for it in items]
    settings = GenerationSettings(greedy=True, max_new_tokens=new_tokens)
    t_single, single = timed(lambda: [generate_batched(loaded, [i], settings)[0] for i in ids])
    t_batch, batched = timed(lambda: generate_batched(loaded, ids, settings, batch_size=16))
    same = sum(a == b for a, b in zip(single, batched, strict=True))
    print(f"generation, {len(ids)} prompts, {new_tokens} new tokens max, greedy:")
    print(f"  one at a time {t_single:.1f} s, batched (16 per call) {t_batch:.1f} s")
    print(f"  speed-up {t_single / t_batch:.2f}x (target >= 3x); equal outputs {same}/{len(ids)}")


def write_task(folder: Path, docs: int) -> Path:
    from tunewiz.core.data import SAMPLE_DATASET

    rows = [json.loads(x) for x in SAMPLE_DATASET.read_text().splitlines() if x.strip()]
    data = [
        {
            "question": r["instruction"],
            "choices": [r["output"], rows[(i + 7) % len(rows)]["output"]],
            "answer": 0,
        }
        for i, r in enumerate(rows[:docs])
    ]
    (folder / "mc.json").write_text(json.dumps(data))
    path = folder / "tw_bench.yaml"
    path.write_text(
        "task: tw_bench\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'mc.json'}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    return path


def bench_lm_eval(loaded, docs: int) -> None:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from tunewiz.core.eval.bench import prepare_tasks, run_bench

    folder = Path(tempfile.mkdtemp())
    yaml = write_task(folder, docs)

    def ours():
        scores = run_bench(loaded, prepare_tasks([str(yaml)]), limit=None, batch_size=8)
        return next(s.value for s in scores if s.metric == "acc")

    def direct():
        lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=8)
        tm = TaskManager(include_path=str(folder))
        res = lm_eval.simple_evaluate(model=lm, tasks=["tw_bench"], task_manager=tm)
        return res["results"]["tw_bench"]["acc,none"]

    direct()  # warm-up: the first call builds the datasets cache for both
    t_direct, acc_direct = timed(direct)
    t_ours, acc_ours = timed(ours)
    print(f"benchmark, local multiple-choice task, {docs} questions:")
    print(f"  direct simple_evaluate {t_direct:.1f} s (acc {acc_direct:.3f}),")
    print(f"  through tunewiz {t_ours:.1f} s (acc {acc_ours:.3f})")
    print(
        f"  speed {t_direct / t_ours:.2f}x of direct (target >= 0.9x); same score {acc_ours == acc_direct}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=32, help="Prompts to generate for.")
    parser.add_argument("--new-tokens", type=int, default=32, help="Longest answer, in tokens.")
    parser.add_argument("--docs", type=int, default=40, help="Questions in the benchmark task.")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    from tunewiz.core.loading import load_for_chat

    loaded = load_for_chat("default", device="cpu")
    bench_generation(loaded, args.prompts, args.new_tokens)
    bench_lm_eval(loaded, args.docs)


if __name__ == "__main__":
    main()
