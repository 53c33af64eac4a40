"""Naming models: what the user's model or run name points at, and whether it can be used here.

The bundled default, a local folder, a GGUF file or a hub id becomes what
`from_pretrained` takes; a hub model is checked to be cached or reachable; a run
name becomes its folder; the trust_remote_code rule for run folders lives here.
No torch or transformers: the launcher's quick checks and the eval plan use this.
Loading the weights and tokenizers is `tunewiz.core.loading`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tunewiz.core import bundled, paths
from tunewiz.core.errors import UserError

if TYPE_CHECKING:
    from tunewiz.core.config import RunConfig

log = logging.getLogger(__name__)


def resolve_model(name: str) -> str:
    """What `from_pretrained` should be given for the model the user named.

    The bundled default becomes its converted cache folder; a local folder stays
    a path; a `.gguf` file is converted once into the cache; anything else is
    taken as a hub id and left to `from_pretrained` (which fails offline).
    """
    name = name.strip()
    if not name:
        raise UserError("no model given", hint="name a hub id, a local folder or a .gguf file")
    if bundled.is_default(name):
        return str(bundled.ensure_default_model())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(
                "this folder has no config.json, so it is not a model folder", where=str(path)
            )
        return str(path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError("GGUF file not found", where=str(path))
        target = paths.models_cache_dir() / f"{path.stem}-from-gguf"
        if not (target / "config.json").is_file():
            bundled.convert_gguf(path.resolve(), target)
        return str(target)
    if path.exists() or name.startswith((".", "/", "~")):
        raise UserError("not a model folder or .gguf file", where=name)
    return name


HUB_TIMEOUT_S = 3.0
_hub_checked: tuple[float, str | None] | None = None  # (when, why unreachable) for a minute


def hub_unreachable(timeout: float = HUB_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub cannot be used now (None when it answers).

    One TCP connection with a short timeout, remembered for a minute: without it a
    laptop with no network waits about a minute in huggingface_hub's retries before
    a hub id fails. `HF_HUB_OFFLINE` and `HF_ENDPOINT` are respected.
    """
    import os
    import socket
    import time
    from urllib.parse import urlsplit

    global _hub_checked
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    if _hub_checked and time.monotonic() - _hub_checked[0] < 60:
        return _hub_checked[1]
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
        why = None
    except OSError as exc:
        why = (
            f"the hub ({url.hostname}) did not answer within {timeout:g} s ({exc.strerror or exc})"
        )
    _hub_checked = (time.monotonic(), why)
    return why


def check_model_here_or_reachable(name: str) -> None:
    """UserError when a hub model's files are not cached here and the hub cannot be reached:
    the launcher's quick check, so an offline start is refused instead of failing in the
    worker. Reads only the cache index (no transformers, no download)."""
    resolved = resolve_model(name)
    if Path(resolved).exists():
        return
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(resolved, "tokenizer_config.json"), str):
        return
    why = hub_unreachable()
    if why:
        raise UserError(
            f"the model {name!r} is not on this machine and {why}",
            where="model.model",
            hint="offline? download the model once while online, or give a local model folder "
            "instead of a hub id",
        )


def find_run(target: str | Path, runs_dir: str | Path = "runs") -> Path | None:
    """The run directory `target` names (a run folder, or a name under runs_dir), else None."""
    text = str(target).strip()
    if not text:
        return None
    for candidate in (Path(text).expanduser(), Path(runs_dir) / text):
        if (candidate / "config.toml").is_file():
            return candidate
    return None


#: What the user says to let a model run the Python code it ships (the chat/eval/export flag).
TRUST_FLAG = "--trust-remote-code"


def untrusted_code(cfg: RunConfig, trust_remote_code: bool) -> bool:
    """Whether a run's config.toml asks to execute its model's code without the user's say-so.

    A run folder can come from anyone (a shared tarball, a download); its config.toml saying
    `trust_remote_code = true` is not consent on this machine: only the flag given now is.
    Chat, compare and export load without the code (`trust_for_run`); eval refuses up front.
    """
    return bool(cfg.model.trust_remote_code) and not trust_remote_code


def trust_for_run(run_dir: Path, cfg: RunConfig, trust_remote_code: bool) -> bool:
    """Whether loading a run's model may execute the Python code it ships: only when the user
    says so now (`untrusted_code`'s rule); a config.toml asking for it is logged, not honoured.
    Used by chat, compare and export, so the rule is the same everywhere."""
    if untrusted_code(cfg, trust_remote_code):
        log.warning(
            "%s/config.toml sets trust_remote_code = true; not honoured without %s",
            run_dir,
            TRUST_FLAG,
        )
    return bool(trust_remote_code)
