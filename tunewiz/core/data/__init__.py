"""Data handling: load what users bring, detect its format, check every row, template, mask,
tokenize, split and pack it.

    report = inspect_data(cfg.data, tokenizer)      # a DataReport: problems with places, stats
    prepared = prepare(cfg.data, tokenizer)         # PreparedData for training

Rows are rendered with the tokenizer's own chat template, or DEFAULT_CHAT_TEMPLATE
(ChatML) for a model without one; see `chat_template_for`. Nothing heavy is imported
here: `datasets`/pyarrow/numpy load inside the functions that need them.
"""

from __future__ import annotations

from pathlib import Path

from tunewiz.core.paths import profiles_dir

SAMPLE_DATASET: Path = profiles_dir() / "datasets" / "lumen_isle.jsonl"
# Questions about the same island that the sample answers only indirectly: never trained on,
# so evaluating on them tells learning from memorising (`validation_file = "sample-heldout"`).
SAMPLE_HELDOUT: Path = profiles_dir() / "datasets" / "lumen_isle_heldout.jsonl"

from tunewiz.core.data.formats import FORMAT_NAMES, detect_format, normalize, suggest_task  # noqa: E402
from tunewiz.core.data.pipeline import (  # noqa: E402
    TASK_FORMATS,
    TASK_HELP,
    DataCancelled,
    PreparedData,
    RowView,
    check_task_reads,
    detect,
    inspect_data,
    no_usable_reason,
    packing_enabled,
    prepare,
    row_view,
    rows_hint,
)
from tunewiz.core.data.report import DataReport, Problem, TokenStats  # noqa: E402
from tunewiz.core.data.stats import pack, split, token_stats  # noqa: E402
from tunewiz.core.data.template import (  # noqa: E402
    DEFAULT_CHAT_TEMPLATE,
    IGNORE_INDEX,
    chat_template_for,
    masking_preview,
    render,
)

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "FORMAT_NAMES",
    "IGNORE_INDEX",
    "SAMPLE_DATASET",
    "SAMPLE_HELDOUT",
    "TASK_FORMATS",
    "TASK_HELP",
    "DataCancelled",
    "DataReport",
    "PreparedData",
    "RowView",
    "Problem",
    "TokenStats",
    "chat_template_for",
    "check_task_reads",
    "detect",
    "detect_format",
    "inspect_data",
    "masking_preview",
    "no_usable_reason",
    "normalize",
    "pack",
    "packing_enabled",
    "prepare",
    "render",
    "rows_hint",
    "row_view",
    "split",
    "suggest_task",
    "token_stats",
]
