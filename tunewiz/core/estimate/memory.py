"""Peak memory of one training (or inference) step, per GPU, term by term.

The base formulas are EleutherAI's "Transformer Math 101" (Anthony et al., 2023)
for weights, gradients and optimizer states, and Korthikanti et al., "Reducing
Activation Recomputation in Large Transformer Models" (2022) for activations:
`s*b*h*L*(34 + 5*a*s/h)` bytes per step without recomputation. That constant
assumes a GPT MLP (4h GeLU) with fp16 everywhere; here every saved tensor is
derived from what PyTorch autograd, PEFT and bitsandbytes really keep alive for
the backward pass, per architecture:

- autograd saves a tensor only when an input that needs a gradient uses it, so
  frozen base layers (LoRA, QLoRA) do not keep their inputs;
- autocast (bf16/fp16-mixed) makes a separate 16-bit copy of an fp32 input for
  every Linear that reads it (q, k and v each keep one);
- a SwiGLU MLP keeps gate, silu(gate), up (and the product for down_proj when
  it trains): 3-4 tensors of the intermediate width, where GeLU keeps 2;
- RMSNorm upcasts to fp32 and keeps that copy;
- LoRA's dropout keeps a 1-byte mask and its output for lora_A, per adapter;
- the loss upcasts the logits to fp32; at the start of the backward pass the
  saved log-softmax, its gradient and the input gradient (3 x 4 bytes x vocab
  per token) are alive together.

The step's peak is the larger of two moments: the start of the backward pass
(weights + optimizer states + all activations + logits) and the optimizer step
(weights + gradients + optimizer states + the optimizer's temporaries).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any

from tunewiz.core.config import OBJECTIVES  # what a run asks for: the estimator prices each
from tunewiz.core.errors import UserError
from tunewiz.core.estimate import liger
from tunewiz.core.profiles import ModelArch

GIB = 1024**3

# Named apart from tunewiz.core.config's METHODS/PRECISIONS, which are what a run asks for: the
# estimator also prices inference, and names the exact numeric regime it prices.
ESTIMATE_METHODS = ("full", "lora", "qlora", "freeze", "inference")
ESTIMATE_PRECISIONS = ("fp32", "bf16-mixed", "bf16-true", "fp16-mixed")
OPTIMIZERS = ("adamw", "adamw-8bit", "paged-adamw-8bit", "sgd", "adafactor")
ATTENTIONS = ("flash", "sdpa", "eager")
QUANTS = ("none", "int8", "nf4")
DEVICES = ("cuda", "cpu")
ZERO_STAGES = (0, 1, 2, 3)  # DeepSpeed ZeRO; 3 also stands for FSDP's full sharding
TERMS = ("weights", "gradients", "optimizer", "activations", "logits", "overhead")

#: CUDA context + cuBLAS/cuDNN workspaces, measured as `nvidia-smi` memory minus
#: `torch.cuda.memory_reserved()` right after the first matmul (PyTorch 2.x, lazy module loading).
CUDA_CONTEXT_BYTES = int(0.55 * GIB)
#: The caching allocator rounds blocks and fragments; reserved exceeds allocated by a few percent.
ALLOCATOR_RESERVE = 0.05
#: On the CPU the "overhead" is the process itself: Python with torch, transformers (Trainer),
#: peft and datasets imported, measured as the baseline RSS by bench/bench_estimate.py. The CPU
#: estimate is the peak RSS with freed blocks returned to the OS (the bench measures under
#: MALLOC_MMAP_THRESHOLD_=131072); glibc's default keeps freed heap blocks resident, +27% on a
#: LoRA step of the bundled model, which no tensor holds. The training worker trims the heap
#: after each decoder pass instead (tunewiz.core.train.heap), which keeps most of it away.
CPU_PROCESS_BYTES = int(0.46 * GIB)

NF4_BYTES = 0.5 + 4 / 64  # 4-bit codes + one fp32 absmax per 64-weight block
NF4_DQ_BYTES = (
    0.5 + 1 / 64 + 4 / (64 * 256)
)  # absmax itself 8-bit, fp32 per 256 absmax: ~4.127 bits


@dataclass(frozen=True)
class EstimateRequest:
    method: str = "lora"
    precision: str = "bf16-mixed"
    optimizer: str = "adamw"
    batch_size: int = 1
    seq_len: int = 512
    grad_checkpointing: bool = False
    attention: str = "sdpa"
    lora_r: int = 16
    lora_targets: str = "all-linear"
    lora_dropout: float = 0.05
    double_quant: bool = True
    quant: str = "none"  # weight quantization for inference
    gpus: int = 1
    zero: int = 0
    device: str = "cuda"
    objective: str = "sft"  # dpo/orpo: chosen and rejected go through the model together
    precompute_ref: bool = False  # dpo/kto full/freeze: reference log-probs scored before training
    freeze_layers: int = 2  # method freeze: the last N blocks train
    freeze_lm_head: bool = False
    freeze_embeddings: bool = False
    liger: bool = False  # Liger kernels: fused linear cross-entropy, RMSNorm, SwiGLU (liger.py)


@dataclass(frozen=True)
class Estimate:
    params_total: int
    params_trainable: int
    method: str
    precision: str
    device: str
    gpus: int
    zero: int
    batch_size: int
    seq_len: int
    breakdown: dict[str, int]  # bytes per GPU, each term at its own largest
    total: int  # bytes per GPU at the step's peak
    peak_phase: str  # "backward" | "optimizer step" | "inference"
    exact_params: bool = True
    notes: tuple[str, ...] = field(default=())

    @property
    def total_gib(self) -> float:
        return self.total / GIB

    def fits(self, gpu_mem_gib: float | None) -> bool | None:
        return None if gpu_mem_gib is None else self.total <= gpu_mem_gib * GIB

    def to_dict(self) -> dict:
        out = asdict(self)
        del out["breakdown"], out["total"]
        out["notes"] = list(self.notes)
        out["memory"] = {
            "total_gib": round(self.total / GIB, 3),
            "breakdown_gib": {k: round(v / GIB, 3) for k, v in self.breakdown.items()},
            "peak_phase": self.peak_phase,
        }
        return out


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def _choice(value: str, choices: tuple[str, ...], flag: str) -> None:
    if value not in choices:
        raise UserError(f"{value!r} is not one of {', '.join(choices)}", where=flag)


def validate(arch: ModelArch, req: EstimateRequest) -> None:
    """Impossible options, each named by its flag."""
    _choice(req.method, ESTIMATE_METHODS, "--method")
    _choice(req.precision, ESTIMATE_PRECISIONS, "--precision")
    _choice(req.optimizer, OPTIMIZERS, "--optimizer")
    _choice(req.attention, ATTENTIONS, "--attention")
    _choice(req.quant, QUANTS, "--quant")
    _choice(req.device, DEVICES, "--device")
    _choice(req.objective, OBJECTIVES, "--objective")
    if req.method == "freeze" and not 0 <= req.freeze_layers <= arch.num_layers:
        raise UserError(
            f"{arch.name} has {arch.num_layers} layers; cannot train the last {req.freeze_layers}",
            where="--freeze-layers",
        )
    if req.batch_size < 1:
        raise UserError(f"must be at least 1, got {req.batch_size}", where="--batch-size")
    if req.seq_len < 1:
        raise UserError(f"must be at least 1, got {req.seq_len}", where="--seq-len")
    if req.seq_len > arch.max_position_embeddings:
        raise UserError(
            f"{req.seq_len} tokens is longer than {arch.name}'s context of "
            f"{arch.max_position_embeddings} (max_position_embeddings)",
            where="--seq-len",
            hint=f"use --seq-len {arch.max_position_embeddings} or less",
        )
    if req.method in ("lora", "qlora") and req.lora_r < 1:
        raise UserError(f"LoRA rank must be at least 1, got {req.lora_r}", where="--lora-r")
    if req.gpus < 1:
        raise UserError(f"must be at least 1, got {req.gpus}", where="--gpus")
    if req.zero not in ZERO_STAGES:
        raise UserError(f"ZeRO stage must be 0, 1, 2 or 3, got {req.zero}", where="--zero")
    if req.zero and req.gpus < 2:
        raise UserError(
            f"ZeRO stage {req.zero} shards across GPUs and needs --gpus 2 or more",
            where="--zero",
            hint="with one GPU use --zero 0 (or add --gpus N)",
        )
    if req.device == "cpu" and (req.gpus > 1 or req.zero):
        raise UserError("several GPUs and ZeRO need --device cuda", where="--device")
    if req.optimizer == "paged-adamw-8bit" and req.device == "cpu":
        raise UserError("paged optimizers need a CUDA GPU", where="--optimizer")
    lora_targets(arch, req.lora_targets)  # raises on unknown module names
    if req.liger:
        from tunewiz.core.kernels import LIGER_MODEL_TYPES

        if req.device == "cpu":
            raise UserError("Liger kernels need a CUDA GPU", where="--liger")
        if arch.family not in LIGER_MODEL_TYPES:
            raise UserError(
                f"liger-kernel has no kernels for {arch.family} models", where="--liger"
            )


@functools.lru_cache(maxsize=256)
def lora_targets(arch: ModelArch, spec: str) -> dict[str, tuple[int, int, int]]:
    """The adapted matrices per layer for a `--lora-targets` value (PEFT's target_modules)."""
    shapes = arch.linear_shapes()
    spec = (spec or "all-linear").strip()
    if spec == "all-linear":
        if arch.num_experts:
            # transformers 5 stores MoE experts as 3-D parameters, not nn.Linear: PEFT's
            # all-linear adapts the attention projections only.
            return {
                k: v for k, v in shapes.items() if k in ("q_proj", "k_proj", "v_proj", "o_proj")
            }
        return shapes
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in shapes and f"mlp.{n}" not in shapes]
    if unknown or not names:
        raise UserError(
            f"unknown LoRA target {', '.join(unknown) or spec!r} for a {arch.family} model",
            where="--lora-targets",
            hint="use all-linear or a list of: " + ", ".join(shapes),
        )
    out = {}
    for n in names:
        out[n] = shapes[n] if n in shapes else shapes[f"mlp.{n}"]
        if arch.family == "gpt2" and n == "c_proj":  # one name matches both GPT-2 projections
            out["mlp.c_proj"] = shapes["mlp.c_proj"]
    return out


# ---------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------


def lora_params(arch: ModelArch, req: EstimateRequest) -> int:
    """`r * (d_in + d_out)` per adapted matrix (k/v use the KV width under GQA)."""
    return _lora_params(arch, req.lora_r, req.lora_targets)


@functools.lru_cache(maxsize=256)
def _lora_params(arch: ModelArch, r: int, spec: str) -> int:
    req = EstimateRequest(lora_r=r, lora_targets=spec)
    per_layer = sum(
        req.lora_r * (d_in + d_out) * n
        for d_in, d_out, n in lora_targets(arch, req.lora_targets).values()
    )
    return per_layer * arch.num_layers


@functools.lru_cache(maxsize=256)
def linear_params(arch: ModelArch) -> int:
    """Parameters inside the decoder layers' Linear layers: what bitsandbytes quantizes."""
    return arch.num_layers * sum(a * b * n for a, b, n in arch.linear_shapes().values())


def trainable_params(arch: ModelArch, req: EstimateRequest) -> int:
    if req.method == "full":
        return arch.num_params()
    if req.method == "freeze":
        return frozen_trainable_params(arch, req)
    if req.method in ("lora", "qlora"):
        return lora_params(arch, req)
    return 0


def frozen_trainable_params(arch: ModelArch, req: EstimateRequest) -> int:
    """method freeze: the last N blocks, plus the LM head and/or embeddings (one matrix when tied)."""
    n = req.freeze_layers * arch.params_per_layer()
    matrix = arch.vocab_size * arch.hidden_size
    if arch.tie_word_embeddings:
        return n + (matrix if req.freeze_lm_head or req.freeze_embeddings else 0)
    return n + matrix * (int(req.freeze_lm_head) + int(req.freeze_embeddings))


def _trains_all_weights(req: EstimateRequest) -> bool:
    """full and freeze hold fp32 weights (the frozen part too: one dtype for the whole model)."""
    return req.method in ("full", "freeze")


def dropout_kept(req: EstimateRequest) -> bool:
    """Whether dropout layers run (and keep masks). TRL's preference trainers set every
    nn.Dropout's p to 0 after PEFT has wrapped the model, LoRA's dropout included
    (`disable_dropout=True` by default in DPOConfig, KTOConfig and ORPOConfig; TRL 1.16
    trainer/dpo_trainer.py:932-935, kto_trainer.py:943-946, experimental/orpo/orpo_trainer.py:339-340),
    and torch's dropout with p=0 returns its input: no mask, no copy."""
    return req.objective == "sft"


def sequences_per_row(req: EstimateRequest) -> int:
    """dpo and orpo put chosen and rejected through the model in one batch: twice the sequences."""
    return 2 if req.objective in ("dpo", "orpo") else 1


def reference_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """dpo/kto's reference model: the base with adapters disabled (lora, qlora: no memory), a
    frozen copy in the compute dtype (full, freeze), or nothing when its log-probs are precomputed.
    """
    if req.objective not in ("dpo", "kto") or not _trains_all_weights(req) or req.precompute_ref:
        return 0
    return _compute_bytes(req) * arch.num_params()


# ---------------------------------------------------------------------------
# the terms
# ---------------------------------------------------------------------------


def _compute_bytes(req: EstimateRequest) -> int:
    """Bytes per element of activations (the matmul dtype)."""
    return 4 if req.precision == "fp32" else 2


def _mixed(req: EstimateRequest) -> bool:
    return req.precision in ("bf16-mixed", "fp16-mixed")


def base_bytes(req: EstimateRequest) -> int:
    """Bytes per element of the weights that are not quantized, and so of the residual stream.

    Full fine-tuning under mixed precision keeps fp32 weights (PyTorch AMP); LoRA loads the frozen
    base in 16-bit; QLoRA's `prepare_model_for_kbit_training` upcasts the non-quantized weights
    (embeddings, norms, LM head) to fp32.
    """
    if req.precision == "fp32":
        return 4
    if _trains_all_weights(req):
        return 2 if req.precision == "bf16-true" else 4
    if req.method == "qlora":
        return 4
    return 2


def weight_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """Weights resident on one GPU (before ZeRO-3 sharding)."""
    n = arch.num_params()
    lin = linear_params(arch)
    head = arch.vocab_size * arch.hidden_size  # the LM head's matmul weight, tied or not
    if req.method == "full":
        if _mixed(req):
            # PyTorch AMP: the fp32 master weights are the parameters themselves (counted under
            # "optimizer" as Transformer Math 101 does); autocast's 16-bit copies of every Linear
            # weight stay saved for the backward pass.
            return 2 * (lin + head)
        return base_bytes(req) * n
    if req.method == "freeze":
        # fp32 parameters (not counted again under optimizer); autocast's 16-bit copies of the
        # trained blocks' Linear weights stay saved for the backward pass
        trained_lin = req.freeze_layers * sum(
            a * b * k for a, b, k in arch.linear_shapes().values()
        )
        return base_bytes(req) * n + (2 * trained_lin if _mixed(req) else 0)
    if req.method == "lora":
        return base_bytes(req) * n + 4 * lora_params(arch, req)
    if req.method == "qlora":
        q = NF4_DQ_BYTES if req.double_quant else NF4_BYTES
        return q * lin + base_bytes(req) * (n - lin) + 4 * lora_params(arch, req)
    # inference
    if req.quant == "nf4":
        q = NF4_DQ_BYTES if req.double_quant else NF4_BYTES
    elif req.quant == "int8":
        q = 1 + 4 / max(arch.hidden_size, 1)  # LLM.int8: int8 rows + one fp32 scale per row
    else:
        q = _compute_bytes(req)
    return q * lin + _compute_bytes(req) * (n - lin)


def gradient_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """Gradients in the parameters' dtype: fp32 except bf16-true full fine-tuning."""
    if req.method == "inference":
        return 0
    per = 2 if (_trains_all_weights(req) and req.precision == "bf16-true") else 4
    return per * trainable_params(arch, req)


def _adafactor_state(arch: ModelArch, req: EstimateRequest) -> float:
    """Factored second moments: one row and one column vector per matrix, full size for vectors."""
    if _trains_all_weights(req):  # freeze: an upper bound (every matrix's factors)
        per_layer = sum((a + b) * n for a, b, n in arch.linear_shapes().values())
        per_layer += arch.params_per_layer() - sum(
            a * b * n for a, b, n in arch.linear_shapes().values()
        )
        emb = arch.vocab_size + arch.hidden_size
        return 4 * (arch.num_layers * per_layer + 2 * emb + arch.hidden_size)
    vectors = sum(
        (req.lora_r + a) + (req.lora_r + b)
        for a, b, _ in lora_targets(arch, req.lora_targets).values()
    )
    return 4 * arch.num_layers * vectors


def optimizer_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """Optimizer states (plus the fp32 master weights under mixed-precision full fine-tuning)."""
    if req.method == "inference":
        return 0
    n = trainable_params(arch, req)
    state = 2 if (_trains_all_weights(req) and req.precision == "bf16-true") else 4
    master = 4 * n if (req.method == "full" and _mixed(req)) else 0
    if req.optimizer == "adamw":
        return master + 2 * state * n
    if req.optimizer in ("adamw-8bit", "paged-adamw-8bit"):
        # two 8-bit states with an fp32 absmax per 256-value block (bitsandbytes blockwise)
        return master + 2 * (1 + 4 / 256) * n
    if req.optimizer == "sgd":
        return master + state * n  # momentum buffer
    return master + _adafactor_state(arch, req)


def optimizer_step_temp(arch: ModelArch, req: EstimateRequest) -> float:
    """Temporaries of `optimizer.step()` beyond the states.

    torch's AdamW on CUDA (foreach) allocates sqrt(exp_avg_sq) for all parameters at once;
    on the CPU (single-tensor loop) it needs two of the largest tensor.
    """
    if req.method == "inference" or req.optimizer != "adamw":
        return 0
    state = 2 if (_trains_all_weights(req) and req.precision == "bf16-true") else 4
    if req.device == "cuda":
        return state * trainable_params(arch, req)
    if _trains_all_weights(req):
        matrix = max(a * b * n for a, b, n in arch.linear_shapes().values())
        head = req.method == "full" or req.freeze_lm_head or req.freeze_embeddings
        largest = max(arch.vocab_size * arch.hidden_size if head else 0, matrix)
    else:
        largest = max(
            req.lora_r * max(a, b) for a, b, _ in lora_targets(arch, req.lora_targets).values()
        )
    return 2 * state * largest


def _attn_kv_width(arch: ModelArch, req: EstimateRequest) -> int:
    """K/V width the attention kernel saves: FlashAttention handles GQA natively; SDPA with a
    padding mask (and eager) repeat K/V to every query head first."""
    return arch.kv_dim if req.attention == "flash" else arch.q_dim


def layer_activation_bytes_per_token(arch: ModelArch, req: EstimateRequest) -> float:
    """Bytes one decoder layer keeps for the backward pass, per token, without recomputation.

    Excludes the attention-score term, which grows with the sequence (see `attention_score_bytes`).
    """
    a = _compute_bytes(req)
    r = base_bytes(req)
    h, i = arch.hidden_size, arch.intermediate_size
    full = _trains_all_weights(req)  # freeze: the trained blocks keep what full keeps
    mixed = _mixed(req) and r == 4  # autocast copies of an fp32 residual stream

    # Linear inputs: under autocast each Linear reading an fp32 tensor keeps its own 16-bit copy;
    # otherwise readers share one tensor.
    def reads(n_readers: int, width: int, dtype_bytes: int) -> float:
        return (n_readers * a if mixed else dtype_bytes) * width

    total = 0.0
    norms = (
        arch.norms_per_layer if arch.family != "gemma2" else 2
    )  # gemma2's post-norms see outputs
    # RMSNorm/LayerNorm keeps its (fp32) input, and its normalized output when its weight trains.
    total += norms * _norm_saved_bytes(req, h, r, full)
    if arch.family == "gemma2":  # post-attention/post-feedforward norms: fp32 copies of outputs
        total += 2 * (4 * h + (r * h if full else 0))
    kv = _attn_kv_width(arch, req)
    if arch.gated_mlp:
        if full:
            total += reads(3, h, r)  # q, k, v read the normed input
            total += reads(2, h, r)  # gate, up
        total += _attention_bytes(arch, req, kv)
        k = max(arch.experts_per_token, 1)
        # gate out (for SiLU), silu(gate) and up (for the product), product (for down_proj)
        kept = 3 + (1 if full else 0)
        if req.liger and not arch.num_experts:  # Liger patches dense gated MLPs only
            kept = liger.gated_mlp_saved_tensors(full)
        total += k * a * i * kept
        if arch.num_experts:
            total += a * h * k  # expert inputs gathered per token
    else:  # GPT-2: LayerNorm, Conv1D(c_attn), attention, c_proj, LayerNorm, c_fc, GeLU, c_proj
        if full:
            total += reads(1, h, r) * 2  # c_attn and c_fc inputs
        total += _attention_bytes(arch, req, kv)
        total += a * i * (1 + (1 if full else 0))  # gelu input, c_proj input
        if dropout_kept(req):
            total += 2 * h  # residual dropout masks (1 byte each)
    if req.method in ("lora", "qlora"):
        total += _lora_activation_bytes(arch, req)
    return total


def _norm_saved_bytes(req: EstimateRequest, h: int, r: int, full: bool) -> float:
    """Per token per RMSNorm: PyTorch's keeps an fp32 copy of its input (and its output when the
    weight trains); Liger's keeps the input in its dtype and an fp32 rstd (liger.py)."""
    if req.liger:
        return liger.rms_norm_saved_bytes(h, r)
    return 4 * h + (r * h if full else 0)


def _attention_bytes(arch: ModelArch, req: EstimateRequest, kv: int) -> float:
    """The attention kernel keeps q, k, v and its output. FlashAttention/SDPA write the output
    already in (batch, seq, heads, dim) layout, so o_proj's input is the same tensor; eager's
    matmul output is re-laid-out, a copy o_proj keeps when it trains."""
    a = _compute_bytes(req)
    if req.attention == "eager":
        return a * 3 * arch.q_dim + (a * arch.q_dim if req.method == "full" else 0)
    return a * (arch.q_dim + 2 * kv + arch.q_dim)


def _lora_activation_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """Per token per layer, PEFT's `lora_B(lora_A(dropout(x)))` for every adapted matrix.

    PEFT casts x to the adapters' fp32; dropout keeps its mask (a 1-byte bool from CUDA's
    fused kernel, a float noise tensor in x's dtype on the CPU) and lora_A keeps its input (a
    16-bit autocast copy under mixed precision). Without dropout and without autocast, the
    adapters reading the same tensor (q/k/v; gate/up) share it.
    """
    targets = lora_targets(arch, req.lora_targets)
    mixed = _mixed(req)
    lora_a_input = 2 if mixed else 4
    if req.lora_dropout > 0 and dropout_kept(req):
        mask = 1 if req.device == "cuda" else 4
        return sum((mask + lora_a_input) * d_in * n for d_in, _o, n in targets.values())
    if mixed:
        return sum(lora_a_input * d_in * n for d_in, _o, n in targets.values())
    groups = {
        "q_proj": "attn_in",
        "k_proj": "attn_in",
        "v_proj": "attn_in",
        "c_attn": "attn_in",
        "gate_proj": "mlp_in",
        "up_proj": "mlp_in",
    }
    seen: dict[str, float] = {}
    for name, (d_in, _o, n) in targets.items():
        seen[groups.get(name, name)] = lora_a_input * d_in * n
    return sum(seen.values())


def attention_score_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """Per layer per token: eager attention keeps the softmax (fp32) and its 16-bit cast, `a*s`
    entries each, Korthikanti's `5as/h` term; FlashAttention/SDPA kernels keep none."""
    if req.attention != "eager":
        return 0
    per = 4 + (2 if req.precision != "fp32" else 0)
    return per * arch.num_heads * req.seq_len


def activation_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """Saved for the backward pass; freeze keeps them only from the first trained block up."""
    tokens = req.batch_size * sequences_per_row(req) * req.seq_len
    layers = req.freeze_layers if req.method == "freeze" else arch.num_layers
    layer = layer_activation_bytes_per_token(arch, req) + attention_score_bytes(arch, req)
    if req.liger:  # final norm only: fused cross-entropy keeps no lm_head input (logits_bytes)
        head = liger.rms_norm_saved_bytes(arch.hidden_size, base_bytes(req))
    else:
        head = 4 * arch.hidden_size + (
            arch.hidden_size * _compute_bytes(req) if _trains_all_weights(req) else 0
        )
    if req.grad_checkpointing:
        # Only each layer's input stays; one layer is recomputed at a time in the backward pass.
        return tokens * (layers * base_bytes(req) * arch.hidden_size + layer + head)
    return tokens * (layers * layer + head)


def logits_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    """Loss buffers: fp32 log-softmax kept, its gradient, and the input gradient (3 x 4 x vocab).

    dpo and kto score tokens with TRL's fused LM head (trl/kernels/chunked_logprob.py), never the
    whole logits: its backward holds a tile of up to 4096 tokens x 32768 vocabulary columns (one
    fp32 copy on CUDA, several on the CPU: `fused_logprob_tile_bytes`), the hidden states'
    gradient, and an fp32 gradient of the head's weight when the head trains. ORPO materialises the logits of chosen and rejected, plus the NLL loss's log-softmax
    over the chosen half.

    With Liger's fused linear cross-entropy (SFT): one chunk of logits, the hidden states'
    gradient and, when the head trains, its weight gradient (`liger.flce_bytes`).
    """
    tokens = req.batch_size * req.seq_len
    if req.objective in ("dpo", "kto"):
        n = tokens * sequences_per_row(req)
        head_trains = req.method == "full" or (
            req.method == "freeze" and (req.freeze_lm_head or req.freeze_embeddings)
        )
        return (
            fused_logprob_tile_bytes(arch, req, n)
            + 4 * n * arch.hidden_size
            + (4 * arch.vocab_size * arch.hidden_size if head_trains else 0)
        )
    if req.objective == "orpo":
        return 12 * arch.vocab_size * 2 * tokens + 4 * arch.vocab_size * tokens
    if req.liger:
        full = req.method == "full"
        return liger.flce_bytes(
            tokens=tokens,
            vocab=arch.vocab_size,
            hidden=arch.hidden_size,
            compute_bytes=_compute_bytes(req),
            hidden_bytes=base_bytes(req),
            head_grad_bytes=(2 if req.precision == "bf16-true" else 4) if full else 0,
        )
    return 12 * arch.vocab_size * tokens


#: TRL's fused LM head computes the logits in tiles of at most this many tokens
#: (trl/kernels/chunked_logprob.py `TOKEN_CHUNK_SIZE`) by this many vocabulary columns
#: (trl/trainer/utils.py `_CHUNKED_LOGPROB_CHUNK_SIZE`), TRL 1.16.
TRL_TILE_TOKENS = 4096
TRL_TILE_VOCAB = 32768


def fused_logprob_tile_bytes(arch: ModelArch, req: EstimateRequest, tokens: int) -> float:
    """What the backward pass of TRL's fused LM head holds for its widest tile (dpo, kto).

    `ChunkedLogProbFunction.backward` (trl/kernels/chunked_logprob.py:394-453) recomputes each
    tile of logits into one buffer. On CUDA, a Triton kernel turns it into the logits' gradient
    in place: one fp32 tile. On the CPU (no Triton), `_backward_tile` (lines 276-289) does it
    with whole-tile torch ops, each a new tensor: per element of the tile, the buffer
    (compute dtype), y, z, log_p, p and grad (5 x fp32), the bool is_target, and at line 289
    `is_target.float() - p` and its product with grad_logprobs (2 x fp32) alive together:
    `c + 29` bytes, 33 in fp32 (measured with an RSS sampler on SmolLM2, DPO full b=2 s=256:
    the process peak is at line 289, 0.9 GiB above the one-tile figure). The forward pass's
    tiles (`_forward_tile`, at most `c + 13` bytes per element, the reference model's included)
    hold less, and no logits of the reference model are kept at all.
    """
    elements = min(tokens, TRL_TILE_TOKENS) * min(arch.vocab_size, TRL_TILE_VOCAB)
    if req.device == "cuda":
        return 4 * elements
    return (_compute_bytes(req) + 5 * 4 + 1 + 2 * 4) * elements


def kv_cache_bytes(arch: ModelArch, req: EstimateRequest) -> float:
    return 2 * arch.num_layers * arch.kv_dim * req.batch_size * req.seq_len * _compute_bytes(req)


# ---------------------------------------------------------------------------
# the estimate
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tensors:
    """One step's tensors per device: each term at its largest, their sum at the peak, and when."""

    breakdown: dict[str, float]  # bytes per term; ZeRO-3 divides the weights, so floats
    at_peak: float
    phase: str  # "backward" | "optimizer step" | "inference"
    notes: tuple[str, ...] = ()


def _inference_tensors(arch: ModelArch, req: EstimateRequest) -> _Tensors:
    """Weights, the KV cache and the prefill's intermediates, and the last position's logits."""
    weights = weight_bytes(arch, req)
    cache = kv_cache_bytes(arch, req)
    tokens = req.batch_size * req.seq_len
    a = _compute_bytes(req)
    # prefill transient: one layer's widest intermediates for the whole prompt
    prefill = (
        tokens
        * a
        * (
            arch.q_dim
            + 2 * arch.kv_dim
            + 3 * arch.intermediate_size * max(arch.experts_per_token, 1)
        )
    )
    # generate() keeps only the last position
    logits = 4 * arch.vocab_size * req.batch_size
    breakdown = {
        "weights": weights,
        "gradients": 0,
        "optimizer": 0,
        "activations": cache + prefill,
        "logits": logits,
    }
    note = "activations = KV cache for batch x seq-len tokens + the prefill's intermediates"
    return _Tensors(breakdown, sum(breakdown.values()), "inference", (note,))


def _training_tensors(arch: ModelArch, req: EstimateRequest) -> _Tensors:
    """Every term per device after ZeRO sharding; the peak is the larger of the backward pass's
    start (activations + logits) and the optimizer step (gradients + its temporaries), on top of
    the weights and optimizer states, which are alive throughout."""
    notes: list[str] = []
    weights = weight_bytes(arch, req)
    grads: float = gradient_bytes(arch, req)
    optim: float = optimizer_bytes(arch, req)
    temp: float = optimizer_step_temp(arch, req)
    weights += reference_bytes(arch, req)
    if reference_bytes(arch, req):
        notes.append(f"{req.objective}: a frozen copy of the model is the reference")
    acts = activation_bytes(arch, req)
    logits = logits_bytes(arch, req)
    weights, grads, optim, temp = _per_device(arch, req, weights, grads, optim, temp)
    if req.gpus > 1 and req.zero == 0:
        notes.append("DDP keeps a second copy of the gradients in its all-reduce buckets")
    if req.method == "qlora":
        # MatMul4Bit dequantizes one matrix at a time into the compute dtype
        widest = max(a * b for a, b, _ in arch.linear_shapes().values())
        acts += widest * _compute_bytes(req)
    backward = acts + logits
    step = grads + temp
    breakdown = {
        "weights": weights,
        "gradients": grads,
        "optimizer": optim + temp,
        "activations": acts,
        "logits": logits,
    }
    return _Tensors(
        breakdown,
        weights + optim + max(backward, step),
        "backward" if backward >= step else "optimizer step",
        tuple(notes),
    )


def _per_device(
    arch: ModelArch, req: EstimateRequest, weights: float, grads: float, optim: float, temp: float
) -> tuple[float, float, float, float]:
    """(weights, gradients, optimizer states, step temporaries) on one of `req.gpus` devices:
    ZeRO-1 shards the optimizer, ZeRO-2 the gradients too, ZeRO-3 the weights too; plain DDP
    keeps a second copy of the gradients."""
    g = req.gpus
    if req.zero >= 1:
        optim /= g
        temp /= g
    if req.zero >= 2:
        grads /= g
    if req.zero >= 3:
        # each rank keeps 1/g of the weights plus the gathered layer it works on (and the next, prefetched)
        layer_w = arch.params_per_layer() * (2 if req.precision != "fp32" else 4)
        weights = weights / g + 2 * layer_w
    if req.gpus > 1 and req.zero == 0:
        grads *= 2  # DDP all-reduces through its own gradient buckets
    return weights, grads, optim, temp


def estimate(arch: ModelArch, req: EstimateRequest) -> Estimate:
    """Peak memory per GPU for one step of `req` on `arch` (pure arithmetic, microseconds):
    the tensors of an inference or a training step, plus the device's overhead."""
    validate(arch, req)
    notes: list[str] = []
    if not arch.exact:
        notes.append(
            f"{arch.family} is not a family tunewiz knows exactly: counts follow a Llama-like layout"
        )
    n_total = arch.num_params()
    n_train = trainable_params(arch, req)
    peak = (
        _inference_tensors(arch, req) if req.method == "inference" else _training_tensors(arch, req)
    )
    notes.extend(peak.notes)
    breakdown = dict(peak.breakdown)
    tensors = peak.at_peak
    phase = peak.phase
    if req.device == "cuda":
        overhead = CUDA_CONTEXT_BYTES + ALLOCATOR_RESERVE * tensors
    else:
        overhead = CPU_PROCESS_BYTES
    breakdown["overhead"] = overhead
    return Estimate(
        params_total=n_total,
        params_trainable=n_train,
        method=req.method,
        precision=req.precision,
        device=req.device,
        gpus=req.gpus,
        zero=req.zero,
        batch_size=req.batch_size,
        seq_len=req.seq_len,
        breakdown={k: int(round(v)) for k, v in breakdown.items()},
        total=int(round(tensors + overhead)),
        peak_phase=phase,
        exact_params=arch.exact,
        notes=tuple(notes),
    )


_REQUEST_FIELDS = frozenset(EstimateRequest.__dataclass_fields__)


def with_(req: EstimateRequest, **changes: Any) -> EstimateRequest:
    """`dataclasses.replace` without its per-call overhead (the recommender calls it thousands
    of times per answer)."""
    unknown = changes.keys() - _REQUEST_FIELDS
    if unknown:
        raise TypeError(f"unknown EstimateRequest fields: {sorted(unknown)}")
    new = object.__new__(EstimateRequest)
    new.__dict__.update(req.__dict__)
    new.__dict__.update(changes)
    return new
