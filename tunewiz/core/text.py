"""Text from outside (datasets, run folders, logs, model replies) made safe for a terminal.

A dataset row or a model reply can hold ESC sequences: OSC 52 writes the user's
clipboard, OSC 8 makes fake links, CSI moves the cursor and repaints what the user
believes they are reading. Every place that shows such text passes it through
`visible()`, which keeps it readable and harmless: each control character is
written out as an escape (`\\x1b`, `\\x07`, `\\x9b`), so nothing is lost or hidden.
Rich markup is not this module's business: callers keep printing through `Text`.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 controls except tab and newline, DEL, C1 controls, and the lone surrogates
# that `surrogateescape` decoding leaves for bytes that are not UTF-8 (printing one
# raises UnicodeEncodeError). Bidi overrides reorder what is shown ("Trojan source").
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\udc80-\udcff\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # the original byte
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object, *, newlines: bool = True) -> str:
    """`text` with every control character written as an escape; tabs and newlines kept
    (newlines escaped too with `newlines=False`, for one-line fields such as names)."""
    out = _UNSAFE.sub(_escape, str(text))
    return out if newlines else out.replace("\n", "\\n")


# JSON already escapes C0 controls; these it leaves raw with ensure_ascii=False.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def dumps_json(value: Any, **kw: Any) -> str:
    """json.dumps for a terminal: non-ASCII text stays readable, but DEL, C1 controls, bidi
    overrides and lone surrogates become \\u escapes (still the same JSON), and NaN/inf
    are refused (they are not JSON)."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, **kw)
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
