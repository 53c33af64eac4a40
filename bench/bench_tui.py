"""Wizard speed: time from process start to the first frame, and the estimate panel's update
latency after an option changes. Prints figures (targets: < 0.5 s and < 50 ms) with baselines
measured in the same run.

    .venv/bin/python bench/bench_tui.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TUNEWIZ_HOME", str(ROOT / ".tunewiz-home"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The child prints the wall-clock time at which the first screen is ready for input,
# and whether anything heavy was imported by then.
FIRST_FRAME = """
import sys, tempfile
from pathlib import Path
from tunewiz.tui.app import make_app
d = Path(tempfile.mkdtemp())
app = make_app(d / "state", d / "runs", resume=False, detect_gpus=False)
async def first_frame(pilot):
    import time
    heavy = [m for m in ("torch", "transformers", "datasets", "peft") if m in sys.modules]
    print(f"FRAME {time.time():.6f} HEAVY {','.join(heavy) or '-'}", flush=True)
    app.exit()
app.run(headless=True, size=(80, 24), auto_pilot=first_frame)
"""


HELLO = """
import time
from textual.app import App
from textual.widgets import Footer, Static
class Hello(App):
    def compose(self):
        yield Static("hello")
        yield Footer()
async def first_frame(pilot):
    print(f"FRAME {time.time():.6f} HEAVY -", flush=True)
    pilot.app.exit()
Hello().run(headless=True, size=(80, 24), auto_pilot=first_frame)
"""


def child_seconds(code: str) -> tuple[float, str]:
    start = time.time()
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        if line.startswith("FRAME "):
            parts = line.split()
            return float(parts[1]) - start, parts[3]
    return time.time() - start, "-"


def tmux_first_frame() -> float | None:
    """Process start to 'No runs yet' visible in a real (tmux) terminal, polled every 5 ms."""
    if not shutil.which("tmux"):
        return None
    session = f"bench-tui-{os.getpid()}"
    work = tempfile.mkdtemp()
    home = Path(work) / "home"
    home.mkdir()
    (home / "models").symlink_to(Path(os.environ["TUNEWIZ_HOME"]) / "models")
    cmd = f"cd {work} && TUNEWIZ_HOME={home} {ROOT / '.venv/bin/tunewiz'}; sleep 5"
    start = time.time()
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd])
    try:
        while time.time() - start < 20:
            pane = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
            if "No runs yet" in pane:
                return time.time() - start
            time.sleep(0.005)
        return None
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


async def estimate_latency(rounds: int) -> tuple[list[float], list[float]]:
    """(ms from a changed option to the repainted panel, ms for the bare estimate computation)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from textual.widgets import Input

    from tests.tui_pilot import settle
    from tunewiz.tui.app import make_app

    d = Path(tempfile.mkdtemp())
    app = make_app(d / "state", d / "runs", resume=False, detect_gpus=False, start_at="model")
    app.wizard.gpu = "RTX 4090"
    ui, idle, bare = [], [], []
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        field = screen.query_one("#opt-training-per_device_train_batch_size", Input)
        for i in range(rounds):
            before = screen.last_estimate
            bar = screen.query_one("#memory")
            t0 = time.perf_counter()
            field.value = str(1 + i % 16)
            # The Input's Changed message travels through the message queue to the screen,
            # which recomputes the estimate and updates the memory bar.
            while screen.last_estimate is before:
                await asyncio.sleep(0.0005)
            ui.append((time.perf_counter() - t0) * 1000)
            assert bar.total == screen.last_estimate.total
            await pilot.pause()  # until idle: repaint done, rent table worker back
            idle.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            screen.update_estimate()
            bare.append((time.perf_counter() - t0) * 1000)
    return ui, idle, bare


def load() -> str:
    try:
        return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except OSError:
        return ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    python_start = [
        child_seconds("print('FRAME', __import__('time').time(), 'HEAVY -')")[0]
        for _ in range(args.runs)
    ]
    hello = [child_seconds(HELLO)[0] for _ in range(args.runs)]
    frames = [child_seconds(FIRST_FRAME) for _ in range(args.runs)]
    frame_s = [f for f, _ in frames]
    heavy = sorted({h for _, h in frames})
    med = statistics.median
    print(load())
    print("first frame (headless, process start -> first screen ready):")
    print(f"  python startup baseline   median {med(python_start):.3f} s")
    print(f"  textual hello-world app   median {med(hello):.3f} s")
    print(
        f"  tunewiz first frame       median {med(frame_s):.3f} s  max {max(frame_s):.3f} s  "
        f"({med(frame_s) / med(hello):.2f}x the hello-world app; target < 0.5 s)"
    )
    print(f"  heavy modules loaded by the first frame: {', '.join(heavy)}")
    tmux = [t for t in (tmux_first_frame() for _ in range(args.runs)) if t is not None]
    if tmux:
        print(f"  in tmux (real terminal)   median {med(tmux):.3f} s  max {max(tmux):.3f} s")

    ui, idle, bare = asyncio.run(estimate_latency(40))
    ui.sort()
    print("estimate panel (batch size changed -> memory bar, recommendation, rent table):")
    print(f"  bare update_estimate()    median {med(bare):.1f} ms")
    print(
        f"  option change to new bar  median {med(ui):.1f} ms  p95 {ui[int(len(ui) * 0.95) - 1]:.1f} ms"
        f"  max {ui[-1]:.1f} ms  (target < 50 ms)"
    )
    print(f"  until idle (repainted, rent table back from its worker) median {med(idle):.1f} ms")


if __name__ == "__main__":
    main()
