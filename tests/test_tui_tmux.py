"""The real app in a real terminal: scripts/tmux_walk.sh drives it with tmux send-keys."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The environment running the tests, wherever it is: its interpreter and the
# console script pip installed beside it.
ENTRY_POINT = Path(sys.executable).parent / "tunewiz"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.skipif(not ENTRY_POINT.exists(), reason=f"no tunewiz entry point at {ENTRY_POINT}")
def test_tmux_walk_from_start_to_a_finished_run():
    env = {**os.environ, "PYTHON": sys.executable, "TUNEWIZ_BIN": str(ENTRY_POINT)}
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "tmux_walk.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tmux walk passed" in out.stdout
