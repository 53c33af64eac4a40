"""Errors that are the user's to fix, as opposed to bugs.

The CLI and the TUI show a `UserError` as a message (what is wrong, where, and
what to do) and never as a traceback. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: bad input, missing file, impossible option.

    `where` names the place (a file, `file:line`, a config field or a CLI flag);
    `hint` says what to do about it.
    """

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text
