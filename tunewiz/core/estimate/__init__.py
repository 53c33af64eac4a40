"""The memory, time and cost estimator (pure arithmetic: no torch, no network).

`estimate(arch, req)` gives peak memory per GPU term by term; `recommend` picks a
method and batch for a GPU; `rent_table` ranks GPUs by cost; `build_report` puts them
together for a model and a GPU (what `tunewiz estimate` shows); the `*_run` helpers
connect it to a RunConfig.
"""

from tunewiz.core.estimate.advice import (
    HEADROOM,
    MFU,
    Recommendation,
    RentOption,
    Suggestion,
    max_batch,
    recommend,
    rent_table,
    split_batch,
    suggestions,
    train_flops,
    train_hours,
    what_would_fit,
)
from tunewiz.core.estimate.for_run import estimate_for_run, oom_advice, request_from_run_config
from tunewiz.core.estimate.memory import (
    ATTENTIONS,
    DEVICES,
    ESTIMATE_METHODS,
    ESTIMATE_PRECISIONS,
    GIB,
    OBJECTIVES,
    OPTIMIZERS,
    QUANTS,
    TERMS,
    ZERO_STAGES,
    Estimate,
    EstimateRequest,
    estimate,
    validate,
)
from tunewiz.core.estimate.report import EstimateReport, ReportRequest, build_report

__all__ = [
    "ATTENTIONS",
    "DEVICES",
    "ESTIMATE_METHODS",
    "ESTIMATE_PRECISIONS",
    "GIB",
    "MFU",
    "OBJECTIVES",
    "OPTIMIZERS",
    "QUANTS",
    "TERMS",
    "ZERO_STAGES",
    "Estimate",
    "EstimateReport",
    "EstimateRequest",
    "ReportRequest",
    "build_report",
    "Recommendation",
    "RentOption",
    "Suggestion",
    "suggestions",
    "estimate",
    "estimate_for_run",
    "HEADROOM",
    "max_batch",
    "split_batch",
    "oom_advice",
    "recommend",
    "rent_table",
    "request_from_run_config",
    "train_flops",
    "train_hours",
    "validate",
    "what_would_fit",
]
