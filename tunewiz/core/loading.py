"""Loading models and tokenizers: a tokenizer for training or counting, a model to chat with.

Everything here imports transformers (and torch) inside the function that needs it,
so importing this module stays cheap. What a name points at (a hub id, a folder,
a .gguf file, a run) is decided by `tunewiz.core.models`.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tunewiz.core import bundled
from tunewiz.core.data.template import chat_template_for
from tunewiz.core.errors import UserError
from tunewiz.core.models import find_run, hub_unreachable, resolve_model, trust_for_run

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import (
        BitsAndBytesConfig,
        GenerationMixin,
        PreTrainedModel,
        PreTrainedTokenizerBase,
    )

    from tunewiz.core.checkpoints import Checkpoint
    from tunewiz.core.config import ModelConfig, RunConfig

    class CausalLM(PreTrainedModel, GenerationMixin):
        """What AutoModelForCausalLM gives: a PreTrainedModel that can generate (transformers 5
        no longer makes every PreTrainedModel a GenerationMixin). For type checking only."""


log = logging.getLogger(__name__)


# -- tokenizers -------------------------------------------------------------------


def _tokenizer_from(
    resolved: str | Path, trust_remote_code: bool, local_only: bool
) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        resolved, trust_remote_code=trust_remote_code, local_files_only=local_only
    )


def _with_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Training batches and batched generation need a pad token: the end token stands in."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(name: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
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
    return _with_pad_token(tokenizer)


def load_checkpoint_tokenizer(
    path: str | Path, fallback: str, trust_remote_code: bool
) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a checkpoint, else the base model's (`fallback`)."""
    folder = Path(path)
    if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
        return _with_pad_token(_tokenizer_from(folder, trust_remote_code, local_only=False))
    return load_tokenizer(fallback, trust_remote_code=trust_remote_code)


#: How far another model's token count can be from the bundled tokenizer's, for the label.
APPROX_MARGIN = "±25%"


def counting_tokenizer(name: str) -> tuple[PreTrainedTokenizerBase, str]:
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


# -- dtypes, devices, packages ------------------------------------------------------

# The dtype names configs and flags use; torch_dtype maps them (torch imported on call).
DTYPE_NAMES = ("bf16", "fp16", "fp32")


def torch_dtype(name: str) -> torch.dtype:
    """torch's dtype for `bf16`, `fp16` or `fp32`."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def pick_device(device: str | None = None) -> str:
    """The device asked for, else the GPU when there is one, else the CPU."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype_for(device: str) -> torch.dtype:
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # half precision on a CPU is slower and less accurate


def _require(module: str, pip_name: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{why} needs the `{pip_name}` package", hint=f"pip install {pip_name}")


def bnb_config(model_cfg: ModelConfig, dtype: torch.dtype) -> BitsAndBytesConfig:
    """The BitsAndBytesConfig of a QLoRA run's [model] settings; `dtype` is the compute
    dtype when bnb_4bit_compute_dtype is auto. Training and loading a run share it."""
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


# -- a model to chat with -----------------------------------------------------------


def load_causal_lm(
    name_or_path: str,
    *,
    device: str,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    **kw: Any,
) -> CausalLM:
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


@dataclass
class LoadedModel:
    """A model ready to generate, with everything needed to prompt it as it was trained."""

    # Any: a CausalLM or a PeftModel around one, used through generate() (which PeftModel's
    # types do not declare) and a tokenizer whose rendering the callers know returns text.
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


def _context_length(model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase) -> int:
    n = getattr(model.config, "max_position_embeddings", None) or 0
    limit = getattr(tokenizer, "model_max_length", 0) or 0
    if 0 < limit < 1_000_000:  # tokenizers without a limit report a huge sentinel
        n = min(n, limit) if n else limit
    return int(n or 2048)


def _chat_template(tokenizer: PreTrainedTokenizerBase) -> str:
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
    checkpoints = list_checkpoints(run_dir)
    if which == "base":
        newest = checkpoints[-1].path if checkpoints else None
        return _load_run_base(run_dir, cfg, newest, target, device, trust)
    ckpt = resolve_checkpoint(run_dir, which)  # none named: final, else the last saved
    tokenizer = load_checkpoint_tokenizer(ckpt.path, cfg.model.model, trust)
    model = _load_checkpoint_model(cfg, ckpt, tokenizer, device, trust)
    return LoadedModel(
        model,
        tokenizer,
        _chat_template(tokenizer),
        f"{run_dir} {ckpt.name}",
        _context_length(model, tokenizer),
        target=target,
        checkpoint=ckpt.name,
        run_dir=run_dir,
        base_model=cfg.model.model,
        method=cfg.model.method if ckpt.is_adapter else "full",
    )


def _load_run_base(
    run_dir: Path, cfg: RunConfig, newest: Path | None, target: str, device: str, trust: bool
) -> LoadedModel:
    """The run's starting model, prompted as the run's checkpoints are (before/after)."""
    base_name = cfg.model.model
    # The run's tokenizer carries the chat template it trained with; the base
    # model is prompted the same way so the comparison is fair.
    tokenizer = (
        load_checkpoint_tokenizer(newest, base_name, trust)
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


def fit_embeddings(base: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Grow the base's embeddings to the run's tokenizer before its adapters are put on: the
    run may have added tokens (e.g. a pad token), and the adapter was saved at that size."""
    weight = cast("torch.Tensor", base.get_input_embeddings().weight)  # a Module's attribute
    if weight.shape[0] < len(tokenizer):
        base.resize_token_embeddings(len(tokenizer))


def _load_checkpoint_model(
    cfg: RunConfig,
    ckpt: Checkpoint,
    tokenizer: PreTrainedTokenizerBase,
    device: str,
    trust: bool,
) -> PreTrainedModel | PeftModel:
    """A checkpoint's weights: whole, or its LoRA adapters on the run's base model."""
    if not ckpt.is_adapter:
        return load_causal_lm(str(ckpt.path), device=device, trust_remote_code=trust)
    _require("peft", "peft", "a LoRA checkpoint")
    from peft import PeftModel

    dtype = _dtype_for(device)
    kw: dict[str, Any] = {}
    if cfg.model.method == "qlora":
        kw["quantization_config"] = bnb_config(cfg.model, dtype)
    base = load_causal_lm(
        cfg.model.model, device=device, dtype=dtype, trust_remote_code=trust, **kw
    )
    fit_embeddings(base, tokenizer)
    model = PeftModel.from_pretrained(base, str(ckpt.path))
    model.eval()
    return model
