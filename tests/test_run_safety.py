"""Runs that nothing can break (issue 9, part A): detach first, one owner per run, resume edge
cases, disk full, private folders, a stop in the first instant, a terminal that hangs up.

Real detached runs on a tiny random Llama (tests/conftest.py). The runs that must still be
preparing when something hits them get a dataset big enough to take longer than that.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_train import make_cfg, memorisable_rows, wait_done

from tunewiz.core import runlock, runs
from tunewiz.core.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
SLOW_ROWS = 60_000  # several seconds of tokenizing on two busy cores


@pytest.fixture(autouse=True)
def one_thread_per_run(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # several runs share two cores


def slow_data(tmp: Path) -> Path:
    path = tmp / "big.jsonl"
    if not path.exists():
        with open(path, "w", encoding="utf-8") as fh:
            for i in range(SLOW_ROWS):
                fh.write(
                    json.dumps(
                        {"instruction": f"Question {i} about zebras?", "output": f"Answer {i}."}
                    )
                    + "\n"
                )
    return path


def slow_cfg(tmp: Path, model: Path, name: str):
    cfg = make_cfg(tmp, model, name, max_steps=1)
    cfg.data.data = str(slow_data(tmp))
    cfg.data.validation_split = 0.0
    return cfg


def wait_state(run_dir: Path, wanted: set[str], timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = runs.read_status(run_dir)
        if st.get("state") in wanted:
            return st
        time.sleep(0.05)
    raise AssertionError(f"{run_dir.name} never reached {wanted}: {runs.read_status(run_dir)}")


# -- data preparation -----------------------------------------------------------------


def test_parallel_preparation_gives_exactly_the_single_process_result(tiny_model_dir, tmp_path):
    from tunewiz.core.config import DataConfig
    from tunewiz.core.data import prepare
    from tunewiz.core.loading import load_tokenizer

    rows = [{"instruction": f"Q{i} " + "word " * (i % 90), "output": f"A{i}"} for i in range(5000)]
    rows += rows[:50]  # duplicates across batches
    rows[3000] = {"instruction": "no answer"}  # a bad row in the second batch
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(data=str(path), max_seq_len=64, validation_split=0.05)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    one = prepare(cfg, tokenizer, num_proc=1)
    two = prepare(cfg, tokenizer, num_proc=2)
    assert one.train == two.train and one.eval == two.eval
    assert one.report.to_dict() == two.report.to_dict()
    assert one.report.problem_counts.get("duplicate", 0) > 0
    assert one.report.problem_counts.get("too_long", 0) > 0


def test_rows_hint_counts_json_lines_without_reading_them(tmp_path):
    from tunewiz.core.config import DataConfig
    from tunewiz.core.data import rows_hint

    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"}')  # no final newline
    assert rows_hint(DataConfig(data=str(path))) == 3
    (tmp_path / "d.json").write_text("[]")
    assert rows_hint(DataConfig(data=str(tmp_path / "d.json"))) is None


# -- detach first -------------------------------------------------------------------


def test_launch_returns_fast_and_the_worker_prepares_with_progress(tiny_model_dir, tmp_path):
    from tunewiz.core.train import launch

    cfg = slow_cfg(tmp_path, tiny_model_dir, "prep")
    t0 = time.time()
    run_dir = launch(cfg)
    took = time.time() - t0
    assert took < 5, took  # no tokenizing here: under 1 s even on two cores at load 10
    assert not (run_dir / "data" / "train.jsonl").exists()
    st = wait_state(run_dir, {"preparing"})
    assert st["rows_total"] == SLOW_ROWS
    info = runs.read_run(run_dir)
    assert info.state == "preparing" and info.progress_text().startswith("data ")
    info = wait_done(run_dir)
    assert info.state == "finished", info.error
    st = runs.read_status(run_dir)
    assert st["rows_done"] == SLOW_ROWS and st["prepare_s"] > 0
    log = "\n".join(runs.tail_log(run_dir, 200))  # what `tunewiz logs -f` shows
    assert "preparing the data: " in log and f"/{SLOW_ROWS} (" in log and "ETA" in log
    assert "data prepared" in log
    assert_private(run_dir)


def test_runs_lists_a_preparing_run_with_rows_done(tmp_path, capsys, monkeypatch):
    import argparse

    import tunewiz.cli.train as cli_train

    run_dir = tmp_path / "prep"
    run_dir.mkdir()
    runs.write_status(
        run_dir,
        state="preparing",
        pid=os.getpid(),
        pid_started_at=runlock.process_start_time(os.getpid()),
        host=runs.this_host(),
        rows_done=500,
        rows_total=2000,
        prepare_started_at=time.time() - 10,
    )
    monkeypatch.setenv("COLUMNS", "200")
    assert cli_train.cmd_runs(argparse.Namespace(runs_dir=str(tmp_path), json=False)) == 0
    out = capsys.readouterr().out
    # 30 s left: shown as `30s` (\b: not the end of `0m30s`)
    assert "preparing" in out and "data 500/2000 25%" in out and re.search(r"\b30s\b", out)


def assert_private(run_dir: Path) -> None:
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    for path in run_dir.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_a_bad_row_found_while_preparing_fails_the_run_with_the_checks_message(
    tiny_model_dir, tmp_path
):
    from tunewiz.core.data import prepare
    from tunewiz.core.loading import load_tokenizer
    from tunewiz.core.train import launch

    rows = memorisable_rows(300) + [{"instruction": "an answer is missing"}]
    cfg = make_cfg(tmp_path, tiny_model_dir, "bad-row")
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg.data.data = str(path)
    cfg.data.on_bad_rows = "stop"
    with pytest.raises(UserError) as direct:
        prepare(cfg.data, load_tokenizer(str(tiny_model_dir)))
    run_dir = launch(cfg)  # the bad row lies past the rows the launcher looks at
    info = wait_done(run_dir)
    assert info.state == "failed"
    assert info.error == str(direct.value) and "bad.jsonl:301" in info.error
    log_text = (run_dir / runs.LOG_FILE).read_text(encoding="utf-8")
    assert "bad.jsonl:301" in log_text and "Traceback" not in log_text  # a message, not a crash


# -- one owner per run ------------------------------------------------------------------


def test_a_run_has_one_owner_and_a_stop_while_preparing_stops_it_cleanly(tiny_model_dir, tmp_path):
    from tunewiz.core.train import launch, resume

    run_dir = launch(slow_cfg(tmp_path, tiny_model_dir, "owned"))
    st = wait_state(run_dir, {"preparing"})
    with pytest.raises(UserError) as err:
        resume(run_dir)
    assert f"in use by the worker with pid {st['pid']}" in str(err.value)
    second = subprocess.run(
        [sys.executable, "-m", "tunewiz.core.train.worker", str(run_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 3 and "in use by the worker" in second.stdout
    assert runs.read_status(run_dir)["pid"] == st["pid"]  # the second one changed nothing

    runs.stop_run(run_dir)
    info = wait_done(run_dir)
    assert info.state == "stopped" and "before the first checkpoint" in info.note
    assert not (run_dir / runs.STOP_FILE).exists()
    assert not (run_dir / "data" / "train.jsonl").exists()
    with pytest.raises(UserError) as err:
        resume(run_dir)
    assert "no complete checkpoint" in str(err.value)


def test_a_stop_in_the_first_instant_stops_the_run_never_kills_it(tiny_model_dir, tmp_path):
    from tunewiz.core.train import launch

    run_dir = launch(make_cfg(tmp_path, tiny_model_dir, "instant"))
    runs.stop_run(run_dir)  # the worker has not even imported anything yet
    info = wait_done(run_dir)
    assert info.state == "stopped", info.error
    assert not (run_dir / runs.STOP_FILE).exists()
    assert "before the first checkpoint" in info.note or (run_dir / "checkpoint-1").is_dir()


def test_two_launches_racing_for_one_name_get_two_folders(tmp_path):
    from tunewiz.core.train.launcher import create_run_dir

    made, errors = [], []

    def make():
        try:
            run_dir, fd = create_run_dir(tmp_path, "same")
            made.append(run_dir.name)
            os.close(fd)
        except Exception as exc:  # noqa: BLE001 - the test reports any
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(made) == sorted(["same"] + [f"same-{n}" for n in range(2, 9)])


def test_a_reused_pid_is_died_and_never_signalled(tmp_path):
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for lock in (True, False):
            run_dir = tmp_path / f"stale-{lock}"
            run_dir.mkdir()
            if lock:  # a run of this version: its lock is free, the worker is gone
                os.close(runlock.acquire(run_dir))
            runs.write_status(
                run_dir,
                state="running",
                pid=stranger.pid,  # the pid now names another program
                pid_started_at=time.time() - 3600,
                host=runs.this_host(),
            )
            info = runs.read_run(run_dir)
            assert info.state == "died"
            assert not runs.signal_worker(run_dir, runs.read_status(run_dir), signal.SIGTERM)
            with pytest.raises(UserError):
                runs.stop_run(run_dir)
        assert stranger.poll() is None  # never signalled
    finally:
        stranger.kill()
        stranger.wait()


# -- resume edge cases --------------------------------------------------------------


def test_resume_from_the_last_step_trains_nothing_and_keeps_final(tiny_model_dir, tmp_path):
    from tunewiz.core.train import launch, resume

    run_dir = launch(make_cfg(tmp_path, tiny_model_dir, "done", max_steps=4, save_steps=2))
    assert wait_done(run_dir).state == "finished"
    steps = [m["step"] for m in runs.read_metrics(run_dir) if "loss" in m]

    # status.json lost: the folder still says finished, and resume refuses.
    status = json.loads((run_dir / runs.STATUS_FILE).read_text())
    (run_dir / runs.STATUS_FILE).unlink()
    assert runs.read_run(run_dir).state == "finished"
    with pytest.raises(UserError, match="already finished"):
        resume(run_dir)

    # Interrupted after the last checkpoint: an existing final/ is kept as it is.
    (run_dir / "final" / "MARK").write_text("kept")
    runs.write_status(run_dir, **(status | {"state": "stopped"}))
    resume(run_dir)
    assert wait_done(run_dir).state == "finished"
    assert (run_dir / "final" / "MARK").read_text() == "kept"

    # ... and a missing final/ is written from the last checkpoint, without another step.
    shutil.rmtree(run_dir / "final")
    runs.write_status(run_dir, state="failed")
    resume(run_dir)
    info = wait_done(run_dir)
    assert info.state == "finished" and info.step == 4, info.error
    assert (run_dir / "final" / "adapter_model.safetensors").is_file()
    assert (run_dir / "final" / "tokenizer_config.json").is_file()
    assert not (run_dir / "final" / "optimizer.pt").exists()
    assert [m["step"] for m in runs.read_metrics(run_dir) if "loss" in m] == steps


# -- disk -----------------------------------------------------------------------------


def test_disk_full_from_any_library_is_the_disk_full_outcome(tmp_path):
    from tunewiz.core.train.failure import describe_failure

    plain = Exception("IO error: No space left on device (os error 28)")  # tokenizers' kind
    assert describe_failure(plain, tmp_path).startswith("disk full")
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert describe_failure(outer, tmp_path).startswith("disk full")
    assert not describe_failure(RuntimeError("other"), tmp_path).startswith("disk full")


def test_disk_check_counts_the_tokenizer_each_checkpoint_holds(
    tiny_model_dir, tmp_path, monkeypatch
):
    from collections import namedtuple

    from tunewiz.core.train import disk
    from tunewiz.core.train.preflight import model_arch

    cfg = make_cfg(tmp_path, tiny_model_dir, "disk", save_total_limit=2)
    arch = model_arch(cfg, str(tiny_model_dir))
    assert arch is not None
    ckpt, final = disk.checkpoint_bytes(cfg, arch)
    tok = disk.tokenizer_bytes(str(tiny_model_dir))
    assert tok > 1_000_000  # tokenizer.json of the real tokenizer
    kept = 3  # the limit, plus the one being written
    # Enough for everything but the tokenizer copies (one per checkpoint and in final/).
    free = kept * ckpt + final + disk.data_bytes(cfg) + (kept + 1) * 64 * 1024
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 0, free))
    with pytest.raises(UserError, match="not enough disk space"):
        disk.check_disk_space(cfg, arch, tmp_path, model_path=str(tiny_model_dir))


# -- a terminal that hangs up -------------------------------------------------------------


@pytest.mark.slow
def test_a_terminal_hanging_up_at_any_moment_never_loses_the_run(tiny_model_dir, tmp_path):
    procs = {}
    for delay in (0.5, 2.0, 5.0):
        name = f"hup-{delay}"
        cfg = slow_cfg(tmp_path, tiny_model_dir, name)
        cfg.save(tmp_path / f"{name}.toml")
        master, slave = os.openpty()
        launcher = subprocess.Popen(
            [sys.executable, "-m", "tunewiz", "train", str(tmp_path / f"{name}.toml")],
            cwd=ROOT,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,  # its own session and process group, like an SSH login
        )
        os.close(slave)
        procs[name] = (launcher, master, time.time(), delay)
    states = {}
    for name, (launcher, master, t0, delay) in sorted(procs.items(), key=lambda kv: kv[1][3]):
        time.sleep(max(0.0, t0 + delay - time.time()))
        states[name] = runs.read_status(Path(tmp_path / "runs" / name)).get("state")
        os.close(master)  # the terminal is gone ...
        try:
            os.killpg(launcher.pid, signal.SIGHUP)  # ... and its session hangs up
        except ProcessLookupError:
            pass  # the launcher had already detached the run and exited
    for name, (launcher, *_rest) in procs.items():
        launcher.wait(timeout=120)
        info = wait_done(tmp_path / "runs" / name)
        assert info.state == "finished", (name, info.error)
    # Each hang-up came before training began: while checking, starting or preparing.
    assert all(s in (None, "starting", "preparing") for s in states.values()), states
