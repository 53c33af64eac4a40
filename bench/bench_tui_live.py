"""Does the live panel keep up with a run that logs every step?

A writer thread plays a trainer logging every step at a high rate (far above a
real run's) while TrainLiveScreen runs headless under a Pilot with its real
0.5 s timer. Printed:
  - lag: steps written but not yet shown, measured right after each tick and
    at the end (0 = caught up);
  - per-tick update cost (read new metrics, status, log, checkpoints, widgets)
    and chart redraw cost;
  - UI responsiveness: the worst delay of a 20 ms heartbeat timer;
  - the baseline the incremental reader avoids: re-reading and parsing the whole
    metrics.jsonl every tick, as a ratio to the incremental tick;
  - reopening a long run: the one catch-up read from offset 0.

    .venv/bin/python bench/bench_tui_live.py [--steps 3000] [--rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual.app import App  # noqa: E402

from tunewiz.tui.screens.train_live import TrainLiveScreen  # noqa: E402
from tunewiz.tui.widgets.loss_chart import LossChart  # noqa: E402
from tunewiz.tui.widgets.resource_meter import ResourceSample  # noqa: E402


def row(step: int) -> str:
    r = {
        "step": step,
        "epoch": step / 1000,
        "loss": 3.0 * 0.999**step + 0.5,
        "learning_rate": 2e-4,
        "grad_norm": 1.0,
        "tokens_per_s": 1234.5,
        "elapsed_s": step * 0.01,
        "peak_mem_bytes": 3_000_000_000,
    }
    if step % 100 == 0:
        r["eval_loss"] = r["loss"] + 0.1
    return json.dumps(r) + "\n"


def make_run(root: Path, total: int) -> Path:
    run = root / "bench-run"
    run.mkdir()
    (run / "config.toml").write_text('name = "bench-run"\n')
    (run / "estimate.json").write_text('{"total_bytes": 4000000000}')
    status = {
        "state": "running",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "step": 0,
        "total_steps": total,
    }
    (run / "status.json").write_text(json.dumps(status))
    (run / "metrics.jsonl").write_text("")
    (run / "train.log").write_text("")
    return run


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Bench(App):
    def __init__(self, run: Path):
        super().__init__()
        self.run = run

    def on_mount(self) -> None:
        sample = [ResourceSample("cpu", 10.0, 1, 2, "CPU")]
        self.push_screen(TrainLiveScreen(self.run, sampler=lambda: sample))


async def live(steps: int, rate: float) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-live-"))
    run = make_run(root, steps)
    written = [0]
    done = threading.Event()

    def writer() -> None:
        # one appended line per step, flushed, like the trainer's callback
        interval = 1.0 / rate
        start = time.perf_counter()
        with open(run / "metrics.jsonl", "a") as m, open(run / "train.log", "a") as log:
            for step in range(1, steps + 1):
                m.write(row(step))
                m.flush()
                log.write(f"step {step}\n")
                log.flush()
                written[0] = step
                delay = start + step * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
        done.set()

    app = Bench(run)
    tick_ms: list[float] = []
    lag_after_tick: list[int] = []
    render_ms: list[float] = []
    beats: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        chart = screen.query_one(LossChart)
        original_poll = screen.poll

        def timed_poll() -> None:
            t0 = time.perf_counter()
            before = chart.redraws
            original_poll()
            tick_ms.append((time.perf_counter() - t0) * 1000)
            shown = int(chart.steps[-1]) if chart.steps else 0
            lag_after_tick.append(written[0] - shown)
            if chart.redraws != before:
                # a headless app paints rarely: draw here whenever the chart asked to be
                t1 = time.perf_counter()
                chart.render()
                render_ms.append((time.perf_counter() - t1) * 1000)

        screen.poll = timed_poll  # the interval timer calls the attribute
        for timer in list(screen._timers):
            timer.stop()
        screen.set_interval(screen.poll_interval, screen.poll)

        last = [time.perf_counter()]

        def beat() -> None:
            now = time.perf_counter()
            beats.append((now - last[0]) * 1000 - 20)
            last[0] = now

        app.set_interval(0.02, beat)
        # baseline: the same app idle (nothing written) for as long as the writes will take
        await asyncio.sleep(min(5.0, steps / rate))
        idle_beats = beats[:]
        beats.clear()
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        while not done.is_set():
            await asyncio.sleep(0.05)
        await asyncio.sleep(screen.poll_interval * 2.5)  # two more ticks
        await pilot.pause()
        final_lag = written[0] - (int(chart.steps[-1]) if chart.steps else 0)
        # the baseline: re-read and parse the whole file, as a naive panel would each tick
        t0 = time.perf_counter()
        reps = 5
        for _ in range(reps):
            with open(run / "metrics.jsonl") as fh:
                [json.loads(line) for line in fh]
        full_ms = (time.perf_counter() - t0) * 1000 / reps
    return {
        "steps": steps,
        "rate": rate,
        "ticks": len(tick_ms),
        "lag_after_tick_max": max(lag_after_tick),
        "final_lag": final_lag,
        "tick_ms_mean": statistics.mean(tick_ms),
        "tick_ms_p95": pct(tick_ms, 0.95),
        "tick_ms_max": max(tick_ms),
        "render_ms_mean": statistics.mean(render_ms) if render_ms else float("nan"),
        "render_ms_max": max(render_ms) if render_ms else float("nan"),
        "renders": len(render_ms),
        "lag_after_tick": lag_after_tick,
        "heartbeat_late_ms_max": max(beats) if beats else float("nan"),
        "heartbeat_late_ms_p95": pct(beats, 0.95) if beats else float("nan"),
        "idle_late_ms_max": max(idle_beats) if idle_beats else float("nan"),
        "idle_late_ms_p95": pct(idle_beats, 0.95) if idle_beats else float("nan"),
        "full_reread_ms": full_ms,
        "points": len(chart.steps),
    }


async def reopen(steps: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-reopen-"))
    run = make_run(root, steps)
    with open(run / "metrics.jsonl", "w") as fh:
        fh.writelines(row(s) for s in range(1, steps + 1))
    t0 = time.perf_counter()
    app = Bench(run)
    beats: list[float] = []
    async with app.run_test(size=(120, 40)):
        screen = app.screen
        while not isinstance(screen, TrainLiveScreen) or not screen.is_mounted:
            await asyncio.sleep(0.001)
            screen = app.screen
        first_frame = (time.perf_counter() - t0) * 1000
        last = time.perf_counter()
        while screen.catching_up:  # how stuck is the event loop meanwhile?
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            beats.append((now - last) * 1000 - 10)
            last = now
        history = (time.perf_counter() - t0) * 1000
        chart = screen.query_one(LossChart)
        assert len(chart.steps) == steps
        t1 = time.perf_counter()
        chart.render()
        render = (time.perf_counter() - t1) * 1000
        points = len(chart.steps)
    return {
        "steps": steps,
        "first_frame_ms": first_frame,
        "history_ms": history,
        "stall_ms_max": max(beats) if beats else 0.0,
        "render_ms": render,
        "points": points,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500.0, help="logged steps per second")
    parser.add_argument("--reopen-steps", type=int, default=100_000)
    args = parser.parse_args()

    r = asyncio.run(live(args.steps, args.rate))
    print(f"live panel, run logging every step: {r['steps']} steps at {r['rate']:.0f} steps/s")
    print(f"  ticks (0.5 s timer)              {r['ticks']}")
    print(f"  lag right after a tick, max      {r['lag_after_tick_max']} steps")
    print(f"  lag at the end                   {r['final_lag']} steps")
    print(
        f"  per-tick update cost             mean {r['tick_ms_mean']:.2f} ms, "
        f"p95 {r['tick_ms_p95']:.2f} ms, max {r['tick_ms_max']:.2f} ms"
    )
    print(
        f"  chart redraw ({r['points']} points)    mean {r['render_ms_mean']:.2f} ms, "
        f"max {r['render_ms_max']:.2f} ms over {r['renders']} redraws"
    )
    print(
        f"  20 ms heartbeat late by          p95 {r['heartbeat_late_ms_p95']:.1f} ms, "
        f"max {r['heartbeat_late_ms_max']:.1f} ms"
    )
    print(
        f"    baseline, same app idle        p95 {r['idle_late_ms_p95']:.1f} ms, "
        f"max {r['idle_late_ms_max']:.1f} ms"
    )
    print(
        f"  baseline: re-read whole file     {r['full_reread_ms']:.2f} ms per tick at the end "
        f"= {r['full_reread_ms'] / r['tick_ms_mean']:.1f}x the mean incremental tick"
    )
    empty = asyncio.run(reopen(0))
    small = asyncio.run(reopen(2000))
    o = asyncio.run(reopen(args.reopen_steps))
    print(f"reopen a run with {o['steps']} logged steps (catch-up read from offset 0, once)")
    print(f"  start to screen mounted, baseline: empty run      {empty['first_frame_ms']:.0f} ms")
    print(f"  start to screen mounted, 2000 steps (read inline) {small['first_frame_ms']:.0f} ms")
    print(f"  start to screen mounted, {o['steps']} steps          {o['first_frame_ms']:.0f} ms")
    print(f"  whole history on the chart after {o['history_ms']:.0f} ms (read in a worker thread)")
    print(f"  event loop stalled at most {o['stall_ms_max']:.0f} ms meanwhile (10 ms sleeps)")
    print(f"  chart redraw ({o['points']} points) {o['render_ms']:.2f} ms")


if __name__ == "__main__":
    main()
