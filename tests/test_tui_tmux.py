"""The real app in a real terminal: scripts/tmux_walk.sh drives it with tmux send-keys."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_tmux_walk_from_start_to_a_finished_run():
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "tmux_walk.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tmux walk passed" in out.stdout
