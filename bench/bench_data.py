"""Benchmark tunewiz.core.data: parse+validate speed and memory on a big JSON Lines file, and tokenization
overhead against calling the fast tokenizer directly.

    .venv/bin/python bench/bench_data.py            # 1 GB file (written to a temp dir, deleted after)
    .venv/bin/python bench/bench_data.py --size-mb 100

Prints figures; asserts nothing (targets: >= 50,000 rows/s, flat memory, tokenization >= 90%).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TUNEWIZ_HOME", str(ROOT / ".tunewiz-home"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED = ROOT.parent / "shared" / "data"


def write_big_jsonl(path: Path, size_mb: int, kind: str = "alpaca") -> int:
    """Rows made unique by a counter, up to size_mb: the shared Alpaca demo's rows (~850 bytes)
    or the bundled sample's short question/answer rows (~110 bytes)."""
    if kind == "alpaca":
        base = json.loads((SHARED / "alpaca_en_demo.json").read_text())
    else:
        base = [
            json.loads(line)
            for line in (ROOT / "tunewiz/profiles/datasets/lumen_isle.jsonl").open()
        ]
    tails = [
        ', "input": '
        + json.dumps(r.get("input", ""))
        + ', "output": '
        + json.dumps(r["output"])
        + "}\n"
        for r in base
    ]
    heads = [r["instruction"] for r in base]
    target, written, rows = size_mb * 1024 * 1024, 0, 0
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as f:
        while written < target:
            k = rows % len(base)
            line = '{"instruction": ' + json.dumps(f"{heads[k]} (#{rows})") + tails[k]
            f.write(line)
            written += len(line)
            rows += 1
    return rows


def _inspect_child(path: str, queue) -> None:
    from tunewiz.core.config import DataConfig
    from tunewiz.core.data import inspect_data

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    report = inspect_data(DataConfig(data=path))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((report.rows_total, report.rows_ok, dt, cpu, rss_before, rss_after))


def _baseline_child(path: str, queue) -> None:
    """The floor: json.loads of every line, nothing else."""
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    with open(path, "rb") as f:
        for line in f:
            json.loads(line)
            n += 1
    queue.put((n, time.perf_counter() - t0, time.process_time() - c0))


def in_child(target, *args):
    ctx = mp.get_context("spawn")  # a fresh process: its peak RSS is the inspection's alone
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def bench_parse(size_mb: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for kind, mb in (("short", max(1, size_mb // 8)), ("alpaca", size_mb)):
            path = Path(tmp) / f"big-{kind}.jsonl"
            t0 = time.perf_counter()
            rows = write_big_jsonl(path, mb, kind)
            print(f"{kind} rows: wrote {mb} MB, {rows:,} rows in {time.perf_counter() - t0:.1f} s")
            total, ok, dt, cpu, rss0, rss1 = in_child(_inspect_child, str(path))
            n, dt_base, cpu_base = in_child(_baseline_child, str(path))
            print(
                f"  inspect_data (parse + validate + duplicates): {total:,} rows ({ok:,} ok): "
                f"{total / dt:,.0f} rows/s wall, {total / cpu:,.0f} rows/s CPU time; "
                f"{cpu_base / cpu:.0%} of bare json.loads per line ({n / cpu_base:,.0f} rows/s CPU time)"
            )
            print(f"  peak RSS {rss1 / 1024:,.0f} MB (after imports {rss0 / 1024:,.0f} MB)")
            path.unlink()
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def bench_tokenize(repeat: int) -> None:
    from transformers import AutoTokenizer

    from tunewiz.core.bundled import ensure_default_model
    from tunewiz.core.data import chat_template_for, normalize, render
    from tunewiz.core.data.pipeline import BATCH
    from tunewiz.core.data.template import tokenize_rendered

    tok = AutoTokenizer.from_pretrained(ensure_default_model())
    rows = json.loads((SHARED / "alpaca_en_demo.json").read_text())
    template = chat_template_for(tok)
    rendered = [
        render(normalize(r, "alpaca", {})[0]["messages"], tok, template) for r in rows * repeat
    ]
    texts = [t for t, _ in rendered]
    spans = [s for _, s in rendered]

    def run_direct():
        tok(texts, add_special_tokens=False)

    def run_ours():
        for i in range(0, len(texts), BATCH):  # the batch size tunewiz.core.data uses
            tokenize_rendered(texts[i : i + BATCH], spans[i : i + BATCH], tok, 100_000)

    # CPU time of this process (the tokenizer runs single-threaded here: TOKENIZERS_PARALLELISM
    # is false), so other work on a shared machine disturbs the ratio less than wall time would.
    wall: dict = {run_direct: [], run_ours: []}
    cpu: dict = {run_direct: [], run_ours: []}
    for _ in range(9):  # alternate, keep the best of each
        for fn in wall:
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[fn].append(time.perf_counter() - t0)
            cpu[fn].append(time.process_time() - c0)
    direct, ours = min(cpu[run_direct]), min(cpu[run_ours])
    wall_ratio = min(wall[run_direct]) / min(wall[run_ours])
    n_tok = sum(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"])
    print(f"tokenization of {len(texts):,} rendered rows ({n_tok:,} tokens):")
    print(f"  tokenizer(texts) directly: {len(texts) / direct:,.0f} rows/s (CPU time)")
    print(
        f"  tunewiz.core.data (batched, with masking labels): {len(texts) / ours:,.0f} rows/s = {direct / ours:.0%} of direct (wall time: {wall_ratio:.0%})"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument(
        "--repeat", type=int, default=3, help="copies of the 999 alpaca rows to tokenize"
    )
    args = ap.parse_args()
    bench_parse(args.size_mb)
    bench_tokenize(args.repeat)


if __name__ == "__main__":
    main()
