"""Everything `tunewiz estimate` answers, as numbers: a `ReportRequest` in, an `EstimateReport` out.

`build_report` resolves the model and the GPU, fills in the options left to it (method,
precision, tokens), estimates each method, recommends one, and prices the run and what to rent.
The CLI only turns flags into a ReportRequest and prints `EstimateReport.to_dict()` as tables or
JSON (the README documents that object, key by key).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunewiz.core.errors import UserError
from tunewiz.core.estimate.advice import (
    METHOD_ORDER,
    Recommendation,
    RentOption,
    recommend,
    rent_table,
    train_hours,
)
from tunewiz.core.estimate.memory import GIB, Estimate, EstimateRequest, estimate, with_
from tunewiz.core.profiles import GpuProfile, ModelArch, find_gpu, load_model_arch

#: Training tokens priced when the user gives no count (the report says it assumed them).
DEFAULT_TOKENS = 10_000_000

#: (name, memory in GiB, how many) of this machine's first GPU, or None: how a report finds
#: the GPU nobody named. A parameter, so tests and callers without NVML can answer for it.
GpuDetector = Callable[[], tuple[str, float, int] | None]


def detect_gpu() -> tuple[str, float, int] | None:
    """(name, GiB, count) of this machine's first NVIDIA GPU through NVML, or None (no torch)."""
    from tunewiz.core.nvml import local_gpus

    gpus = local_gpus()
    return (gpus[0].name, gpus[0].memory_gib, len(gpus)) if gpus else None


@dataclass(frozen=True)
class ReportRequest:
    """What the estimate is asked about; None in a field means "choose for me"."""

    model: str  # hub id (catalog or any), local config.json or model folder
    # Every estimator option but the two below, which replace its method and precision.
    options: EstimateRequest = field(default_factory=EstimateRequest)
    method: str | None = None  # None: the first of full, lora, qlora that fits (lora: no GPU)
    precision: str | None = None  # None: see `default_precision`
    gpu: str | None = None  # a catalog GPU by name; wins over gpu_mem_gib
    gpu_mem_gib: float | None = None  # any GPU by its memory
    tokens: int | None = None  # training tokens in total; or dataset_tokens x epochs
    dataset_tokens: int | None = None
    epochs: float = 1.0


@dataclass(frozen=True)
class GpuChoice:
    """The memory the estimate is held against: a catalog GPU, a size, this machine's GPU or RAM."""

    name: str
    memory_gib: float
    detected: bool = False  # found through NVML, not named by the user
    profile: GpuProfile | None = None  # catalog entry (speed, price, bf16) when there is one

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "memory_gib": self.memory_gib, "detected": self.detected}


@dataclass(frozen=True)
class TrainTime:
    """How long the run takes on a catalog GPU (`gpus` of them), and what that costs."""

    gpu: GpuProfile
    gpus: int
    hours: float
    fits: bool | None  # the time is shown even when it does not fit, and says so

    @property
    def cost_usd(self) -> float:
        return self.hours * self.gpu.price_per_hour_usd * self.gpus

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu.name,
            "hours": round(self.hours, 3),
            "cost_usd": round(self.cost_usd, 2),
            "price_per_hour_usd": self.gpu.price_per_hour_usd,
            "price_date": self.gpu.price_date,
            "price_source": self.gpu.price_source,
            "fits": self.fits,
        }


@dataclass(frozen=True)
class WithoutLiger:
    """The same estimates with Liger kernels off, to show what they save."""

    methods: dict[str, Estimate]
    recommendation: Recommendation | None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {m: e.to_dict()["memory"] for m, e in self.methods.items()}
        if self.recommendation is not None:
            out["recommendation"] = self.recommendation.to_dict()
        return out


@dataclass(frozen=True)
class EstimateReport:
    arch: ModelArch
    request: EstimateRequest  # as estimated: the recommended method when none was forced
    estimate: Estimate  # of `request`
    methods: dict[str, Estimate]  # every method compared (the forced one alone)
    gpu: GpuChoice | None
    recommendation: Recommendation | None  # None without a GPU, and for inference
    tokens: int
    tokens_assumed: bool  # DEFAULT_TOKENS, for want of a count
    time: TrainTime | None  # None without a catalog GPU, and for inference
    rent: list[RentOption]  # cheapest first; empty for inference
    without_liger: WithoutLiger | None  # with Liger kernels asked for only

    @property
    def memory_gib(self) -> float | None:
        return self.gpu.memory_gib if self.gpu else None

    @property
    def fits(self) -> bool | None:
        return self.estimate.fits(self.memory_gib)

    def to_dict(self) -> dict[str, Any]:
        """The `--json` object (README, "--json prints one object"); keys in this order."""
        mem = self.memory_gib
        out: dict[str, Any] = {
            "model": self.arch.name,
            "model_source": self.arch.source,
            **self.estimate.to_dict(),
            "gpu": self.gpu.to_dict() if self.gpu else None,
            "fits": self.fits,
            "recommendation": self.recommendation.to_dict() if self.recommendation else None,
            "methods": {
                m: e.to_dict()["memory"]
                | {"params_trainable": e.params_trainable, "fits": e.fits(mem)}
                for m, e in self.methods.items()
            },
            "request": dict(self.request.__dict__),
            "tokens": self.tokens,
            "tokens_assumed": self.tokens_assumed,
            "time": self.time.to_dict() if self.time else None,
            "rent": [o.to_dict() for o in self.rent],
        }
        if self.without_liger is not None:
            out["without_liger"] = self.without_liger.to_dict()
        return out


# ---------------------------------------------------------------------------
# the choices left to the report
# ---------------------------------------------------------------------------


def default_precision(device: str, bf16: bool) -> str:
    """What precision "auto" means: bf16-mixed on CUDA (fp16-mixed on a GPU without bf16, such as
    a T4 or V100); fp32 on the CPU, where the trainer runs every precision as fp32."""
    if device == "cpu":
        return "fp32"
    return "bf16-mixed" if bf16 else "fp16-mixed"


def machine_ram_gib() -> float | None:
    """This machine's memory, what a CPU run has to fit in; None when psutil cannot tell."""
    try:
        import psutil

        return float(psutil.virtual_memory().total / GIB)
    except Exception:  # noqa: BLE001 - no psutil or no answer both mean "unknown"
        return None


def _catalog_gpu(name: str) -> GpuProfile | None:
    try:
        return find_gpu(name)
    except UserError:  # a GPU the catalog does not list: no speed or price to show
        return None


def resolve_gpu(req: ReportRequest, detect: GpuDetector) -> GpuChoice | None:
    """The GPU named, else the size given, else this machine's GPU (CUDA) or RAM (CPU)."""
    if req.gpu:
        profile = find_gpu(req.gpu)
        return GpuChoice(profile.name, profile.memory_gib, profile=profile)
    if req.gpu_mem_gib is not None:
        if req.gpu_mem_gib <= 0:
            raise UserError(f"must be positive, got {req.gpu_mem_gib:g}", where="--gpu-mem")
        return GpuChoice(f"{req.gpu_mem_gib:g} GiB GPU", req.gpu_mem_gib)
    device = req.options.device
    if device == "cuda" and (found := detect()):
        name, memory_gib, _count = found
        return GpuChoice(name, memory_gib, detected=True, profile=_catalog_gpu(name))
    if device == "cpu" and (ram := machine_ram_gib()) is not None:
        return GpuChoice("this machine's RAM", ram)
    return None


def training_tokens(req: ReportRequest) -> tuple[int, bool]:
    """(tokens to price, whether they were assumed): --tokens, or dataset tokens x epochs."""
    if req.tokens is not None and req.dataset_tokens is not None:
        raise UserError(
            "give either --tokens or --dataset-tokens with --epochs, not both", where="--tokens"
        )
    if req.dataset_tokens is not None:
        if req.dataset_tokens <= 0 or req.epochs <= 0:
            raise UserError(
                "--dataset-tokens and --epochs must be positive", where="--dataset-tokens"
            )
        return int(req.dataset_tokens * req.epochs), False
    if req.tokens is not None:
        if req.tokens <= 0:
            raise UserError(f"must be positive, got {req.tokens}", where="--tokens")
        return req.tokens, False
    return DEFAULT_TOKENS, True


# ---------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------


def train_time(
    arch: ModelArch, req: EstimateRequest, tokens: int, gpu: GpuChoice | None, fits: bool | None
) -> TrainTime | None:
    """Hours and cost on the chosen GPU, when the catalog knows its speed and price."""
    if gpu is None or gpu.profile is None:
        return None
    return TrainTime(
        gpu.profile, req.gpus, train_hours(arch, req, tokens, gpu.profile, req.gpus), fits
    )


def without_liger(
    arch: ModelArch,
    req: EstimateRequest,
    methods: tuple[str, ...],
    gpu_mem_gib: float | None,
    force_method: str | None,
) -> WithoutLiger:
    """`methods` estimated, and the recommendation made, with Liger kernels off."""
    plain = with_(req, liger=False)
    ests = {m: estimate(arch, with_(plain, method=m)) for m in methods}
    rec = None
    if gpu_mem_gib is not None:
        rec = recommend(arch, plain, gpu_mem_gib, force_method=force_method)
    return WithoutLiger(ests, rec)


def build_report(req: ReportRequest, *, detect: GpuDetector = detect_gpu) -> EstimateReport:
    """Estimate, recommend and price what `req` asks; raises UserError naming the bad option."""
    arch = load_model_arch(req.model)
    gpu = resolve_gpu(req, detect)
    bf16 = gpu.profile.bf16 if gpu and gpu.profile else True  # an unknown GPU: assume bf16
    options = with_(
        req.options,
        method=req.method or "lora",
        precision=req.precision or default_precision(req.options.device, bf16),
    )
    tokens, assumed = training_tokens(req)
    methods: tuple[str, ...] = (req.method,) if req.method else METHOD_ORDER
    ests = {m: estimate(arch, with_(options, method=m)) for m in methods}
    mem = gpu.memory_gib if gpu else None
    trains = options.method != "inference"
    rec = None
    if trains and mem is not None:
        rec = recommend(arch, options, mem, force_method=req.method)
    # Shown: the method recommended, else the one forced, else LoRA (the usual choice).
    shown = with_(options, method=rec.method) if rec and rec.method else options
    est = ests[shown.method]
    return EstimateReport(
        arch=arch,
        request=shown,
        estimate=est,
        methods=ests,
        gpu=gpu,
        recommendation=rec,
        tokens=tokens,
        tokens_assumed=assumed,
        time=train_time(arch, shown, tokens, gpu, est.fits(mem)) if trains else None,
        rent=rent_table(arch, shown, tokens) if trains else [],
        without_liger=(
            without_liger(arch, options, methods, mem, req.method)
            if options.liger and trains
            else None
        ),
    )
