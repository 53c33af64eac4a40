"""Benchmark the worker's data preparation (tunewiz.core.data.prepare): rows/s with one process against
all cores, on the same generated file in the same run.

    .venv/bin/python bench/bench_prepare.py                 # 1,000,000 rows, every core
    .venv/bin/python bench/bench_prepare.py --rows 200000 --procs 2

Generates short question/answer rows (the bundled sample's, made unique by a counter) in a
temporary folder, prepares them with the bundled model's tokenizer exactly as a run does
(chat template, masking, duplicates, split), checks both results are identical, and prints
wall and CPU time (this process and its helpers) for each. Asserts nothing: the target is
near-linear speed-up in cores, at least 1.6x on two. Note the machine's load (printed) when
comparing figures: other work on the same cores lowers the parallel figure.
"""

from __future__ import annotations

import argparse
import json
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


def write_rows(path: Path, n: int) -> None:
    base = [
        json.loads(line) for line in (ROOT / "tunewiz/profiles/datasets/lumen_isle.jsonl").open()
    ]
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as fh:
        for i in range(n):
            row = dict(base[i % len(base)])
            key = "instruction" if "instruction" in row else next(iter(row))
            row[key] = f"{row[key]} (#{i})"
            fh.write(json.dumps(row) + "\n")


def cpu_seconds() -> tuple[float, float]:
    """(this process, its reaped helper processes): user + system seconds."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def timed_prepare(cfg, tokenizer, num_proc: int):
    from tunewiz.core.data import prepare

    wall0, (me0, kids0) = time.perf_counter(), cpu_seconds()
    prepared = prepare(cfg, tokenizer, num_proc=num_proc)
    me1, kids1 = cpu_seconds()
    return prepared, time.perf_counter() - wall0, (me1 - me0, kids1 - kids0)


def digest(prepared) -> str:
    """A fingerprint of everything prepare() returns that training and the report use."""
    import hashlib

    h = hashlib.sha256()
    for rows in (prepared.train, prepared.eval or []):
        for row in rows:
            h.update(json.dumps(row, sort_keys=True).encode())
        h.update(b"|")
    h.update(json.dumps(prepared.report.to_dict(), sort_keys=True, default=str).encode())
    return h.hexdigest()


def main() -> int:
    from tunewiz.core.train.prepare import cpu_count

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="Rows to generate.")
    parser.add_argument(
        "--procs", type=int, default=cpu_count(), help="Processes for the parallel run."
    )
    args = parser.parse_args()

    from tunewiz.core.bundled import ensure_default_model
    from tunewiz.core.config import DataConfig
    from tunewiz.core.loading import load_tokenizer

    tokenizer = load_tokenizer(str(ensure_default_model()))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        write_rows(path, args.rows)
        cfg = DataConfig(data=str(path), max_seq_len=256, validation_split=0.01)
        print(f"{args.rows} rows, {path.stat().st_size / 2**20:.0f} MiB; load: {os.getloadavg()}")
        one, wall1, cpu1 = timed_prepare(cfg, tokenizer, 1)
        digest_one = digest(one)
        del one  # a million prepared rows take gigabytes: keep one result at a time
        many, walln, cpun = timed_prepare(cfg, tokenizer, args.procs)
        same = digest(many) == digest_one
    for label, wall, cpu in (("1 process", wall1, cpu1), (f"{args.procs} processes", walln, cpun)):
        print(
            f"{label:>12}: {args.rows / wall:10.0f} rows/s  wall {wall:7.1f} s  "
            f"cpu {sum(cpu):7.1f} s (main {cpu[0]:.1f} s, helpers {cpu[1]:.1f} s)"
        )
    print(f"speed-up: {wall1 / walln:.2f}x wall; identical results: {same}")
    print(f"load after: {os.getloadavg()}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
