"""Loading a model for training: full, freeze (last blocks), LoRA, or QLoRA (4-bit base + LoRA)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tunewiz.core.config import ModelConfig, RunConfig
from tunewiz.core.errors import UserError
from tunewiz.core.loading import bnb_config, torch_dtype

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig, PeftModel
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def resolve_precision(precision: str, *, cuda: bool | None = None) -> str:
    """auto -> bf16 where the GPU supports it, else fp16 on a GPU, fp32 on the CPU."""
    import torch

    if cuda is None:
        cuda = torch.cuda.is_available()
    if precision != "auto":
        if precision in ("bf16", "fp16") and not cuda:
            # Mixed precision through autocast is GPU-only in Trainer; on a CPU fp32 is the honest choice.
            log.warning("precision %s needs a GPU; training in fp32 on the CPU", precision)
            return "fp32"
        return precision
    if not cuda:
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def target_modules(spec: str) -> str | list[str]:
    spec = spec.strip()
    if spec in ("", "all-linear"):
        return "all-linear"
    return [m.strip() for m in spec.split(",") if m.strip()]


def load_for_training(
    cfg: RunConfig, model_path: str, *, precision: str, adapters: bool = True
) -> PreTrainedModel | PeftModel:
    """The model ready for Trainer: weights loaded, adapters attached, checkpointing set.

    `adapters=False` leaves LoRA to the caller (TRL's trainers attach it from a peft_config).
    """
    m = cfg.model
    model: PreTrainedModel | PeftModel = prepare_for_training(
        _from_pretrained(m, model_path, load_kwargs(cfg, precision)), m
    )
    if m.method in ("lora", "qlora") and adapters:
        model = _attach_lora(model, m)
    if m.method == "freeze":
        freeze(model, m)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info(
        "trainable parameters: %s of %s (%.2f%%)", trainable, total, 100 * trainable / max(total, 1)
    )
    return model


def load_kwargs(cfg: RunConfig, precision: str) -> dict[str, Any]:
    """from_pretrained's arguments: the attention kernel, and the dtype (and 4-bit config) the
    method keeps the weights in."""
    import torch

    from tunewiz.core import kernels

    m = cfg.model
    kwargs: dict[str, Any] = {
        "trust_remote_code": m.trust_remote_code,
        "attn_implementation": kernels.for_run(m)[0],
    }
    if m.method == "qlora":
        return kwargs | _qlora_kwargs(cfg, precision)
    # Full fine-tuning keeps fp32 master weights (Trainer's autocast does bf16/fp16 math);
    # LoRA can hold the frozen base directly in the half dtype to save memory.
    if m.method == "lora" and precision != "fp32":
        kwargs["dtype"] = torch_dtype(precision)
    else:
        kwargs["dtype"] = torch.float32
    return kwargs


def _qlora_kwargs(cfg: RunConfig, precision: str) -> dict[str, Any]:
    """A 4-bit base whose matmuls run in bnb_4bit_compute_dtype (auto: the run's precision)."""
    import os

    import torch

    quantization = bnb_config(cfg.model, torch_dtype(precision))
    compute = quantization.bnb_4bit_compute_dtype
    if cfg.distributed.distributed in ("fsdp", "zero3"):
        # FSDP can only shard the packed 4-bit weights when they are stored in a float dtype.
        quantization.bnb_4bit_quant_storage = compute
    kwargs: dict[str, Any] = {"quantization_config": quantization, "dtype": compute}
    if torch.cuda.is_available():
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    return kwargs


def _from_pretrained(m: ModelConfig, model_path: str, kwargs: dict[str, Any]) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    try:
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except ImportError as exc:
        raise UserError(
            f"could not load the model: {exc}", where="model.attn_implementation"
        ) from None
    except (OSError, ValueError) as exc:
        raise UserError(
            f"could not load the model {m.model!r}: {exc}", where="model.model"
        ) from None
    return model


def prepare_for_training(model: PreTrainedModel, m: ModelConfig) -> PreTrainedModel:
    """No KV cache, gradient checkpointing (non-reentrant) as asked; QLoRA's k-bit preparation."""
    # The KV cache is useless while training and warns with gradient checkpointing.
    model.config.use_cache = False
    gc_kwargs = {"use_reentrant": False}
    if m.method == "qlora":
        from peft import prepare_model_for_kbit_training

        prepared: PreTrainedModel = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=m.gradient_checkpointing,
            gradient_checkpointing_kwargs=gc_kwargs,
        )
        return prepared
    if m.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
        if m.method == "lora":
            # Frozen embeddings give inputs without grad; checkpointed blocks then see no grad at all.
            model.enable_input_require_grads()
    return model


def _attach_lora(model: PreTrainedModel | PeftModel, m: ModelConfig) -> PeftModel:
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(m))
    except ValueError as exc:
        raise UserError(
            f"LoRA could not be attached: {exc}", where="model.lora_target_modules"
        ) from None


def lora_config(m: ModelConfig) -> LoraConfig:
    """PEFT's LoraConfig from the model options."""
    from peft import LoraConfig

    return LoraConfig(
        r=m.lora_r,
        lora_alpha=m.lora_alpha,
        lora_dropout=m.lora_dropout,
        target_modules=target_modules(m.lora_target_modules),
        task_type="CAUSAL_LM",
    )


def decoder_blocks(model: PreTrainedModel | PeftModel) -> list[torch.nn.Module]:
    """The transformer blocks in order: the ModuleList as long as the config's layer count."""
    import torch

    n = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return list(module)
    raise UserError("cannot find this model's transformer blocks to freeze", where="model.method")


def freeze(model: PreTrainedModel | PeftModel, m: ModelConfig) -> None:
    """Train only the last `freeze_trainable_layers` blocks (and the LM head / embeddings if asked)."""
    blocks = decoder_blocks(model)
    n = m.freeze_trainable_layers
    if n > len(blocks):
        raise UserError(
            f"the model has {len(blocks)} transformer blocks; cannot train the last {n}",
            where="model.freeze_trainable_layers",
        )
    model.requires_grad_(False)
    for block in blocks[len(blocks) - n :]:
        block.requires_grad_(True)
    if m.freeze_train_lm_head:
        model.get_output_embeddings().requires_grad_(True)
    if m.freeze_train_embeddings:
        model.get_input_embeddings().requires_grad_(True)
