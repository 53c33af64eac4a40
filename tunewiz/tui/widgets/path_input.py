"""A path field that completes file and folder names as you type (right arrow accepts)."""

from __future__ import annotations

import os
from pathlib import Path

from textual.suggester import Suggester


class PathSuggester(Suggester):
    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        return complete_path(value)


def complete_path(value: str) -> str | None:
    """The first directory entry that extends `value` (folders end in `/`), or None."""
    if not value or value.startswith(("http://", "https://")):
        return None
    expanded = os.path.expanduser(value)
    folder, prefix = os.path.split(expanded)
    try:
        names = sorted(os.listdir(folder or "."))
    except OSError:
        return None
    for name in names:
        if name.startswith(prefix) and name != prefix and not name.startswith("."):
            full = os.path.join(folder, name)
            suffix = name[len(prefix) :] + ("/" if Path(full).is_dir() else "")
            return value + suffix
    return None
