"""Which fused kernels a run uses: Liger kernels and the attention implementation.

One place decides, for the trainer (tunewiz.core.train), the estimator (tunewiz.core.estimate) and the
GPU check (bench/gpu_check.py), so that what is estimated is what runs. Pure decisions
take the facts (CUDA present, compute capability, package installed) as arguments and are
tested on any machine; `probe()` gathers the facts, importing torch only when asked.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunewiz.core.errors import UserError

if TYPE_CHECKING:
    from tunewiz.core.config import AttnImplementation, AutoSwitch, ModelConfig

#: config.json `model_type`s whose modules liger-kernel 0.8 can patch in place
#: (liger_kernel/transformers/monkey_patch.py, MODEL_TYPE_TO_APPLY_LIGER_FN), limited to the
#: text families tunewiz's estimator knows. GPT-2 is not among them.
LIGER_MODEL_TYPES = frozenset(
    {
        "llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "gemma", "gemma2",
        "gemma3_text", "phi3", "granite", "olmo2", "olmo3", "smollm3", "glm4", "ministral",
        "nemotron",
    }
)  # fmt: skip

#: FlashAttention-2 runs on Ampere (compute capability 8.0) and newer.
FLASH_ATTN_MIN_CAPABILITY = (8, 0)

LIGER_HINT_INSTALL = "pip install 'tunewiz[gpu]' (liger-kernel), or set model.liger_kernel = auto"


@dataclass(frozen=True)
class DeviceFacts:
    """What decides the kernels: a CUDA device, its compute capability, the packages installed."""

    cuda: bool
    capability: tuple[int, int] | None = None
    liger_installed: bool = False
    flash_attn_installed: bool = False


def package_installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def probe() -> DeviceFacts:
    """The facts on this machine (imports torch)."""
    import torch

    cuda = torch.cuda.is_available()
    return DeviceFacts(
        cuda=cuda,
        capability=tuple(torch.cuda.get_device_capability(0)) if cuda else None,  # type: ignore[arg-type]
        liger_installed=package_installed("liger_kernel"),
        flash_attn_installed=package_installed("flash_attn"),
    )


def use_liger(setting: AutoSwitch, *, model_type: str, facts: DeviceFacts) -> bool:
    """`model.liger_kernel` -> on or off. auto: on for CUDA + a supported model + the package;
    true where that cannot hold is refused with the reason (never a traceback in train.log)."""
    where = "model.liger_kernel"
    if setting == "false":
        return False
    ok = facts.cuda and model_type in LIGER_MODEL_TYPES and facts.liger_installed
    if setting == "auto" or ok:
        return ok
    if setting != "true":
        raise UserError(f"`{setting}` is not one of auto, true, false", where=where)
    if not facts.cuda:
        raise UserError(
            "Liger kernels are Triton GPU kernels and need a CUDA GPU; this machine has none",
            where=where,
            hint="set model.liger_kernel = auto (on where it can run) or false",
        )
    if model_type not in LIGER_MODEL_TYPES:
        raise UserError(
            f"liger-kernel has no kernels for {model_type or 'this'} models",
            where=where,
            hint="supported: " + ", ".join(sorted(LIGER_MODEL_TYPES)),
        )
    raise UserError(
        "Liger kernels need the liger-kernel package", where=where, hint=LIGER_HINT_INSTALL
    )


def flash_attention_usable(facts: DeviceFacts) -> bool:
    cap = facts.capability or (0, 0)
    return facts.cuda and facts.flash_attn_installed and tuple(cap) >= FLASH_ATTN_MIN_CAPABILITY


def attention(setting: AttnImplementation, *, facts: DeviceFacts) -> str:
    """`model.attn_implementation` -> what transformers is asked for. auto: flash_attention_2
    where flash-attn is installed and the GPU is Ampere or newer, else sdpa. Packed batches
    carry position_ids and no mask, so both keep tokens inside their own row (flash through
    cu_seqlens from the position_ids, sdpa through a block-diagonal mask)."""
    if setting == "auto":
        return "flash_attention_2" if flash_attention_usable(facts) else "sdpa"
    if setting == "flash_attention_2" and not flash_attention_usable(facts):
        if not facts.flash_attn_installed:
            why = "needs the flash-attn package"
            hint = "pip install flash-attn --no-build-isolation, or use sdpa / auto"
        elif not facts.cuda:
            why, hint = "needs a CUDA GPU; this machine has none", "use sdpa or auto"
        else:
            major, minor = facts.capability or (0, 0)
            why = f"needs an Ampere or newer GPU (compute capability 8.0); this one is {major}.{minor}"
            hint = "use sdpa or auto"
        raise UserError(f"flash_attention_2 {why}", where="model.attn_implementation", hint=hint)
    return setting


def model_type_of(model: str) -> str:
    """config.json's model_type of a run's model ("" when it cannot be read: the model's own
    check reports that)."""
    from tunewiz.core.profiles import load_model_arch

    try:
        return load_model_arch(model).family
    except Exception:  # noqa: BLE001 - offline and not in the catalog: the local HF cache
        pass
    try:
        from transformers import AutoConfig

        return str(AutoConfig.from_pretrained(model).model_type)
    except Exception:  # noqa: BLE001 - a missing model is reported by the model check
        return ""


def needs_device_facts(model_cfg: ModelConfig) -> bool:
    """Whether the choice depends on the GPU: a kernel asked for by name, or `auto` with its
    package installed. Otherwise the answer is sdpa and no Liger whatever the device, and the
    launcher's checks stay free of `import torch` (about two seconds)."""
    return (
        model_cfg.liger_kernel == "true"
        or model_cfg.attn_implementation == "flash_attention_2"
        or (model_cfg.liger_kernel == "auto" and package_installed("liger_kernel"))
        or (model_cfg.attn_implementation == "auto" and package_installed("flash_attn"))
    )


NO_KERNEL_PACKAGES = DeviceFacts(cuda=False)  # neither package: the device does not matter


def for_run(model_cfg: ModelConfig, facts: DeviceFacts | None = None) -> tuple[str, bool]:
    """(attn_implementation, use_liger_kernel) for a run's ModelConfig on this machine; raises
    UserError for a choice that cannot run here."""
    if facts is None:
        facts = probe() if needs_device_facts(model_cfg) else NO_KERNEL_PACKAGES
    attn = attention(model_cfg.attn_implementation, facts=facts)
    # The model's family matters only where Liger could run: reading it may mean a hub look-up.
    setting = model_cfg.liger_kernel
    could = setting == "true" or (setting == "auto" and facts.cuda and facts.liger_installed)
    model_type = model_type_of(model_cfg.model) if could else ""
    return attn, use_liger(setting, model_type=model_type, facts=facts)
