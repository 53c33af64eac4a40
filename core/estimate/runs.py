"""The estimator seen from a run: a RunConfig in, an EstimateRequest, estimate.json and OOM advice out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import UserError
from core.estimate.advice import max_batch, recommend, what_would_fit
from core.estimate.memory import GIB, EstimateRequest, estimate, with_
from core.profiles import load_model_arch

if TYPE_CHECKING:
    from core.config import RunConfig

OPTIM_NAMES = {
    "adamw_torch": "adamw",
    "adamw_torch_fused": "adamw",
    "adamw_hf": "adamw",
    "adamw_8bit": "adamw-8bit",
    "adamw_bnb_8bit": "adamw-8bit",
    "paged_adamw_8bit": "paged-adamw-8bit",
    "adafactor": "adafactor",
    "sgd": "sgd",
}
ATTN_NAMES = {
    "flash_attention_2": "flash",
    "flash_attention_3": "flash",
    "sdpa": "sdpa",
    "eager": "eager",
}


def request_from_run_config(
    cfg: RunConfig, *, device: str, bf16_supported: bool = True
) -> EstimateRequest:
    """Map a RunConfig onto estimator options (`auto` precision: bf16-mixed on CUDA, fp32 on CPU)."""
    m, t, dist = cfg.model, cfg.training, cfg.distributed
    if m.precision == "auto":
        precision = (
            ("bf16-mixed" if bf16_supported else "fp16-mixed") if device == "cuda" else "fp32"
        )
    else:
        precision = {"fp32": "fp32", "bf16": "bf16-mixed", "fp16": "fp16-mixed"}.get(
            m.precision, m.precision
        )
    optim = OPTIM_NAMES.get(t.optim)
    if optim is None:
        raise UserError(
            f"the estimator does not know optimizer {t.optim!r}", where="training.optim"
        )
    gpus = max(1, dist.num_processes) if dist.distributed != "none" else 1
    zero = {"none": 0, "ddp": 0, "zero2": 2, "zero3": 3, "fsdp": 3}.get(dist.distributed, 0)
    if gpus < 2:
        zero = 0
    return EstimateRequest(
        method=m.method,
        precision=precision,
        optimizer=optim,
        batch_size=t.per_device_train_batch_size,
        seq_len=cfg.data.max_seq_len,
        grad_checkpointing=m.gradient_checkpointing,
        attention=ATTN_NAMES.get(m.attn_implementation, "sdpa"),
        lora_r=m.lora_r,
        lora_targets=m.lora_target_modules,
        lora_dropout=m.lora_dropout,
        double_quant=m.bnb_4bit_use_double_quant,
        gpus=gpus,
        zero=zero,
        device=device,
    )


def estimate_for_run(cfg: RunConfig, *, device: str, gpu_mem_gib: float | None) -> dict:
    """What a run writes to estimate.json: the estimate, whether it fits, and a recommendation."""
    arch = load_model_arch(cfg.model.model)
    req = request_from_run_config(cfg, device=device)
    if req.seq_len > arch.max_position_embeddings:
        req = with_(
            req, seq_len=arch.max_position_embeddings
        )  # the trainer truncates to the context
    est = estimate(arch, req)
    out = {
        "model": arch.name,
        **est.to_dict(),
        "gpu_mem_gib": gpu_mem_gib,
        "fits": est.fits(gpu_mem_gib),
        "recommendation": None,
    }
    if gpu_mem_gib is not None:
        out["recommendation"] = recommend(arch, req, gpu_mem_gib, force_method=req.method).to_dict()
    return out


def oom_advice(cfg: RunConfig, *, device: str, gpu_mem_gib: float) -> str:
    """The nearest configuration that fits, in concrete words (shown after an out-of-memory error)."""
    arch = load_model_arch(cfg.model.model)
    req = request_from_run_config(cfg, device=device)
    if req.seq_len > arch.max_position_embeddings:
        req = with_(req, seq_len=arch.max_position_embeddings)
    est = estimate(arch, req)
    head = (
        f"The estimate for this run is {est.total / GIB:.1f} GiB per device "
        f"against {gpu_mem_gib:.1f} GiB available."
    )
    steps: list[str] = []
    b = max_batch(arch, req, gpu_mem_gib)
    if b and b < req.batch_size:
        accum = cfg.training.gradient_accumulation_steps * -(-req.batch_size // b)
        steps.append(
            f"set training.per_device_train_batch_size = {b} and "
            f"training.gradient_accumulation_steps = {accum} (same effective batch)"
        )
    elif not b:
        if not req.grad_checkpointing and max_batch(
            arch, with_(req, grad_checkpointing=True), gpu_mem_gib
        ):
            steps.append("set model.gradient_checkpointing = true")
        if req.method != "qlora":
            rec = recommend(arch, req, gpu_mem_gib)
            if rec.method and rec.method != req.method:
                steps.append(
                    f'set model.method = "{rec.method}" (fits with batch {rec.batch_size})'
                )
        for hint in what_would_fit(arch, req, gpu_mem_gib):
            if "seq-len" in hint:
                seq = int(hint.split("--seq-len ")[1].split(")")[0])
                steps.append(f"set data.max_seq_len = {seq}")
    if not steps:
        steps.append(
            "the estimate says it fits, so the difference is memory the estimate does not see "
            "(other processes on the GPU, long outlier rows): lower per_device_train_batch_size "
            "and raise gradient_accumulation_steps, or turn on model.gradient_checkpointing"
        )
    return head + " Nearest configuration that fits: " + "; or ".join(steps) + "."
