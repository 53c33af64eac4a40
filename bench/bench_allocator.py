"""glibc malloc settings for the CPU training worker: speed (tokens per CPU-second) and peak RSS.

Each variant runs in a fresh process with its malloc environment: SmolLM2-135M's architecture
(random weights), LoRA r=16 on all linear layers, fp32, batch x seq of the quick-test preset,
the step HF Trainer takes (forward, backward, clip, AdamW, zero_grad). One warm-up step, then
the peak-RSS mark is reset and `--steps` steps are timed by the process's CPU time (user + sys,
all threads: page faults and mmap calls count), which a loaded machine disturbs far less than
wall-clock. Variants alternate, `--repeats` rounds, so drifting load hits them alike.

    .venv/bin/python bench/bench_allocator.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TUNEWIZ_HOME", str(ROOT / ".tunewiz-home"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS: dict[str, dict[str, str]] = {
    "glibc default": {},
    "mmap 128K": {"MALLOC_MMAP_THRESHOLD_": "131072"},
    "mmap 1M": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)},
    "mmap 4M": {"MALLOC_MMAP_THRESHOLD_": str(4 << 20)},
    "mmap 32M": {"MALLOC_MMAP_THRESHOLD_": str(32 << 20)},
    # glibc >= 2.35: malloc madvises its mmapped chunks for transparent huge pages (THP in
    # "madvise" mode), so a fresh 2 MiB region costs one page fault instead of 512
    # keep glibc's dynamic threshold, and hand freed heap pages back to the OS just before the
    # LM head runs (the step's peak is the logits and the loss on top of every activation)
    "trim before head": {"BENCH_TRIM_BEFORE_HEAD": "1"},
    "mmap 128K + THP": {
        "MALLOC_MMAP_THRESHOLD_": "131072",
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
    },
}
MALLOC_VARS = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_ARENA_MAX",
    "GLIBC_TUNABLES",
    "BENCH_TRIM_BEFORE_HEAD",
)


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def child(batch: int, seq: int, steps: int) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    import datasets  # noqa: F401 - the worker imports it
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, Trainer  # noqa: F401

    from tunewiz.core.bundled import ensure_default_model

    torch.manual_seed(0)
    baseline = _kib("VmRSS") * 1024
    cfg = AutoConfig.from_pretrained(ensure_default_model())
    cfg._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(
        model,
        LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear"),
    )
    model.train()
    if os.environ.get("BENCH_TRIM_BEFORE_HEAD"):
        from tunewiz.core.train.heap import trim_after_decoder

        assert trim_after_decoder(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        ids = torch.randint(0, cfg.vocab_size, (batch, seq))
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)

    step()  # warm-up: optimizer states exist from here on
    Path("/proc/self/clear_refs").write_text("5")
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return {
        "cpu_s": time.process_time() - c0,
        "wall_s": time.perf_counter() - t0,
        "tokens": batch * seq * steps,
        "peak": _kib("VmHWM") * 1024,
        "baseline": baseline,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=2, help="Rows per step (quick-test: 2).")
    parser.add_argument("--seq", type=int, default=256, help="Tokens per row (quick-test: 256).")
    parser.add_argument("--steps", type=int, default=3, help="Timed steps per process.")
    parser.add_argument("--repeats", type=int, default=2, help="Rounds over all variants.")
    parser.add_argument("--only", nargs="+", help="Variant names to run (default: all).")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    names = args.only or list(VARIANTS)
    results: dict[str, list[dict]] = {n: [] for n in names}
    base_env = {k: v for k, v in os.environ.items() if k not in MALLOC_VARS}
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else reversed(names):
            cmd = [sys.executable, __file__, "--child", str(args.batch), str(args.seq)]
            out = subprocess.run(
                [*cmd, str(args.steps)],
                env={**base_env, **VARIANTS[name]},
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            if out.returncode:
                print(f"{name}: FAILED\n{out.stderr[-2000:]}")
                return 1
            m = json.loads(out.stdout.strip().splitlines()[-1])
            results[name].append(m)
            print(
                f"  round {r + 1} {name:<14} {m['tokens'] / m['cpu_s']:7.1f} tok/CPU-s "
                f"peak {m['peak'] / 2**30:.3f} GiB  load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    ref = statistics.median(m["tokens"] / m["cpu_s"] for m in results[names[0]])
    print(f"\nLoRA b={args.batch} s={args.seq}, {args.steps} steps x {args.repeats} rounds")
    print(f"{'variant':<16}{'tok/CPU-s':>10}{'vs first':>9}{'peak GiB':>10}{'train GiB':>10}")
    for name in names:
        speed = statistics.median(m["tokens"] / m["cpu_s"] for m in results[name])
        peak = statistics.median(m["peak"] for m in results[name])
        train = statistics.median(m["peak"] - m["baseline"] for m in results[name])
        print(
            f"{name:<16}{speed:>10.1f}{speed / ref:>9.3f}{peak / 2**30:>10.3f}{train / 2**30:>10.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
