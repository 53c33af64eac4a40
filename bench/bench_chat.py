"""Chat speed on the bundled default model: cached load, time to first token, streaming vs bare generate.

    .venv/bin/python bench/bench_chat.py [--new-tokens 64] [--repeats 3]

The baseline is a bare `model.generate` on the same token ids with the same
greedy settings and stop tokens, measured in this same process and interleaved
with the streaming runs, so machine load affects both alike. Target: streaming
at >= 0.95x the bare tokens/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TUNEWIZ_HOME", str(ROOT / ".tunewiz-home"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

PROMPT = "Write a long story about a dragon who learns to bake bread."


def cold_process_load() -> tuple[float, float]:
    """(import seconds, load seconds) in a fresh interpreter: what `tunewiz chat default` pays."""
    code = (
        "import time; t0=time.perf_counter(); import torch, transformers; from tunewiz.core.loading import load_for_chat;"
        "t1=time.perf_counter(); load_for_chat('default', device='cpu'); t2=time.perf_counter();"
        "print(t1-t0, t2-t1)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    imp, load = map(float, out.stdout.split()[-2:])
    return imp, load


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default); 1 is steadiest on a busy box",
    )
    args = parser.parse_args()
    if args.threads:
        # Before torch loads: OpenMP reads it for every thread, the generation threads included.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    from tunewiz.core.bundled import ensure_default_model

    ensure_default_model()  # converted once; everything below measures the cached folder
    imp, load = cold_process_load()
    print(
        f"cached load, fresh process: import torch+transformers {imp:.2f} s, load_for_chat('default') {load:.2f} s"
    )

    import torch

    from tunewiz.core.chat import ChatSession, GenerationSettings
    from tunewiz.core.loading import load_for_chat

    t = time.perf_counter()
    loaded = load_for_chat("default", device="cpu")
    print(f"cached load, warm process: {time.perf_counter() - t:.2f} s")

    settings = GenerationSettings(greedy=True, max_new_tokens=args.new_tokens)
    session = ChatSession(loaded, settings=settings)
    ids = session._encode(PROMPT)
    eot = session._eot

    def generate_once() -> tuple[int, float]:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = loaded.model.generate(
                **ids, **settings.generate_kwargs(), eos_token_id=eot, pad_token_id=eot[0]
            )
        return out.shape[1] - ids["input_ids"].shape[1], time.perf_counter() - t0

    def bare() -> tuple[int, float]:
        # In a thread, like ChatSession's generation: on a loaded machine torch's CPU
        # kernels in the main thread ran up to 10x slower than in a fresh thread
        # (OpenMP thread teams competing with other processes), which would flatter
        # streaming. Same thread setup on both sides isolates the streamer's cost.
        result: list[tuple[int, float]] = []
        worker = threading.Thread(target=lambda: result.append(generate_once()))
        worker.start()
        worker.join()
        return result[0]

    def streamed() -> tuple[int, float, float]:
        session.reset()
        t0 = time.perf_counter()
        first = None
        for _ in session.stream(PROMPT):
            if first is None:
                first = time.perf_counter() - t0
        r = session.last_reply
        return r.tokens, r.seconds, first if first is not None else float("nan")

    bare()  # warm-up: first generate call pays one-off setup
    bare_rates, stream_rates, ttfts = [], [], []
    for _ in range(args.repeats):
        n, s = bare()
        bare_rates.append(n / s)
        n2, s2, first = streamed()
        stream_rates.append(n2 / s2)
        ttfts.append(first)
        if n2 != n:
            print(f"warning: token counts differ (bare {n}, streamed {n2})")
    n_main, s_main = generate_once()
    b, st = statistics.median(bare_rates), statistics.median(stream_rates)
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"(for reference: bare generate in the main thread: {n_main / s_main:.1f} tokens/s)")
    print(
        f"prompt: {ids['input_ids'].shape[1]} tokens; reply: {n} tokens (greedy), {args.repeats} repeats"
    )
    print(f"time to first token (streaming chat): {statistics.median(ttfts) * 1000:.0f} ms median")
    print(f"bare model.generate: {b:.1f} tokens/s median, {max(bare_rates):.1f} best")
    print(f"streaming ChatSession: {st:.1f} tokens/s median, {max(stream_rates):.1f} best")
    # Best-of is the figure least disturbed by other processes on a shared machine.
    print(
        f"streaming / bare: {st / b:.3f}x median, {max(stream_rates) / max(bare_rates):.3f}x best-of"
        " (target >= 0.95x)"
    )


if __name__ == "__main__":
    main()
