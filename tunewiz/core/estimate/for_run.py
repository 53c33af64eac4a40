"""The estimator seen from a run: a RunConfig in, an EstimateRequest, estimate.json and OOM advice out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunewiz.core.errors import UserError
from tunewiz.core.estimate.advice import max_batch, recommend, split_batch, suggestions
from tunewiz.core.estimate.memory import GIB, EstimateRequest, estimate, with_
from tunewiz.core.estimate.report import default_precision, machine_ram_gib
from tunewiz.core.profiles import ModelArch, find_gpu, load_model_arch

if TYPE_CHECKING:
    from tunewiz.core.config import RunConfig

# Config (and transformers) optimizer names -> the estimator's --optimizer names.
ESTIMATOR_OPTIMIZERS = {
    "adamw_torch": "adamw",
    "adamw_torch_fused": "adamw",
    "adamw_hf": "adamw",
    "adamw_8bit": "adamw-8bit",
    "adamw_bnb_8bit": "adamw-8bit",
    "paged_adamw_8bit": "paged-adamw-8bit",
    "adafactor": "adafactor",
    "sgd": "sgd",
}
# Config attn_implementation -> the estimator's --attention names.
ESTIMATOR_ATTENTIONS = {
    "flash_attention_2": "flash",
    "flash_attention_3": "flash",
    "sdpa": "sdpa",
    "eager": "eager",
}


def _device_kind(device: str) -> tuple[str, bool]:
    """("cuda" | "cpu", bf16 supported). `device` may be a GPU's name, as torch reports it."""
    text = device.strip().lower()
    if text == "cpu":
        return "cpu", False
    if text in ("cuda", "gpu", ""):
        return "cuda", True
    try:
        return "cuda", find_gpu(device).bf16
    except UserError:
        return "cuda", True


def request_from_run_config(cfg: RunConfig, *, device: str) -> EstimateRequest:
    """Map a RunConfig onto estimator options, the way tunewiz.core.train loads the model.

    `device` is "cuda", "cpu" or a GPU name. Precision `auto` is bf16-mixed on CUDA (fp16-mixed on
    GPUs without bf16); the trainer runs every precision as fp32 on a CPU, and so does this.
    """
    m, t, dist = cfg.model, cfg.training, cfg.distributed
    device, bf16_ok = _device_kind(device)
    if device == "cpu" or m.precision == "auto":
        precision = default_precision(device, bf16_ok)
    else:
        precision = {"fp32": "fp32", "bf16": "bf16-mixed", "fp16": "fp16-mixed"}[m.precision]
    optim = ESTIMATOR_OPTIMIZERS.get(t.optim)
    if optim is None:
        raise UserError(
            f"the estimator does not know optimizer {t.optim!r}", where="training.optim"
        )
    gpus = max(1, dist.num_processes) if dist.distributed != "none" else 1
    zero = {"none": 0, "ddp": 0, "zero2": 2, "zero3": 3, "fsdp": 3}.get(dist.distributed, 0)
    if gpus < 2 or device == "cpu":
        gpus, zero = (1, 0) if device == "cpu" else (gpus, 0)
    return EstimateRequest(
        method=m.method,
        precision=precision,
        optimizer=optim,
        batch_size=t.per_device_train_batch_size,
        seq_len=cfg.data.max_seq_len,
        grad_checkpointing=m.gradient_checkpointing,
        attention=ESTIMATOR_ATTENTIONS.get(m.attn_implementation, "sdpa"),
        lora_r=m.lora_r,
        lora_targets=m.lora_target_modules,
        lora_dropout=m.lora_dropout,
        double_quant=m.bnb_4bit_use_double_quant,
        gpus=gpus,
        zero=zero,
        device=device,
        objective=t.objective,
        precompute_ref=t.precompute_ref_log_probs,
        freeze_layers=m.freeze_trainable_layers,
        freeze_lm_head=m.freeze_train_lm_head,
        freeze_embeddings=m.freeze_train_embeddings,
        liger=_liger_expected(cfg, device),
    )


def _liger_expected(cfg: RunConfig, device: str) -> bool:
    """Whether the run will use Liger kernels, as tunewiz.core.kernels.use_liger decides: `true` on a
    GPU; `auto` on a GPU for a supported model when liger-kernel is installed here."""
    from tunewiz.core import kernels

    setting = cfg.model.liger_kernel
    if device == "cpu" or setting == "false":
        return False
    if kernels.model_type_of(cfg.model.model) not in kernels.LIGER_MODEL_TYPES:
        return False
    return setting == "true" or kernels.package_installed("liger_kernel")


def _run_request(cfg: RunConfig, device: str) -> tuple[ModelArch, EstimateRequest]:
    arch = load_model_arch(cfg.model.model)
    req = request_from_run_config(cfg, device=device)
    if req.seq_len > arch.max_position_embeddings:
        # the trainer truncates rows to the model's context
        req = with_(req, seq_len=arch.max_position_embeddings)
    return arch, req


def _memory_available(device: str, gpu_mem_gib: float | None) -> float | None:
    if gpu_mem_gib is None and device.strip().lower() == "cpu":
        return machine_ram_gib()
    return gpu_mem_gib


def estimate_for_run(cfg: RunConfig, *, device: str, gpu_mem_gib: float | None) -> dict:
    """What a run writes to estimate.json: the estimate, whether it fits, and a recommendation.

    `total_bytes`/`total_gib` at the top level are the predicted peak per device (on the CPU:
    the peak RSS of the training process). `gpu_mem_gib` None on the CPU means this machine's RAM.
    """
    arch, req = _run_request(cfg, device)
    mem = _memory_available(device, gpu_mem_gib)
    est = estimate(arch, req)
    out = {
        "model": arch.name,
        "total_bytes": est.total,
        "total_gib": round(est.total / GIB, 3),
        "request": dict(req.__dict__),
        **est.to_dict(),
        "gpu_mem_gib": mem,
        "fits": est.fits(mem),
        "recommendation": None,
    }
    if mem is not None:
        out["recommendation"] = recommend(arch, req, mem, force_method=req.method).to_dict()
    return out


def oom_advice(cfg: RunConfig, *, device: str, gpu_mem_gib: float | None) -> str:
    """The nearest configuration that fits, in concrete words (shown after an out-of-memory error).

    `gpu_mem_gib` None on the CPU means this machine's RAM.
    """
    arch, req = _run_request(cfg, device)
    gpu_mem_gib = _memory_available(device, gpu_mem_gib)
    if gpu_mem_gib is None:
        return "The estimator cannot tell how much memory this device has."
    est = estimate(arch, req)
    head = (
        f"The estimate for this run is {est.total / GIB:.1f} GiB per device "
        f"against {gpu_mem_gib:.1f} GiB available."
    )
    steps: list[str] = []
    b = max_batch(arch, req, gpu_mem_gib)
    if b and b < req.batch_size:
        b, factor = split_batch(req.batch_size, b)
        accum = cfg.training.gradient_accumulation_steps * factor
        steps.append(
            f"set training.per_device_train_batch_size = {b} and "
            f"training.gradient_accumulation_steps = {accum} (same effective batch)"
        )
    elif not b:
        for sug in suggestions(arch, req, gpu_mem_gib):
            steps.append(_config_words(sug.changes, cfg))
        if not steps:
            steps.append(
                "none on this device: even QLoRA with gradient checkpointing and 128-token "
                "sequences does not fit; use a smaller model or a bigger GPU"
            )
    else:
        steps.append(
            "the estimate says it fits, so the difference is memory the estimate does not see "
            "(other processes on the GPU, unusually long rows): lower "
            "training.per_device_train_batch_size and raise gradient_accumulation_steps, or set "
            "model.gradient_checkpointing = true"
        )
    return head + " Nearest configuration that fits: " + "; or ".join(steps) + "."


def _config_words(changes: dict, cfg: RunConfig) -> str:
    """A suggestion as config.toml settings."""
    words = []
    if "method" in changes:
        words.append(f'model.method = "{changes["method"]}"')
    if changes.get("grad_checkpointing"):
        words.append("model.gradient_checkpointing = true")
    if "seq_len" in changes:
        words.append(f"data.max_seq_len = {changes['seq_len']}")
    if "gpus" in changes:
        words.append(
            f'distributed.distributed = "zero3" with distributed.num_processes = {changes["gpus"]} '
            "(that many GPUs)"
        )
    if "gpu_mem_gib" in changes:
        words.append(f"a GPU with {changes['gpu_mem_gib']:g} GiB or more")
    if "gpu_mem_gib" in changes:
        return words[0]
    return (
        "set "
        + " and ".join(words)
        + (
            f" with training.per_device_train_batch_size = 1 and gradient_accumulation_steps = "
            f"{cfg.training.gradient_accumulation_steps * cfg.training.per_device_train_batch_size}"
            if cfg.training.per_device_train_batch_size > 1
            else ""
        )
    )
