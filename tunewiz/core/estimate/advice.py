"""What to do with an estimate: pick a method and batch that fit, time and cost, what to rent.

Time: a training step costs `6*N` FLOPs per token for full fine-tuning (forward 2N,
backward 4N: input and weight gradients) and about `4*N` for a frozen base
(LoRA/QLoRA compute no weight gradients for the base), plus another `2*N` when
gradient checkpointing re-runs the forward pass (Transformer Math 101; Kaplan et
al. 2020). GPUs reach a fraction of their peak, the model FLOPs utilisation
(MFU), stated in `MFU` below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunewiz.core.errors import UserError
from tunewiz.core.estimate.memory import GIB, Estimate, EstimateRequest, estimate, with_
from tunewiz.core.profiles import GpuProfile, ModelArch, load_gpus

#: Model FLOPs utilisation of well-tuned HF Trainer fine-tuning runs (bf16, FlashAttention/SDPA).
#: QLoRA dequantizes every 4-bit matrix in each forward and backward matmul, which costs time.
MFU = {"full": 0.40, "lora": 0.40, "qlora": 0.28}
#: Data-parallel scaling per GPU beyond the first (all-reduce / all-gather traffic).
MULTI_GPU_EFFICIENCY = 0.90
MAX_BATCH = 256
#: A recommendation leaves this share of the card free: the CUDA context, allocator
#: fragmentation and other processes take memory that the estimate does not see.
HEADROOM = 0.05
METHOD_ORDER = ("full", "lora", "qlora")
#: The methods as people write them (the lowercase names are config and CLI values).
METHOD_LABELS = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}


def method_label(method: str) -> str:
    """A method as people write it; one without a label (freeze, inference) by its CLI name."""
    return METHOD_LABELS.get(method, method)


@dataclass(frozen=True)
class Recommendation:
    method: str | None
    batch_size: int | None  # per-device batch to use: the one asked for, or a divisor that fits
    fits: bool
    reason: str
    estimate: Estimate | None = None  # for the recommended method and batch
    suggestions: tuple[str, ...] = field(default=())  # what would fit, when nothing does

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "batch_size": self.batch_size,
            "fits": self.fits,
            "reason": self.reason,
            "total_gib": round(self.estimate.total / GIB, 3) if self.estimate else None,
            "suggestions": list(self.suggestions),
        }


def _fits(arch: ModelArch, req: EstimateRequest, mem_bytes: float) -> bool:
    return estimate(arch, req).total <= mem_bytes


def split_batch(batch: int, fits: int) -> tuple[int, int]:
    """(per-device batch, accumulation factor) for an effective `batch` when at most `fits`
    rows fit at once: the largest divisor of `batch` that fits, so batch x accumulation
    stays exactly what was asked (8 with 6 fitting -> 4 x 2, not 6 x 2 = 12)."""
    fits = max(1, min(fits, batch))
    b = next(d for d in range(fits, 0, -1) if batch % d == 0)
    return b, batch // b


def max_batch(arch: ModelArch, req: EstimateRequest, gpu_mem_gib: float) -> int:
    """Largest per-device batch (0 if none) that fits; memory is monotone in batch, so bisect."""
    mem = gpu_mem_gib * GIB
    if not _fits(arch, with_(req, batch_size=1), mem):
        return 0
    lo, hi = 1, 2
    while hi <= MAX_BATCH and _fits(arch, with_(req, batch_size=hi), mem):
        lo, hi = hi, hi * 2
    hi = min(hi, MAX_BATCH + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _fits(arch, with_(req, batch_size=mid), mem):
            lo = mid
        else:
            hi = mid
    return lo


def recommend(
    arch: ModelArch, req: EstimateRequest, gpu_mem_gib: float, *, force_method: str | None = None
) -> Recommendation:
    """Prefer full, then LoRA, then QLoRA (or the forced method), at the batch asked for or,
    when that does not fit, the largest divisor of it that does (see `split_batch`)."""
    methods = (force_method,) if force_method else METHOD_ORDER
    usable = gpu_mem_gib * (1 - HEADROOM)
    for method in methods:
        r = with_(req, method=method)
        fits = max_batch(arch, r, usable)
        if fits:
            # The batch to use keeps the user's effective batch: theirs when it fits, else
            # its largest divisor that fits, with accumulation making up the rest.
            b, accum = split_batch(req.batch_size, fits)
            est = estimate(arch, with_(r, batch_size=b))
            rows = f"{fits} row{'s' if fits != 1 else ''}"
            why = (
                f"{method_label(method)} fits in {gpu_mem_gib:g} GiB at batch {b} "
                f"({gib(est.total)} at the peak, keeping {HEADROOM:.0%} of the card free; "
                f"up to {rows} per step would fit)"
            )
            if method != methods[0]:
                why += "; " + ", ".join(
                    f"{method_label(m)} does not fit even at batch 1"
                    for m in methods[: methods.index(method)]
                )
            if accum > 1:
                why += (
                    f"; your batch of {req.batch_size} does not fit: use batch {b} and multiply "
                    f"gradient_accumulation_steps by {accum} for the same effective batch"
                )
            return Recommendation(method, b, True, why, est)
    est = estimate(arch, with_(req, method=methods[-1], batch_size=1))
    return Recommendation(
        None,
        None,
        False,
        f"{' / '.join(methods)} do{'es' if len(methods) == 1 else ''} not fit in {gpu_mem_gib:g} GiB "
        f"even at batch 1 ({methods[-1]} needs {gib(est.total)})",
        est,
        tuple(what_would_fit(arch, with_(req, method=methods[-1]), gpu_mem_gib)),
    )


def gib(n_bytes: float) -> str:
    """Memory for people: 23.5 GiB, 0.8 GiB."""
    return f"{n_bytes / GIB:.1f} GiB"


@dataclass(frozen=True)
class Suggestion:
    text: str  # in CLI words
    changes: dict[str, Any]  # EstimateRequest fields to change (gpu_mem_gib for "a bigger GPU")


def _describe(changes: dict[str, Any]) -> str:
    words = []
    if changes.get("method"):
        words.append(f"train with {changes['method'].upper()} (--method {changes['method']})")
    if changes.get("grad_checkpointing"):
        words.append("gradient checkpointing (--grad-checkpointing)")
    if changes.get("seq_len"):
        words.append(f"sequences of {changes['seq_len']} tokens (--seq-len {changes['seq_len']})")
    return " with ".join(words) if len(words) < 3 else f"{words[0]} with {words[1]} and {words[2]}"


def suggestions(arch: ModelArch, req: EstimateRequest, gpu_mem_gib: float) -> list[Suggestion]:
    """Concrete changes that make batch 1 fit, nearest (fewest, smallest changes) first: up to
    three of a lighter method, gradient checkpointing and shorter sequences; then, on CUDA, more
    GPUs of this size with ZeRO-3, and the smallest bigger catalog GPU."""
    r1 = with_(req, batch_size=1)
    out = _lighter_settings(arch, r1, gpu_mem_gib * GIB)
    if req.device == "cuda":
        out += [
            s for s in (_more_gpus(arch, r1, gpu_mem_gib), _bigger_gpu(arch, r1, gpu_mem_gib)) if s
        ]
    return out


def _setting_combos(req: EstimateRequest) -> list[tuple[str, bool, int]]:
    """(method, gradient checkpointing, seq_len) that differ from `req`, fewest changes first, then
    the longest sequence, then the heaviest method: a lighter method (full -> lora -> qlora),
    checkpointing on, and the sequence halved down to 128 tokens."""
    methods = [req.method] + {"full": ["lora", "qlora"], "lora": ["qlora"]}.get(req.method, [])
    seqs = [req.seq_len]
    while seqs[-1] > 128:
        seqs.append(seqs[-1] // 2)
    combos = []
    for mi, method in enumerate(methods):
        for gc in sorted({req.grad_checkpointing, True}):
            for si, seq in enumerate(seqs):
                n_changes = (mi > 0) + (gc != req.grad_checkpointing) + (si > 0)
                if n_changes:
                    combos.append((n_changes, si, mi, method, gc, seq))
    combos.sort(key=lambda c: c[:3])
    return [(method, gc, seq) for *_order, method, gc, seq in combos]


def _lighter_settings(arch: ModelArch, r1: EstimateRequest, mem: float) -> list[Suggestion]:
    """Up to three combinations from `_setting_combos` that fit `mem` bytes at batch 1, the
    nearest of each kind (which of method, checkpointing and sequence length they change)."""
    out: list[Suggestion] = []
    seen_kinds = set()
    for method, gc, seq in _setting_combos(r1):
        if len(out) >= 3:
            break
        kind = (method != r1.method, gc != r1.grad_checkpointing, seq != r1.seq_len)
        if kind in seen_kinds:
            continue
        if _fits(arch, with_(r1, method=method, grad_checkpointing=gc, seq_len=seq), mem):
            seen_kinds.add(kind)
            changes: dict[str, Any] = {}
            if method != r1.method:
                changes["method"] = method
            if gc != r1.grad_checkpointing:
                changes["grad_checkpointing"] = gc
            if seq != r1.seq_len:
                changes["seq_len"] = seq
            out.append(Suggestion(_describe(changes), changes))
    return out


def _more_gpus(arch: ModelArch, r1: EstimateRequest, gpu_mem_gib: float) -> Suggestion | None:
    """The fewest GPUs of this size (2, 4 or 8) that fit with ZeRO-3, checkpointing only if needed."""
    for n, gc in ((n, gc) for n in (2, 4, 8) for gc in sorted({r1.grad_checkpointing, True})):
        if _fits(arch, with_(r1, gpus=n, zero=3, grad_checkpointing=gc), gpu_mem_gib * GIB):
            extra = " and gradient checkpointing" if gc != r1.grad_checkpointing else ""
            return Suggestion(
                f"{n} GPUs of this size with ZeRO-3/FSDP{extra} (--gpus {n} --zero 3)",
                {"gpus": n, "zero": 3, "grad_checkpointing": gc},
            )
    return None


def _bigger_gpu(arch: ModelArch, r1: EstimateRequest, gpu_mem_gib: float) -> Suggestion | None:
    """The smallest (then cheapest) catalog GPU bigger than this one that fits alone, without
    checkpointing when it can."""
    bigger = sorted(
        (g for g in load_gpus() if g.memory_gib > gpu_mem_gib),
        key=lambda g: (g.memory_gib, g.price_per_hour_usd),
    )
    gcs = sorted({r1.grad_checkpointing, True})
    for gpu, gc in ((g, gc) for gc in gcs for g in bigger):
        if _fits(arch, with_(r1, gpus=1, zero=0, grad_checkpointing=gc), gpu.memory_gib * GIB):
            extra = " with gradient checkpointing" if gc != r1.grad_checkpointing else ""
            return Suggestion(
                f"a bigger GPU: {gpu.name} ({gpu.memory_gib:g} GiB){extra}",
                {"gpu_mem_gib": gpu.memory_gib, "grad_checkpointing": gc},
            )
    return None


def what_would_fit(arch: ModelArch, req: EstimateRequest, gpu_mem_gib: float) -> list[str]:
    """`suggestions` in words; says so when nothing up to QLoRA, checkpointing and 128 tokens fits."""
    found = [s.text for s in suggestions(arch, req, gpu_mem_gib)]
    return found or [
        "nothing fits this device: even QLoRA with gradient checkpointing and 128-token "
        "sequences needs more memory"
    ]


# ---------------------------------------------------------------------------
# time and cost
# ---------------------------------------------------------------------------


def train_flops(arch: ModelArch, req: EstimateRequest, tokens: int) -> float:
    n = arch.num_params()
    per_token = 6 * n if req.method == "full" else 4 * n
    if req.grad_checkpointing:
        per_token += 2 * n
    return per_token * tokens


def train_hours(
    arch: ModelArch, req: EstimateRequest, tokens: int, gpu: GpuProfile, n_gpus: int = 1
) -> float:
    mfu = MFU.get(req.method, 0.4)
    scale = n_gpus * (MULTI_GPU_EFFICIENCY if n_gpus > 1 else 1.0)
    rate = gpu.bf16_tflops * 1e12 * mfu * scale
    return train_flops(arch, req, tokens) / rate / 3600


@dataclass(frozen=True)
class RentOption:
    gpu: str
    n_gpus: int
    memory_gib: float  # per GPU
    zero: int
    grad_checkpointing: bool
    batch_size: int  # per device
    hours: float
    cost_usd: float
    price_per_hour_usd: float  # for the whole node
    price_date: str
    price_source: str

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def rent_table(
    arch: ModelArch, req: EstimateRequest, tokens: int, gpus: list[GpuProfile] | None = None
) -> list[RentOption]:
    """Every catalog GPU, alone and in 2/4/8-GPU nodes, that fits `req.method` with HEADROOM
    free: cheapest to the cent first, then cheapest per hour, then fastest.

    Nodes use plain data parallelism when the model fits one GPU, else ZeRO-2, else ZeRO-3; where
    nothing fits, gradient checkpointing is turned on (and its recomputation priced in).
    """
    if tokens <= 0:
        raise UserError(f"must be positive, got {tokens}", where="--tokens")
    gpus = load_gpus() if gpus is None else gpus
    rows: list[RentOption] = []
    base = with_(req, device="cuda")
    options = [
        (n, zero, gc)
        for gc in sorted({req.grad_checkpointing, True})
        for n in (1, 2, 4, 8)
        for zero in ((0,) if n == 1 else (0, 2, 3))
    ]
    for gpu in gpus:
        done: set[int] = set()
        for n, zero, gc in options:
            if n in done:
                continue
            r = with_(base, gpus=n, zero=zero, grad_checkpointing=gc)
            b = max_batch(arch, r, gpu.memory_gib * (1 - HEADROOM))
            if b:
                done.add(n)
                hours = train_hours(arch, r, tokens, gpu, n)
                price = gpu.price_per_hour_usd * n
                rows.append(
                    RentOption(
                        gpu.name,
                        n,
                        gpu.memory_gib,
                        zero,
                        gc,
                        b,
                        hours,
                        hours * price,
                        price,
                        gpu.price_date,
                        gpu.price_source,
                    )
                )
    # Cents first; below a cent every job costs the same to a user (fractions of a cent
    # would order them at random), so the cheapest card to rent comes first, then the fastest.
    rows.sort(key=lambda o: (round(o.cost_usd, 2), o.price_per_hour_usd, o.hours))
    return rows
