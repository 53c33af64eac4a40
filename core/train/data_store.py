"""The prepared (tokenized) data, stored in the run directory by the launcher and read by the worker.

Preparing once in the launcher validates the data before anything detaches, and
makes resume use exactly the rows the run started with.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_DIR = "data"


def save(run_dir: Path, train: list[dict], eval_rows: list[dict] | None) -> None:
    folder = Path(run_dir) / DATA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "train.jsonl", train)
    if eval_rows:
        _write(folder / "eval.jsonl", eval_rows)


def load(run_dir: Path) -> tuple[list[dict], list[dict]]:
    folder = Path(run_dir) / DATA_DIR
    train = _read(folder / "train.jsonl")
    eval_path = folder / "eval.jsonl"
    return train, (_read(eval_path) if eval_path.is_file() else [])


KEYS = ("input_ids", "labels", "position_ids")


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            if "input_ids" not in row:  # preference rows (prompt/chosen/rejected): TRL tokenizes
                fh.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
                continue
            fh.write(
                json.dumps({k: list(row[k]) for k in KEYS if k in row}, separators=(",", ":"))
                + "\n"
            )


def _read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
