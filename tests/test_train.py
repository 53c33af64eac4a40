"""Training runs end to end on the CPU with a tiny Llama: methods, detach, stop/resume, failures.

Runs are real detached worker processes. To keep the wall time low on a small
machine, the module's fixture starts most runs at once and each test waits for
its own. Failures are injected with the test-only TUNEWIZ_FAULT variable
(core/train/callbacks.py): `oom@N`, `nan@N`, `enospc@N`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunewiz.core import runs
from tunewiz.core.config import RunConfig
from tunewiz.core.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 240


def memorisable_rows(n: int = 8) -> list[dict]:
    return [
        {
            "instruction": f"What is the secret word number {i}?",
            "input": "",
            "output": f"Secret {i} is zebra.",
        }
        for i in range(n)
    ]


def make_cfg(tmp: Path, model: Path, name: str, method: str = "lora", **training) -> RunConfig:
    data = tmp / "mem.json"
    if not data.exists():
        data.write_text(json.dumps(memorisable_rows()))
    cfg = RunConfig()
    cfg.name = name
    cfg.runs_dir = str(tmp / "runs")
    cfg.model.model = str(model)
    cfg.model.method = method
    cfg.data.data = str(data)
    cfg.data.validation_split = 2
    cfg.data.max_seq_len = 64
    t = cfg.training
    t.max_steps = 10
    t.per_device_train_batch_size = 2
    t.learning_rate = 3e-3 if method == "full" else 5e-3
    t.lr_scheduler_type = "constant"
    t.warmup_ratio = 0.0
    t.save_steps = t.eval_steps = 100
    for key, value in training.items():
        cfg.set(key, value)
    return cfg


def launch_with_env(cfg: RunConfig, **env) -> Path:
    from tunewiz.core.train import launch

    # Several runs share two cores: one thread each avoids oversubscription.
    env.setdefault("OMP_NUM_THREADS", "1")

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return launch(cfg)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def wait_done(run_dir: Path, timeout: float = WAIT_S) -> runs.RunInfo:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = runs.read_run(run_dir)
        if info.state not in runs.LIVE_STATES:
            return info
        time.sleep(0.5)
    raise AssertionError(
        f"{run_dir.name} still {info.state} after {timeout}s:\n"
        + "\n".join(runs.tail_log(run_dir, 40))
    )


def wait_step(run_dir: Path, step: int, timeout: float = WAIT_S) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = runs.read_status(run_dir)
        if st.get("state") not in runs.LIVE_STATES and st.get("state"):
            raise AssertionError(f"run ended early: {st}\n" + "\n".join(runs.tail_log(run_dir, 40)))
        if any(m.get("step", 0) >= step for m in runs.read_metrics(run_dir)):
            return
        time.sleep(0.2)
    raise AssertionError(f"never reached step {step}")


def losses(run_dir: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in runs.read_metrics(run_dir) if "loss" in m}


def loss_fell(run_dir: Path) -> bool:
    # Compare whole epochs (3 steps of 2 rows): single batches differ in difficulty.
    curve = list(losses(run_dir).values())
    return sum(curve[-3:]) / 3 < sum(curve[:3]) / 3 - 0.1


@pytest.fixture(scope="module")
def started(tiny_model_dir, tmp_path_factory):
    """Start the independent runs together; tests wait for their own."""
    tmp = tmp_path_factory.mktemp("train")
    out = {}
    out["full"] = launch_with_env(make_cfg(tmp, tiny_model_dir, "full", "full", max_steps=12))
    out["lora"] = launch_with_env(
        make_cfg(
            tmp,
            tiny_model_dir,
            "lora",
            "lora",
            max_steps=12,
            save_steps=3,
            eval_steps=3,
            save_total_limit=2,
            load_best_model_at_end=True,
        )
    )
    out["qlora"] = launch_with_env(make_cfg(tmp, tiny_model_dir, "qlora", "qlora", max_steps=12))
    out["oom"] = launch_with_env(make_cfg(tmp, tiny_model_dir, "oom"), TUNEWIZ_FAULT="oom@2")
    out["crash"] = launch_with_env(make_cfg(tmp, tiny_model_dir, "crash"), TUNEWIZ_FAULT="crash@3")
    out["nan"] = launch_with_env(
        make_cfg(tmp, tiny_model_dir, "nan", save_steps=2), TUNEWIZ_FAULT="nan@4"
    )
    out["enospc"] = launch_with_env(
        make_cfg(tmp, tiny_model_dir, "enospc", save_steps=2), TUNEWIZ_FAULT="enospc@4"
    )
    for name in ("ref", "run"):
        out[name] = launch_with_env(
            make_cfg(tmp, tiny_model_dir, name, max_steps=30, learning_rate=1e-2)
        )
    out["killed"] = launch_with_env(
        make_cfg(tmp, tiny_model_dir, "killed", max_steps=30, learning_rate=1e-2, save_steps=3)
    )
    ddp = make_cfg(tmp, tiny_model_dir, "ddp", max_steps=6)
    ddp.distributed.distributed = "ddp"
    ddp.distributed.num_processes = 2
    out["ddp"] = launch_with_env(ddp)
    out["tmp"] = tmp
    return out


@pytest.mark.slow
def test_stop_or_kill_then_resume_continues_the_same_curve(started, monkeypatch):
    # First in the module, so the stop and the kill land in the middle of their runs.
    from tunewiz.core.train import resume

    ref, run, killed = started["ref"], started["run"], started["killed"]
    wait_step(run, 3)
    runs.stop_run(run)
    wait_step(killed, 5)
    os.kill(runs.read_status(killed)["pid"], signal.SIGKILL)  # no chance to write anything

    info = wait_done(run)
    assert info.state == "stopped", info.error
    stopped_at = info.step
    assert 3 <= stopped_at < 30
    assert (run / f"checkpoint-{stopped_at}" / "trainer_state.json").is_file()
    assert not (run / runs.STOP_FILE).exists()
    dead = wait_done(killed)
    assert dead.state == "died" and dead.step < 30

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    resume(run)
    resume(killed)  # from its last complete checkpoint (save_steps = 3)
    assert wait_done(ref).state == "finished"
    for run_dir in (run, killed):
        info = wait_done(run_dir)
        assert info.state == "finished", info.error
        assert info.step == 30
        steps = [m["step"] for m in runs.read_metrics(run_dir) if "loss" in m]
        assert steps == list(range(1, 31))  # no duplicates, no gap
        # Same data order, RNG, optimizer and scheduler as the run that was never interrupted.
        a, b = losses(ref), losses(run_dir)
        assert all(math.isclose(a[s], b[s], rel_tol=1e-3) for s in range(1, 31)), (a, b)
    assert runs.read_status(killed)["resumed_from"] in {
        f"checkpoint-{n}" for n in (3, 6, 9, 12, 15, 18, 21, 24, 27)
    }


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_method_trains_and_loss_falls(started, method):
    run_dir = started[method]
    info = wait_done(run_dir)
    assert info.state == "finished", info.error + "\n" + "\n".join(runs.tail_log(run_dir, 30))
    assert info.step == 12 and info.total_steps == 12
    assert loss_fell(run_dir), losses(run_dir)
    rows = runs.read_metrics(run_dir)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 13))
    assert all(r["peak_mem_bytes"] > 0 and r["tokens_per_s"] > 0 for r in rows if "loss" in r)
    st = runs.read_status(run_dir)
    assert st["peak_mem_bytes"] > 0 and st["ended_at"] >= st["started_at"]
    final = run_dir / "final"
    assert (final / "chat_template.jinja").read_text() == (
        run_dir / "chat_template.jinja"
    ).read_text()
    assert (final / "tokenizer.json").is_file()
    adapter = (final / "adapter_config.json").is_file()
    assert adapter == (method != "full")
    # The config in the run dir is complete: loading it gives back the run's options.
    cfg = RunConfig.load(run_dir / "config.toml")
    assert cfg.model.method == method and cfg.training.max_steps == 12


@pytest.mark.slow
def test_lora_final_loads_with_plain_peft_and_best_checkpoint_rules(started, tiny_model_dir):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run_dir = started["lora"]
    assert wait_done(run_dir).state == "finished"
    # save_total_limit = 2: at most two checkpoints stay, and the best one is among them.
    ckpts = sorted(p.name for p in run_dir.glob("checkpoint-*"))
    state = json.loads((run_dir / "checkpoint-12" / "trainer_state.json").read_text())
    best = Path(state["best_model_checkpoint"]).name
    assert len(ckpts) <= 2 and best in ckpts and "checkpoint-12" in ckpts
    evals = {e["step"]: e["eval_loss"] for e in state["log_history"] if "eval_loss" in e}
    assert sorted(evals) == [3, 6, 9, 12]
    assert best == f"checkpoint-{min(evals, key=evals.get)}"
    # load_best_model_at_end: final/ holds the best checkpoint's adapter.
    final_w = load_file(run_dir / "final" / "adapter_model.safetensors")
    best_w = load_file(run_dir / best / "adapter_model.safetensors")
    assert final_w.keys() == best_w.keys()
    assert all(torch.equal(final_w[k], best_w[k]) for k in final_w)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, run_dir / "final")
    assert any("lora_A" in n for n, _ in model.named_parameters())


@pytest.mark.slow
def test_injected_oom_fails_with_advice(started):
    run_dir = started["oom"]
    info = wait_done(run_dir)
    assert info.state == "failed"
    assert info.error.startswith("out of memory")
    # The estimator's advice, in config words the user can act on.
    assert "Nearest configuration that fits" in info.error
    assert "per_device_train_batch_size" in info.error
    log = "\n".join(runs.tail_log(run_dir, 200))
    assert "Traceback" in log and "OutOfMemoryError" in log


@pytest.mark.slow
def test_any_crash_fails_with_the_summary_in_status_and_traceback_in_log(started):
    run_dir = started["crash"]
    info = wait_done(run_dir)
    assert info.state == "failed"
    assert info.error == "RuntimeError: injected crash (traceback in train.log)"
    log = "\n".join(runs.tail_log(run_dir, 200))
    assert "Traceback (most recent call last)" in log and "RuntimeError: injected crash" in log
    assert runs.read_status(run_dir)["ended_at"]


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(started):
    from safetensors.torch import load_file

    run_dir = started["nan"]
    info = wait_done(run_dir)
    assert info.state == "failed" and "NaN" in info.error
    # Weights went NaN after step 4; checkpoint-4 holds them, so only checkpoint-2 survives.
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    assert "checkpoint-2" in info.error
    weights = load_file(run_dir / "checkpoint-2" / "adapter_model.safetensors")
    assert all(bool(w.isfinite().all()) for w in weights.values())
    assert not (run_dir / "final").exists()


@pytest.mark.slow
def test_disk_full_while_saving_leaves_no_partial_checkpoint(started):
    from tunewiz.core.checkpoints import last_complete_checkpoint

    run_dir = started["enospc"]
    info = wait_done(run_dir)
    assert info.state == "failed" and "disk full" in info.error
    assert not (run_dir / "checkpoint-4").exists()
    assert last_complete_checkpoint(run_dir).name == "checkpoint-2"


@pytest.mark.slow
def test_detached_run_survives_sighup_to_the_launching_session(tiny_model_dir, tmp_path):
    cfg = make_cfg(tmp_path, tiny_model_dir, "hup", max_steps=30)
    cfg_path = tmp_path / "hup.toml"
    cfg.save(cfg_path)
    script = (
        "import argparse, sys; import tunewiz.cli.train as t; p = argparse.ArgumentParser(); "
        "t.register(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
    )
    # The launcher lives in its own session, like a login shell over SSH, and follows the log.
    launcher = subprocess.Popen(
        [sys.executable, "-c", script, "train", str(cfg_path), "--foreground"],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_dir = Path(cfg.runs_dir) / "hup"
    deadline = time.time() + WAIT_S
    while runs.read_status(run_dir).get("state") != "running":
        assert time.time() < deadline and launcher.poll() is None
        time.sleep(0.2)
    os.killpg(launcher.pid, signal.SIGHUP)  # the SSH connection drops
    assert launcher.wait(timeout=30) == -signal.SIGHUP
    info = wait_done(run_dir)
    assert info.state == "finished" and info.step == 30


@pytest.mark.slow
def test_two_process_cpu_ddp_run_completes(started):
    run_dir = started["ddp"]
    info = wait_done(run_dir)
    assert info.state == "finished", "\n".join(runs.tail_log(run_dir, 40))
    assert info.step == 6
    log = "\n".join(runs.tail_log(run_dir, 400))
    assert "[rank 0]" in log and "[rank 1]" in log
    assert (run_dir / "accelerate_config.yaml").is_file()
    assert (run_dir / "final" / "adapter_model.safetensors").is_file()


# -- validation before anything starts -----------------------------------------


def test_launch_rejects_missing_data_before_creating_the_run(tiny_model_dir, tmp_path):
    from tunewiz.core.train import launch

    cfg = make_cfg(tmp_path, tiny_model_dir, "bad")
    cfg.data.data = str(tmp_path / "nope.json")
    with pytest.raises(UserError):
        launch(cfg)
    assert not (tmp_path / "runs" / "bad").exists()


def test_launch_rejects_unknown_model(tmp_path):
    from tunewiz.core.train import launch

    cfg = RunConfig()
    cfg.runs_dir = str(tmp_path)
    cfg.model.model = str(tmp_path / "no-such-model")
    with pytest.raises(UserError) as err:
        launch(cfg)
    assert "no-such-model" in str(err.value)


def test_launch_checks_disk_space_for_checkpoints(tiny_model_dir, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from tunewiz.core.train import launch

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 1000))
    cfg = make_cfg(tmp_path, tiny_model_dir, "disk", "full")
    with pytest.raises(UserError) as err:
        launch(cfg)
    assert "disk space" in str(err.value) and "save_total_limit" in str(err.value)
    assert not (tmp_path / "runs" / "disk").exists()


def test_existing_run_name_gets_a_suffix(tmp_path):
    from tunewiz.core.train.launcher import unique_name

    (tmp_path / "x").mkdir()
    (tmp_path / "x-2").mkdir()
    assert unique_name(tmp_path, "x") == "x-3"
    assert unique_name(tmp_path, "y") == "y"
