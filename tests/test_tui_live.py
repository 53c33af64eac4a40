"""The live training panel against a fake-but-realistic run directory.

The test plays the trainer: it writes status.json, appends metrics.jsonl and
train.log lines and creates checkpoint folders while the screen runs, the way
tunewiz.core.train's worker does. Polling is driven by calling `poll()` (the timer
would do the same) so nothing depends on wall-clock timing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import Log, ProgressBar, Static

from tunewiz.core.runlock import process_start_time
from tunewiz.core.runs import MetricsTail, write_status
from tunewiz.tui.screens.train_live import ConfirmStop, TrainLiveScreen
from tunewiz.tui.widgets.loss_chart import LossChart, decimate
from tunewiz.tui.widgets.resource_meter import ResourceMeter, ResourceSample
from tunewiz.tui.widgets.run_feed import LogFollower, StatusWatcher

FIXED = [ResourceSample("cpu", 37.0, 6_400_000_000, 24_000_000_000, "CPU")]


def fixed_sampler():
    return FIXED


def metric_row(step: int, eval_every: int = 20) -> dict:
    row = {
        "step": step,
        "epoch": round(step / 100, 4),
        "loss": round(3.0 * 0.98**step + 0.5, 4),
        "learning_rate": 2e-4 * (1 - step / 200),
        "grad_norm": 1.1,
        "tokens_per_s": 1234.0,
        "elapsed_s": step * 1.5,
        "peak_mem_bytes": 3_100_000_000,
    }
    if step % eval_every == 0:
        row["eval_loss"] = round(3.0 * 0.985**step + 0.6, 4)
    return row


def append_metrics(run_dir: Path, steps) -> None:
    with open(run_dir / "metrics.jsonl", "a") as fh:
        for s in steps:
            fh.write(json.dumps(metric_row(s)) + "\n")


def add_checkpoint(run_dir: Path, step: int, eval_loss: float | None = None) -> None:
    d = run_dir / f"checkpoint-{step}"
    d.mkdir()
    (d / "adapter_config.json").write_text("{}")
    (d / "adapter_model.safetensors").write_bytes(b"")  # weights: never loaded here
    history = [{"step": step, "loss": metric_row(step)["loss"]}]
    if eval_loss is not None:
        history.append({"step": step, "eval_loss": eval_loss})
    (d / "trainer_state.json").write_text(json.dumps({"log_history": history}))


def make_run(root: Path, *, steps: int = 60, total: int = 200, pid: int | None = None) -> Path:
    run_dir = root / "demo-run"
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text('name = "demo-run"\n')
    (run_dir / "estimate.json").write_text(json.dumps({"total_bytes": 4_200_000_000}))
    write_status(
        run_dir,
        state="running",
        pid=pid or os.getpid(),
        pid_started_at=process_start_time(pid or os.getpid()),  # as the launcher records it
        host=socket.gethostname(),
        step=steps,
        total_steps=total,
        method="lora",
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
    )
    append_metrics(run_dir, range(1, steps + 1))
    with open(run_dir / "train.log", "w") as fh:
        for s in range(1, steps + 1, 5):
            fh.write(f"step {s} loss {metric_row(s)['loss']:.4f}\n")
    add_checkpoint(run_dir, 20, 2.3)
    add_checkpoint(run_dir, 40, 2.1)
    return run_dir


class LiveApp(App):
    def __init__(self, run_dir: Path, **kw):
        super().__init__()
        self.run_dir, self.kw = run_dir, kw

    def on_mount(self) -> None:
        self.push_screen(
            TrainLiveScreen(self.run_dir, sampler=fixed_sampler, poll_interval=3600, **self.kw)
        )


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def test_first_frame_shows_whole_history(tmp_path):
    run_dir = make_run(tmp_path)
    app = LiveApp(run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        chart = screen.query_one(LossChart)
        assert chart.steps == list(range(1, 61))
        assert chart.eval_steps == [20, 40, 60]
        assert "running" in text_of(screen, "#live-title")
        assert "step 60/200" in text_of(screen, "#live-eta")
        # ETA from logged time: 1.5 s/step x 140 steps left = 3m30s
        assert "ETA 3m30s" in text_of(screen, "#live-eta")
        assert screen.query_one(ProgressBar).progress == 60
        assert "2.9/3.9 GiB est" in text_of(screen, "#live-memory")  # 3.1e9/4.2e9 bytes
        ckpts = text_of(screen, "#live-checkpoints")
        assert "checkpoint-20" in ckpts and "checkpoint-40" in ckpts and "best,last" in ckpts
        log = screen.query_one(Log)
        assert log.lines[-1] == "step 56 loss 1.4678"
        assert "CPU" in str(screen.query_one(ResourceMeter).render())


async def test_follows_a_growing_run(tmp_path):
    run_dir = make_run(tmp_path)
    app = LiveApp(run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        chart = screen.query_one(LossChart)
        # the trainer logs more steps, a half-written line, a new checkpoint and log lines
        append_metrics(run_dir, range(61, 101))
        with open(run_dir / "metrics.jsonl", "a") as fh:
            fh.write('{"step": 101, "lo')
        write_status(run_dir, step=100)
        add_checkpoint(run_dir, 100, 1.9)
        with open(run_dir / "train.log", "a") as fh:
            fh.write("saving checkpoint-100\n")
        screen.poll()
        await pilot.pause()
        assert chart.steps[-1] == 100 and len(chart.steps) == 100
        assert "step 100/200" in text_of(screen, "#live-eta")
        assert "ETA 2m30s" in text_of(screen, "#live-eta")
        assert screen.query_one(ProgressBar).progress == 100
        assert "checkpoint-100" in text_of(screen, "#live-checkpoints")
        assert screen.query_one(Log).lines[-1] == "saving checkpoint-100"
        # a checkpoint caught half-written (no trainer state yet) shows up once it is complete
        (run_dir / "checkpoint-120").mkdir()
        screen.poll()
        assert "checkpoint-120" not in text_of(screen, "#live-checkpoints")
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            (run_dir / "checkpoint-120" / name).write_text("{}")
        screen.poll()
        assert "checkpoint-120" not in text_of(screen, "#live-checkpoints")
        (run_dir / "checkpoint-120" / "trainer_state.json").write_text("{}")
        for _ in range(4):
            screen.poll()
        await pilot.pause()
        assert "checkpoint-120" in text_of(screen, "#live-checkpoints")
        # the rest of the half-written line arrives: counted once, not lost
        with open(run_dir / "metrics.jsonl", "a") as fh:
            fh.write('ss": 0.7, "elapsed_s": 151.5}\n')
        screen.poll()
        assert chart.steps[-1] == 101 and chart.losses[-1] == 0.7
        assert screen.rows_seen == 101
        # the run finishes: state shown, no ETA
        write_status(run_dir, state="finished", step=200)
        screen.poll()
        await pilot.pause()
        assert "finished" in text_of(screen, "#live-title")
        assert "ETA" not in text_of(screen, "#live-eta")
        assert any("has finished" in str(n.message) for n in app._notifications)


async def test_a_dead_trainer_is_reported(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    run_dir = make_run(tmp_path, pid=proc.pid)
    app = LiveApp(run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert "died" in text_of(app.screen, "#live-title")


async def test_stop_asks_then_stops_the_trainer(tmp_path):
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_dir = make_run(tmp_path, pid=trainer.pid)
        app = LiveApp(run_dir)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("s")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmStop)
            await pilot.press("n")  # changed their mind: nothing happens
            await pilot.pause()
            assert isinstance(app.screen, TrainLiveScreen)
            assert not (run_dir / "STOP").exists() and trainer.poll() is None
            await pilot.press("s", "y")
            await pilot.pause()
            assert (run_dir / "STOP").exists()
            assert trainer.wait(timeout=10) == -signal.SIGTERM
    finally:
        trainer.kill()


async def test_detach_leaves_training_running_and_reopen_replays(tmp_path):
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_dir = make_run(tmp_path, pid=trainer.pid)

        class Host(App):
            def on_mount(self):
                self.push_screen(TrainLiveScreen(run_dir, sampler=fixed_sampler))

        app = Host()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("d")  # the live screen is the only screen: the app exits
            await pilot.pause()
        assert app.return_code == 0
        assert trainer.poll() is None and not (run_dir / "STOP").exists()
        append_metrics(run_dir, range(61, 81))
        # reopening reads the whole file again from the start
        app2 = LiveApp(run_dir)
        async with app2.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert app2.screen.query_one(LossChart).steps == list(range(1, 81))
    finally:
        trainer.kill()


async def test_chat_key_opens_the_latest_checkpoint(tmp_path):
    run_dir = make_run(tmp_path)
    app = LiveApp(run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.screen.latest_checkpoint() == "checkpoint-40"
        await pilot.press("c")
        await pilot.pause()
        from tunewiz.tui.screens.chat import ChatScreen

        assert isinstance(app.screen, ChatScreen)
        assert app.screen.checkpoint == "checkpoint-40"


def test_followers_read_only_what_is_new(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read_new() == []
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')
    assert [r["step"] for r in tail.read_new()] == [1, 2]
    with open(path, "a") as fh:
        fh.write('ep": 3}\n')
    assert [r["step"] for r in tail.read_new()] == [3]
    assert tail.read_new() == []

    log = tmp_path / "train.log"
    log.write_text("x" * 100 + "\nlast line\n")
    follower = LogFollower(log, first_bytes=20)
    assert follower.read_new() == ["last line"]  # the cut first line is dropped
    with open(log, "a") as fh:
        fh.write("progress 1\rprogress 2\nno newline yet")
    assert follower.read_new() == ["progress 2"]

    status = StatusWatcher(tmp_path)
    assert status.poll() is False
    (tmp_path / "status.json").write_text('{"state": "running"}')
    assert status.poll() is True and status.poll() is False


def test_decimate_keeps_ends_and_bounds_points():
    xs = list(range(10_000))
    dx, dy = decimate(xs, xs, 100)
    assert len(dx) == 100 and dx[0] == 0 and dx[-1] == 9_999
    assert decimate(xs[:50], xs[:50], 100) == (xs[:50], xs[:50])


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_live_snapshot(tmp_path, snap_compare, size):
    # pid = this process (alive), figures from fixed metrics: no clock, no live load
    run_dir = make_run(tmp_path)
    write_status(run_dir, state="running")
    assert snap_compare(LiveApp(run_dir), terminal_size=size)


def test_gpu_load_comes_from_nvml_when_a_gpu_answers(monkeypatch):
    import types

    from tunewiz.tui.widgets import resource_meter

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"h{i}",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=87),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=60 * 10**9, total=80 * 10**9),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    (sample,) = resource_meter.default_sampler()()
    assert (sample.kind, sample.util_pct, sample.mem_used) == ("gpu", 87.0, 60 * 10**9)
    shown = str(resource_meter.render_samples([sample]))
    assert "GPU0" in shown and "87%" in shown and "VRAM" in shown and "55.9/74.5 GiB" in shown

    def no_driver():
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=no_driver))
    (sample,) = resource_meter.default_sampler()()
    assert sample.kind == "cpu" and sample.mem_total > 0


async def test_a_run_preparing_its_data_shows_rows_done_and_eta(tmp_path):
    run_dir = make_run(tmp_path, steps=0)
    now = time.time()
    write_status(
        run_dir,
        state="preparing",
        step=0,
        total_steps=0,
        rows_done=500,
        rows_total=2000,
        prepare_started_at=now - 10,  # 50 rows/s: 1500 rows to go take 30 s
    )
    app = LiveApp(run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert "preparing" in text_of(app.screen, "#live-title")
        eta = text_of(app.screen, "#live-eta")
        assert "preparing the data: 500/2000 rows (25%)" in eta and (
            "ETA 30s" in eta or "ETA 29s" in eta
        )
        assert app.screen.query_one("#live-progress", ProgressBar).percentage == 0.25


async def test_preference_metrics_next_to_the_loss(tmp_path):
    run_dir = make_run(tmp_path)
    row = metric_row(61) | {
        "rewards/chosen": 0.25,
        "rewards/rejected": -1.5,
        "rewards/margins": 1.75,
        "rewards/accuracies": 0.875,
    }
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    app = LiveApp(run_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        from rich.console import Console

        console = Console(width=100, record=True, file=open(os.devnull, "w"))
        console.print(app.screen.query_one("#live-stats", Static).content)
        stats = console.export_text()
        assert "chosen +0.250" in stats and "rejected -1.500" in stats
        assert "margin +1.750" in stats and "accuracy 88%" in stats
