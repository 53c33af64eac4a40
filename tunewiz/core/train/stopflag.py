"""The stop request a worker carries (light: imported before anything heavy, so the signal
handlers are in place within the worker's first instant)."""

from __future__ import annotations

import signal

# The launcher starts the worker with these blocked; the worker unblocks them once its
# handlers are installed, so a stop in the run's first instant is served, never fatal.
EARLY_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


class StopFlag:
    """Set by SIGTERM/SIGINT in the worker; checked once per optimizer step."""

    def __init__(self) -> None:
        self.requested = False
        self.reason = ""

    def request(self, reason: str) -> None:
        self.requested = True
        self.reason = reason
