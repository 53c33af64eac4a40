"""tunewiz.core.runs: reading runs from their directory, without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tunewiz.core import runlock, runs
from tunewiz.core.errors import UserError


def make_run(root, name, **status):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.toml").write_text("name = 'x'\n")
    runs.write_status(d, **status)
    return d


def test_metrics_tail_reads_only_new_lines_and_waits_for_partial_ones(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    tail = runs.MetricsTail(path)
    assert tail.read_new() == [{"step": 1, "loss": 2.0}]
    assert tail.read_new() == []
    with open(path, "a") as fh:
        fh.write('ss": 1.5}\n{"step": 3, "loss": 1.0}\n')
    assert tail.read_new() == [{"step": 2, "loss": 1.5}, {"step": 3, "loss": 1.0}]
    assert tail.offset == path.stat().st_size


def test_metrics_tail_missing_file_then_created(tmp_path):
    tail = runs.MetricsTail(tmp_path)  # a run dir works too
    assert tail.read_new() == []
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    assert tail.read_new() == [{"step": 1}]


def test_tail_log_returns_last_lines_of_a_large_file(tmp_path):
    lines = [f"line {i} " + "x" * 50 for i in range(20000)]
    (tmp_path / "train.log").write_text("\n".join(lines) + "\n")
    assert runs.tail_log(tmp_path, 3) == lines[-3:]
    assert runs.tail_log(tmp_path, 0) == []
    assert runs.tail_log(tmp_path / "nope", 5) == []


def test_write_status_is_atomic_and_merges(tmp_path):
    runs.write_status(tmp_path, state="running", step=1)
    runs.write_status(tmp_path, step=2)
    st = runs.read_status(tmp_path)
    assert st["state"] == "running" and st["step"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_list_runs_newest_first_and_dead_process_shows_died(tmp_path):
    # A process that has exited: its pid is no longer alive.
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    now = time.time()
    make_run(
        tmp_path,
        "old",
        state="finished",
        created_at=now - 100,
        started_at=now - 100,
        ended_at=now - 50,
    )
    make_run(
        tmp_path,
        "ghost",
        state="running",
        pid=proc.pid,
        host=runs.this_host(),
        created_at=now - 10,
        started_at=now - 10,
        step=5,
        total_steps=10,
    )
    live = make_run(
        tmp_path,
        "live",
        state="running",
        pid=os.getpid(),
        host=runs.this_host(),
        created_at=now,
        started_at=now - 20,
        step=5,
        total_steps=10,
        start_step=0,
        first_step_at=now - 10,
        last_loss=1.25,
    )
    infos = runs.list_runs(tmp_path)
    assert [i.name for i in infos] == ["live", "ghost", "old"]
    by = {i.name: i for i in infos}
    assert by["ghost"].state == "died" and "without writing a final status" in by["ghost"].error
    assert by["old"].state == "finished" and by["old"].elapsed_s == pytest.approx(50, abs=1)
    assert by["live"].state == "running" and by["live"].progress == 0.5
    assert by["live"].eta_s == pytest.approx(12.5, abs=2)  # steps 2..5 in 10 s, 5 to go
    assert json.loads(json.dumps(by["live"].to_json()))["last_loss"] == 1.25
    assert runs.read_run(live).last_loss == 1.25


def test_resolve_run_by_name_or_path_and_unknown_lists_runs(tmp_path):
    d = make_run(tmp_path, "alpha", state="finished")
    assert runs.resolve_run("alpha", tmp_path) == d
    assert runs.resolve_run(str(d), tmp_path / "elsewhere") == d
    with pytest.raises(UserError) as err:
        runs.resolve_run("beta", tmp_path)
    assert "beta" in str(err.value) and "alpha" in str(err.value)


def test_stop_run_requests_a_stop_and_refuses_finished_runs(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # The worker is named by its pid and start time (a pid alone may be reused).
        d = make_run(
            tmp_path,
            "r",
            state="running",
            pid=sleeper.pid,
            pid_started_at=runlock.process_start_time(sleeper.pid),
            host=runs.this_host(),
        )
        runs.stop_run(d)
        assert (d / runs.STOP_FILE).exists()
        assert sleeper.wait(timeout=10) != 0  # SIGTERM reached the process
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
    done = make_run(tmp_path, "done", state="finished")
    with pytest.raises(UserError, match="not running"):
        runs.stop_run(done)


def test_core_runs_does_not_import_torch():
    code = "import sys, tunewiz.core.runs; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (float("nan"), "-"),
        (-5.0, "-"),
        (0, "0s"),
        (42.9, "42s"),
        (60, "1m00s"),
        (187, "3m07s"),
        (3600 + 5 * 60 + 59, "1h05m"),
        (2000 * 3600, "83.3d"),
    ],
)
def test_format_duration_by_hand(seconds, shown):
    assert runs.format_duration(seconds) == shown
    assert runs.format_duration(None, missing="–") == "–"


def test_estimate_bytes_come_from_total_bytes_only(tmp_path):
    path = tmp_path / runs.ESTIMATE_FILE
    path.write_text(json.dumps({"total_bytes": 4_200_000_000, "memory": {"total_gib": 9}}))
    assert runs.read_estimate_bytes(tmp_path) == 4_200_000_000
    for damaged in ({"memory": {"total_bytes": 5}}, {"note": "unknown model"}, {"total_bytes": -1}):
        path.write_text(json.dumps(damaged))
        assert runs.read_estimate_bytes(tmp_path) is None, damaged
    path.unlink()
    assert runs.read_estimate_bytes(tmp_path) is None


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct-lora"),
        ("/models/my model (v2)/", "my-model-v2-lora"),
        ("a" * 60, "a" * 40 + "-lora"),
        ("/", "model-lora"),
        ("???", "model-lora"),
    ],
)
def test_default_run_name_is_a_safe_folder_name(model, name):
    assert runs.default_run_name(model, "lora") == name
