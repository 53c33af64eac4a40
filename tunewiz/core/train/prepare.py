"""Preparing a run's data inside its detached worker, with progress in status.json.

The launcher only checks what answers in about two seconds (options, model config,
the data's first rows, disk space) and detaches: tokenizing a real dataset takes
minutes, and a dropped terminal in that window must not lose the run. Problems
found here end the run `failed` with the same message the launcher would have
printed (a UserError names the file, line or field).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewiz.core import runs
from tunewiz.core.config import RunConfig
from tunewiz.core.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tunewiz.core.data import PreparedData
    from tunewiz.core.train.stopflag import StopFlag

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 2.0


class StopCheck:
    """Answers `is_set()` like a threading.Event: a signal or the STOP file asks to stop."""

    def __init__(self, run_dir: Path, stop: StopFlag) -> None:
        self.run_dir, self.stop = run_dir, stop

    def is_set(self) -> bool:
        return bool(self.stop.requested) or (self.run_dir / runs.STOP_FILE).exists()


class Progress:
    """Rows done (and the total when known) into status.json and train.log every few seconds."""

    def __init__(self, run_dir: Path, total: int | None) -> None:
        self.run_dir, self.total = run_dir, total
        self.t0 = self.last = time.time()

    def __call__(self, rows_done: int) -> None:
        now = time.time()
        if now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        runs.write_status(self.run_dir, rows_done=rows_done)
        info = runs.read_run(self.run_dir)
        of = f"/{self.total} ({100 * rows_done / self.total:.0f}%)" if self.total else ""
        log.info(
            "preparing the data: %d%s rows, %.0f rows/s, ETA %s",
            rows_done,
            of,
            rows_done / max(now - self.t0, 1e-9),
            runs.format_duration(info.eta_s),
        )


def cpu_count() -> int:
    """Cores this process may use (a container or taskset may allow fewer than the machine has)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def prepare_run_data(
    run_dir: Path, cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, stop: StopFlag
) -> None:
    """Tokenize the run's data into data/ (once: a resumed run reuses it)."""
    from tunewiz.core import data
    from tunewiz.core.train import data_store

    if data_store.is_complete(run_dir):
        return
    total = data.rows_hint(cfg.data)
    runs.write_status(
        run_dir, state="preparing", prepare_started_at=time.time(), rows_done=0, rows_total=total
    )
    t0 = time.time()
    prepared = data.prepare(
        cfg.data,
        tokenizer,
        cancel=StopCheck(run_dir, stop),
        progress=Progress(run_dir, total),
        num_proc=cpu_count(),
        objective=cfg.training.objective,
    )
    check_prepared(cfg, prepared)
    data_store.save(run_dir, prepared.train, prepared.eval)
    runs.write_private(run_dir / "chat_template.jinja", prepared.chat_template or "")
    write_data_report(run_dir, prepared)
    runs.write_private(
        run_dir / runs.ESTIMATE_FILE, json.dumps(estimate(cfg), indent=2, default=str)
    )
    report = prepared.report
    rows = report.rows_total
    runs.write_status(run_dir, rows_done=rows, rows_total=rows, prepare_s=time.time() - t0)
    # Nothing is dropped silently: the rows skipped are counted here and listed in the report.
    skipped = f", {report.rows_bad} skipped (listed in data_report.json)" if report.rows_bad else ""
    log.info("data prepared: %d rows used%s in %.1f s", report.rows_ok, skipped, time.time() - t0)


def check_prepared(cfg: RunConfig, prepared: PreparedData) -> None:
    if not prepared.train:
        raise UserError(
            "no training rows left after preparing the data", where=f"data: {cfg.data.data}"
        )
    if cfg.training.load_best_model_at_end and not prepared.eval:
        raise UserError(
            "load_best_model_at_end needs validation rows",
            where="training.load_best_model_at_end",
            hint="set data.validation_split above 0 or give data.validation_file",
        )


def write_data_report(run_dir: Path, prepared: PreparedData) -> None:
    report = getattr(prepared, "report", None)
    if report is None:
        return
    try:
        runs.write_private(
            run_dir / "data_report.json", json.dumps(report.to_dict(), indent=2, default=str)
        )
    except Exception as exc:  # noqa: BLE001 - the report is informative, never a reason to fail
        log.warning("could not write the data report: %s", exc)


def detect_device() -> tuple[str, float | None]:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.name, props.total_memory / 2**30
    return "cpu", None


def estimate(cfg: RunConfig) -> dict[str, Any]:
    """The estimator's prediction for estimate.json; a note instead if it cannot answer."""
    device, gpu_mem_gib = detect_device()
    try:
        from tunewiz.core.estimate import estimate_for_run

        return estimate_for_run(cfg, device=device, gpu_mem_gib=gpu_mem_gib)
    except Exception as exc:  # noqa: BLE001 - a missing estimate must not stop a run
        log.warning("no estimate for this run: %s", exc)
        return {
            "available": False,
            "reason": str(exc),
            "device": device,
            "gpu_mem_gib": gpu_mem_gib,
        }
