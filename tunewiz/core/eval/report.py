"""An evaluation on disk: summary.json, rows.jsonl, report.md, readable without tunewiz.

Hand tags live in each row's `tags` list, apart from the automatic `categories`
of each output: tagging rewrites the files from what is on disk and never touches
a category, and a new evaluation writes a new folder, so tags are never overwritten.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

from tunewiz.core.errors import UserError
from tunewiz.core.eval.summary import EvalResult

TAG_RE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
SHOWN_METRICS = (("exact", "exact match"), ("f1", "token F1"), ("rouge_l", "ROUGE-L"),
                 ("length_ratio", "length / reference"), ("stopped", "stopped at end-of-turn"),
                 ("repetition", "repetition"))  # fmt: skip


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_all(result: EvalResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result.summary["tags"] = dict(Counter(t for r in result.rows for t in r["tags"]))
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.rows)
    _atomic(out / "rows.jsonl", lines)
    _atomic(out / "summary.json", json.dumps(result.summary, indent=2, ensure_ascii=False) + "\n")
    _atomic(out / "report.md", render_markdown(result))


def load_eval(folder: str | Path) -> EvalResult:
    """An evaluation folder read back; a damaged one is a UserError that says why."""
    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        rows = [
            json.loads(line)
            for line in (folder / "rows.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except OSError as exc:
        raise UserError(f"not an evaluation folder: {exc.strerror}", where=str(folder)) from None
    except ValueError as exc:
        raise UserError(f"this evaluation is damaged: {exc}", where=str(folder)) from None
    if not isinstance(summary, dict) or not all(isinstance(r, dict) and "id" in r for r in rows):
        raise UserError("this evaluation is damaged: unexpected content", where=str(folder))
    return EvalResult(summary, rows, folder)


def set_tag(folder: str | Path, row_id: int, tag: str, *, on: bool = True) -> EvalResult:
    """Add (or with on=False remove) a hand tag on one row, and rewrite the files."""
    if not TAG_RE.match(tag):
        raise UserError(
            f"a tag is 1-40 letters, digits, '_', '.' or '-', got {tag!r}", where="--tag"
        )
    result = load_eval(folder)
    row = next((r for r in result.rows if r["id"] == row_id), None)
    if row is None:
        raise UserError(f"no row {row_id} (rows 1-{len(result.rows)})", where=str(folder))
    tags = [t for t in row.get("tags", []) if t != tag]
    row["tags"] = tags + [tag] if on else tags
    write_all(result, Path(folder))
    return result


def latest_eval(root: str | Path) -> Path | None:
    """The newest evaluation folder under a run's eval/ (or any folder of them)."""
    found = sorted(p.parent for p in Path(root).glob("*/summary.json"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


# -- report.md ---------------------------------------------------------------------


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _quote(text: str | None) -> str:
    """A blockquote: model text stays literal, whatever markdown it contains."""
    if not text:
        return "> (empty)"
    return "\n".join("> " + line.replace("<", "&lt;") for line in text.splitlines())


def got_worse(row: dict) -> bool:
    """A trained model is wrong where the base was right (the `regressed` category)."""
    return any(c["name"] == "regressed" for o in row["outputs"] for c in o["categories"])


def _table(summary: dict) -> list[str]:
    v = summary["main_variant"]
    models = list(summary["models"])
    out = [f"| metric ({v}) | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for split in ("heldout", "train"):
        for key, title in SHOWN_METRICS:
            cells = [
                _fmt(summary["metrics"].get(m, {}).get(v, {}).get(split, {}).get(key))
                for m in models
            ]
            if any(c != "-" for c in cells):
                out.append(f"| {split} {title} | " + " | ".join(cells) + " |")
    return out


def render_markdown(result: EvalResult) -> str:
    s = result.summary
    lines = [f"# Evaluation of {s['target']}", "", f"{s['verdict']}.", ""]
    if s.get("recommended"):
        rec = s["recommended"]
        lines += [f"Keep **{rec['checkpoint']}**: {rec['why']}.", ""]
    lines += _table(s) + ["", "## Checkpoints", "", "| model | step | eval loss | held-out ROUGE-L | right held-out | right train |", "|---|---|---|---|---|---|"]  # fmt: skip
    for c in s["checkpoints"]:
        lines.append(
            f"| {c['name']} | {_fmt(c['step'])} | {_fmt(c['eval_loss'])} | {_fmt(c['heldout_rouge_l'])} "
            f"| {c['heldout_right'][0]}/{c['heldout_right'][1]} | {c['train_right'][0]}/{c['train_right'][1]} |"
        )
    lines += ["", "## Categories", ""]
    for model, counts in s["categories"].items():
        listed = ", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "none"
        lines.append(f"- {model}: {listed}")
    if s.get("tags"):
        lines.append("- hand tags: " + ", ".join(f"{k} {n}" for k, n in sorted(s["tags"].items())))
    if s.get("bench"):
        lines += ["", "## Benchmarks", "", "| model | task | metric | score | stderr | delta vs base |", "|---|---|---|---|---|---|"]  # fmt: skip
        deltas = {(d["model"], d["task"], d["metric"]): d["delta"] for d in s["bench"]["deltas"]}
        for model, scores in s["bench"]["scores"].items():
            for b in scores:
                d = deltas.get((model, b["task"], b["metric"]))
                lines.append(f"| {model} | {b['task']} | {b['metric']} | {_fmt(b['value'])} | {_fmt(b['stderr'])} | {'-' if d is None else f'{d:+.3f}'} |")  # fmt: skip
    lines += ["", "## Rows (the ones that got worse first)"]
    for row in sorted(result.rows, key=lambda r: (not got_worse(r), r["id"])):
        lines += _row_md(row)
    return "\n".join(lines) + "\n"


def _row_md(row: dict) -> list[str]:
    head = f"### {row['id']} ({row['split']}, {row['where']})"
    if row.get("tags"):
        head += " tags: " + ", ".join(row["tags"])
    out = ["", head, "", "**Prompt**", "", _quote(row["prompt"])]
    if row.get("reference") is not None:
        out += ["", "**Reference**", "", _quote(row["reference"])]
    for o in row["outputs"]:
        cats = (
            "; ".join(f"{c['name']}: {c['evidence']}" for c in o["categories"])
            or "no problem found"
        )
        out += ["", f"**{o['model']} ({o['variant']})**: {cats}", "", _quote(o["text"])]
    return out
