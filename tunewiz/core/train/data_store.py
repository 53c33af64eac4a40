"""The prepared (tokenized) data, stored in the run directory by the worker while `preparing`.

Stored once, so a resume uses exactly the rows the run started with. train.jsonl
appears last and whole (written aside, then renamed): its presence means the data
is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DATA_DIR = "data"


def save(run_dir: Path, train: list[dict], eval_rows: list[dict] | None) -> None:
    folder = Path(run_dir) / DATA_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if eval_rows:
        _write(folder / "eval.jsonl", eval_rows)
    _write(folder / "train.jsonl", train)


def is_complete(run_dir: Path) -> bool:
    return (Path(run_dir) / DATA_DIR / "train.jsonl").is_file()


def load(run_dir: Path) -> tuple[list[dict], list[dict]]:
    folder = Path(run_dir) / DATA_DIR
    train = _read(folder / "train.jsonl")
    eval_path = folder / "eval.jsonl"
    return train, (_read(eval_path) if eval_path.is_file() else [])


KEYS = ("input_ids", "labels", "position_ids")


def _write(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a copy of the user's data
    with open(fd, "w", encoding="utf-8") as fh:
        for row in rows:
            if "input_ids" not in row:  # preference rows (prompt/chosen/rejected): TRL tokenizes
                fh.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
                continue
            fh.write(
                json.dumps({k: list(row[k]) for k in KEYS if k in row}, separators=(",", ":"))
                + "\n"
            )
    os.replace(tmp, path)


def _read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
