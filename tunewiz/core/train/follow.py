"""Following a run from the terminal that started it (`tunewiz train --foreground`, `--follow`).

Not a pure reader of the run folder (tunewiz.core.runs): a Ctrl-C here asks the
run to stop, and a second one detaches.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from tunewiz.core import runs
from tunewiz.core.errors import UserError


def follow(run_dir: str | Path, *, out: TextIO | None = None, poll_s: float = 0.5) -> str:
    """Stream train.log until the run ends and return its final state; Ctrl-C asks the run to
    stop and keeps streaming, a second Ctrl-C stops following (the run goes on stopping)."""
    out = out or sys.stdout
    path = Path(run_dir) / runs.LOG_FILE
    offset = 0
    stopping = False
    while True:
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            offset += len(chunk)
            if chunk:
                out.write(chunk.decode("utf-8", errors="replace"))
                out.flush()
            state = runs.read_run(run_dir).state
            if state not in runs.LIVE_STATES and not chunk:
                return state
            time.sleep(poll_s)
        except KeyboardInterrupt:
            if stopping:
                raise
            stopping = True
            out.write("\nstopping: saving a checkpoint (Ctrl-C again to detach)\n")
            try:
                runs.stop_run(run_dir)
            except UserError:
                pass
