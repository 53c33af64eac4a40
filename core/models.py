"""Naming and loading models: the bundled default, a local folder, a GGUF file, or a hub id."""

from __future__ import annotations

import logging
from pathlib import Path

from core import bundled, paths
from core.errors import UserError

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


def load_tokenizer(name: str, *, trust_remote_code: bool = False):
    """The model's tokenizer, with a pad token (training batches need one)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            resolve_model(name), trust_remote_code=trust_remote_code
        )
    except OSError as exc:
        raise UserError(
            f"could not load the tokenizer of {name!r}: {exc}",
            hint="offline? give a local model folder instead of a hub id",
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
