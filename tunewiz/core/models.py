"""Naming and loading models: the bundled default, a local folder, a GGUF file, or a hub id."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewiz.core import bundled, paths
from tunewiz.core.data.template import chat_template_for
from tunewiz.core.errors import UserError

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


def _tokenizer_from(resolved: str, trust_remote_code: bool, local_only: bool):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        resolved, trust_remote_code=trust_remote_code, local_files_only=local_only
    )


def load_tokenizer(name: str, *, trust_remote_code: bool = False):
    """The model's tokenizer, with a pad token (training batches need one).

    A hub id is read from the local cache first; the hub is only asked when it
    answers within seconds, so being offline fails fast with a clear message.
    """
    resolved = resolve_model(name)
    try:
        try:
            tokenizer = _tokenizer_from(resolved, trust_remote_code, local_only=True)
        except OSError:
            if Path(resolved).is_dir():
                raise
            why = hub_unreachable()
            if why:
                raise UserError(
                    f"the tokenizer of {name!r} is not on this machine and {why}",
                    hint="offline? download the model once while online, or give a local "
                    "model folder instead of a hub id",
                ) from None
            tokenizer = _tokenizer_from(resolved, trust_remote_code, local_only=False)
    except OSError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # not a paragraph
        raise UserError(
            f"could not load the tokenizer of {name!r}: {first}",
            hint="offline? give a local model folder instead of a hub id",
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


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


#: How far another model's token count can be from the bundled tokenizer's, for the label.
APPROX_MARGIN = "±25%"


def counting_tokenizer(name: str) -> tuple[Any, str]:
    """(tokenizer, note) to count a dataset's tokens for `name`: its own tokenizer when it
    is here (note ""), else the bundled model's with a note saying the count is approximate.

    Estimating before renting must work offline for every catalog model, so a missing
    tokenizer is not an error here; the note says how far off the count may be.
    """
    try:
        return load_tokenizer(name), ""
    except UserError as exc:
        why = exc.message
    if bundled.is_default(name):
        raise UserError(why)
    note = (
        f"token counts are approximate ({APPROX_MARGIN}): counted with the bundled "
        f"SmolLM2 tokenizer because {why}"
    )
    return load_tokenizer(bundled.DEFAULT_MODEL_ID), note


# -- loading a model to chat with ------------------------------------------------


@dataclass
class LoadedModel:
    """A model ready to generate, with everything needed to prompt it as it was trained."""

    model: Any
    tokenizer: Any
    chat_template: str
    label: str  # "SmolLM2-135M-Instruct", "runs/x checkpoint-40", "runs/x base"
    context_length: int
    target: str = ""
    checkpoint: str | None = None  # "checkpoint-40", "final", "base", or None for a plain model
    run_dir: Path | None = None
    base_model: str = ""  # what the weights started from (the run's [model].model)
    method: str = "full"  # full | lora | qlora


def find_run(target: str | Path, runs_dir: str | Path = "runs") -> Path | None:
    """The run directory `target` names (a run folder, or a name under runs_dir), else None."""
    text = str(target).strip()
    if not text:
        return None
    for candidate in (Path(text).expanduser(), Path(runs_dir) / text):
        if (candidate / "config.toml").is_file():
            return candidate
    return None


def pick_device(device: str | None = None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# The dtype names configs and flags use; torch_dtype maps them (torch imported on call).
DTYPE_NAMES = ("bf16", "fp16", "fp32")


def torch_dtype(name: str) -> Any:
    """torch's dtype for `bf16`, `fp16` or `fp32`."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def _dtype_for(device: str):
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # half precision on a CPU is slower and less accurate


def _require(module: str, pip_name: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{why} needs the `{pip_name}` package", hint=f"pip install {pip_name}")


def bnb_config(model_cfg, dtype):
    """The BitsAndBytesConfig a QLoRA run trained with (from its [model] settings)."""
    from transformers import BitsAndBytesConfig

    _require("bitsandbytes", "bitsandbytes", "a QLoRA model (4-bit)")
    name = model_cfg.bnb_4bit_compute_dtype
    compute = torch_dtype(name) if name in DTYPE_NAMES else dtype
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model_cfg.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=model_cfg.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=compute,
    )


def load_causal_lm(name_or_path: str, *, device: str, dtype=None, trust_remote_code=False, **kw):
    """AutoModelForCausalLM.from_pretrained with user-facing errors and no progress bars."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    resolved = resolve_model(name_or_path)
    if "quantization_config" not in kw:
        kw["device_map"] = device
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            resolved, dtype=dtype or _dtype_for(device), trust_remote_code=trust_remote_code, **kw
        )
    except OSError as exc:
        raise UserError(
            f"could not load the model {name_or_path!r}: {exc}",
            hint="offline? give a local model folder or a .gguf file instead of a hub id",
        ) from None
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise UserError(
                f"{name_or_path!r} ships its own Python code: {exc}",
                hint="pass --trust-remote-code if you trust this model",
            ) from None
        raise
    if "quantization_config" in kw and not device.startswith("cuda"):
        model.to(device)
    model.eval()
    return model


def _load_tokenizer_from(path: str, fallback: str, trust_remote_code: bool):
    """The tokenizer saved with a checkpoint, else the base model's."""
    from transformers import AutoTokenizer

    folder = Path(path)
    if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    return load_tokenizer(fallback, trust_remote_code=trust_remote_code)


def _context_length(model, tokenizer) -> int:
    n = getattr(model.config, "max_position_embeddings", None) or 0
    limit = getattr(tokenizer, "model_max_length", 0) or 0
    if 0 < limit < 1_000_000:  # tokenizers without a limit report a huge sentinel
        n = min(n, limit) if n else limit
    return int(n or 2048)


def _chat_template(tokenizer) -> str:
    """The template training rendered the rows with (tunewiz.core.data's rule), so chat prompts alike."""
    template = chat_template_for(tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        log.warning("the tokenizer has no chat template; using ChatML")
        tokenizer.chat_template = template
    return template


def load_for_chat(
    target: str,
    checkpoint: str | None = None,
    *,
    runs_dir: str | Path = "runs",
    device: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load what the user wants to talk to.

    `target` is a run (name or folder) or a model (hub id, folder, .gguf, or
    `default`). For a run, `checkpoint` is best|last|final|N|checkpoint-N (default:
    final, else the last saved) or `base`: the run's starting model prompted with
    the run's chat template, for before/after comparisons.
    """
    device = pick_device(device)
    run_dir = find_run(target, runs_dir)
    if run_dir is None:
        if checkpoint not in (None, "", "base"):
            raise UserError(
                f"{target!r} is not a run, so it has no checkpoint {checkpoint!r}",
                where="--checkpoint",
                hint=f"runs are folders with a config.toml under {runs_dir}/",
            )
        model = load_causal_lm(target, device=device, trust_remote_code=trust_remote_code)
        tokenizer = load_tokenizer(target, trust_remote_code=trust_remote_code)
        label = Path(target).name if Path(target).exists() else target
        if bundled.is_default(target):
            label = "SmolLM2-135M-Instruct"
        return LoadedModel(
            model,
            tokenizer,
            _chat_template(tokenizer),
            label,
            _context_length(model, tokenizer),
            target=target,
            base_model=target,
        )
    return _load_run(run_dir, checkpoint, target, device, trust_remote_code)


def trust_for_run(run_dir: Path, cfg, trust_remote_code: bool) -> bool:
    """Whether loading a run's model may execute the Python code it ships: only when the user
    says so now (--trust-remote-code). A run folder can come from anyone (a shared tarball, a
    download); its config.toml saying `trust_remote_code = true` is not consent on this machine.
    Used by chat, compare and export (and eval), so the rule is the same everywhere."""
    if cfg.model.trust_remote_code and not trust_remote_code:
        log.warning(
            "%s/config.toml sets trust_remote_code = true; not honoured without "
            "--trust-remote-code",
            run_dir,
        )
    return bool(trust_remote_code)


def _recorded_template(run_dir: Path) -> str:
    """The chat template the launcher saved before training ("" when missing or damaged:
    the checkpoint's tokenizer carries it too)."""
    path = run_dir / "chat_template.jinja"
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        if path.exists():
            log.warning("ignoring %s: %s", path, exc)
        return ""
    return text if text.strip() else ""


def _load_run(
    run_dir: Path, which: str | None, target: str, device: str, trust: bool
) -> LoadedModel:
    from tunewiz.core.checkpoints import list_checkpoints, resolve_checkpoint
    from tunewiz.core.config import load_run_config

    cfg = load_run_config(run_dir)
    trust = trust_for_run(run_dir, cfg, trust)
    base_name = cfg.model.model
    method = cfg.model.method
    dtype = _dtype_for(device)
    checkpoints = list_checkpoints(run_dir)
    if which == "base":
        # The run's tokenizer carries the chat template it trained with; the base
        # model is prompted the same way so the comparison is fair.
        newest = checkpoints[-1].path if checkpoints else None
        tokenizer = (
            _load_tokenizer_from(str(newest), base_name, trust)
            if newest
            else load_tokenizer(base_name, trust_remote_code=trust)
        )
        recorded = _recorded_template(run_dir)
        if recorded:
            tokenizer.chat_template = recorded
        model = load_causal_lm(base_name, device=device, trust_remote_code=trust)
        return LoadedModel(
            model,
            tokenizer,
            _chat_template(tokenizer),
            f"{run_dir} base",
            _context_length(model, tokenizer),
            target=target,
            checkpoint="base",
            run_dir=run_dir,
            base_model=base_name,
            method="full",
        )
    if which:
        ckpt = resolve_checkpoint(run_dir, which)
    elif any("final" in c.tags for c in checkpoints):
        ckpt = resolve_checkpoint(run_dir, "final")
    else:
        ckpt = resolve_checkpoint(run_dir, "last")  # raises, listing what exists, when nothing does
    tokenizer = _load_tokenizer_from(str(ckpt.path), base_name, trust)
    if ckpt.is_adapter:
        _require("peft", "peft", "a LoRA checkpoint")
        from peft import PeftModel

        kw = {}
        if method == "qlora":
            kw["quantization_config"] = bnb_config(cfg.model, dtype)
        base = load_causal_lm(base_name, device=device, dtype=dtype, trust_remote_code=trust, **kw)
        if base.get_input_embeddings().weight.shape[0] < len(tokenizer):
            base.resize_token_embeddings(len(tokenizer))  # the run added tokens (e.g. a pad token)
        model = PeftModel.from_pretrained(base, str(ckpt.path))
        model.eval()
    else:
        model = load_causal_lm(str(ckpt.path), device=device, trust_remote_code=trust)
    return LoadedModel(
        model,
        tokenizer,
        _chat_template(tokenizer),
        f"{run_dir} {ckpt.name}",
        _context_length(model, tokenizer),
        target=target,
        checkpoint=ckpt.name,
        run_dir=run_dir,
        base_model=base_name,
        method=method if ckpt.is_adapter else "full",
    )
