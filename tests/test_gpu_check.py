"""bench/gpu_check.py keeps working: its reduced CPU form runs here and its output parses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_reduced_gpu_check_runs_on_the_cpu_and_writes_json_and_markdown(tmp_path):
    out = tmp_path / "check"
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--cpu", "--out", str(out),
         "--budget-s", "3000"],  # a busy CI machine must not skip cases
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["device"] == "cpu"
    by_kind: dict[str, list[dict]] = {}
    for r in report["results"]:
        by_kind.setdefault(r["kind"], []).append(r)
    memory = [r for r in by_kind["memory"] if r["status"] == "ok"]
    assert memory and all(r["measured_gib"] > 0 and "error_pct" in r for r in memory)
    # Liger cannot run on a CPU: the case is refused with the reason, and the check goes on.
    refused = [r for r in report["results"] if r["liger"]]
    assert refused and all(r["status"] == "refused" and "CUDA" in r["reason"] for r in refused)
    speed = {(r["path"], r["packing"]): r for r in by_kind["speed"] if r["status"] == "ok"}
    assert speed[("plain", False)]["tokens_per_s"] > 0
    assert speed[("tunewiz", True)]["tokens_per_s"] > 0
    assert report["targets"]["speed"]["tiny"]["ratio"] > 0
    assert report["targets"]["memory_cases_measured"] == len(memory)
    md = (out / "gpu_check.md").read_text()
    assert "| tiny | lora |" in md and "Training tokens/s" in md
    assert "Targets" in proc.stdout
