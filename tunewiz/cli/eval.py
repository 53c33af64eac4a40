"""`tunewiz eval`: is the fine-tune better than the base, where does it fail, which checkpoint
to keep. A thin layer over `tunewiz.core.eval`; model text is printed literally (rich Text)."""

from __future__ import annotations

import json
import sys
import time

from tunewiz.cli.chat import add_common
from tunewiz.cli.common import quiet_libraries


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="Evaluate a run's checkpoints against the base: metrics, error categories, benchmarks.",
        description="TARGET is a run (name under --runs-dir, or its folder) or a model (hub id, "
        "folder, .gguf, or `default`) with --prompts. Results go to RUN/eval/<id>/.",
    )
    p.add_argument("target", help="A run name or folder, or a model.")
    p.add_argument(
        "--checkpoints",
        help="all, or a comma list of best,last,final,N (default: final, else the last).",
    )
    p.add_argument("--prompts", help="Held-out prompts: any data file (answers optional).")
    p.add_argument(
        "--train-sample",
        type=int,
        default=16,
        help="Training rows also evaluated, for the overfitting check (0: none).",
    )
    p.add_argument("--no-base", action="store_true", help="Do not evaluate the base model.")
    p.add_argument("--max-new-tokens", type=int, default=64, help="Longest answer, in tokens.")
    p.add_argument(
        "--temperature", default="0", help="0 is greedy; a comma list runs a sweep: 0,0.5,1.0."
    )
    p.add_argument("--samples", type=int, default=1, help="Answers per prompt when sampling.")
    p.add_argument("--batch-size", type=int, default=16, help="Prompts per generate call.")
    p.add_argument(
        "--bench",
        help="lm-eval tasks or task YAML paths, comma separated: arc_easy,hellaswag,...",
    )
    p.add_argument("--limit", type=int, help="Benchmarks: only the first N examples per task.")
    p.add_argument("--seed", type=int, default=0, help="Seed for sampling and the training sample.")
    p.add_argument("--out", help="Output folder (default: RUN/eval/<date-time>).")
    p.add_argument("--json", action="store_true", help="Print the summary as one JSON object.")
    p.add_argument("--tag", metavar="ROW=TAG", action="append", help="Add a hand tag to a row.")
    p.add_argument("--untag", metavar="ROW=TAG", action="append", help="Remove a hand tag.")
    p.add_argument(
        "--eval",
        dest="eval_dir",
        help="With --tag/--untag: the evaluation folder (default: newest).",
    )
    add_common(p)
    p.set_defaults(func=cmd_eval)


def _split(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def request_from(args):
    from tunewiz.core.errors import UserError
    from tunewiz.core.eval import EvalRequest

    try:
        temps = [float(t) for t in _split(args.temperature)]
    except ValueError:
        raise UserError("expected numbers like 0,0.5,1.0", where="--temperature") from None
    return EvalRequest(
        target=args.target,
        checkpoints=_split(args.checkpoints),
        prompts=args.prompts,
        train_sample=args.train_sample,
        temperatures=temps,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        bench=_split(args.bench),
        limit=args.limit,
        base=not args.no_base,
        runs_dir=args.runs_dir,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        seed=args.seed,
        out=args.out,
    )


def cmd_eval(args) -> int:
    if args.tag or args.untag:
        return cmd_tag(args)
    from rich.console import Console

    from tunewiz.core.eval import evaluate, make_plan

    req = request_from(args)
    make_plan(req)  # every input checked (in seconds) before the slow imports and loads
    quiet_libraries()
    err = Console(stderr=True)
    result = evaluate(req, progress=progress_printer(err))
    if args.json:
        sys.stdout.write(json.dumps(result.summary, ensure_ascii=False) + "\n")
        return 0
    print_summary(Console(highlight=False), result)
    return 0


def progress_printer(err):
    from rich.text import Text

    started = time.perf_counter()
    last = [0.0]

    def show(done: int, total: int, what: str) -> None:
        now = time.perf_counter()
        if now - last[0] < 1 and done < total:
            return
        last[0] = now
        eta = (now - started) / done * (total - done) if done else None
        text = f"{what}: {done}/{total} prompts" + (f", about {eta:.0f} s left" if eta else "")
        err.print(Text(text, style="dim"))

    return show


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def print_summary(console, result) -> None:
    from rich.table import Column, Table
    from rich.text import Text

    s = result.summary
    table = Table(
        Column("model", no_wrap=True),  # checkpoint names must stay whole
        "step",
        "eval loss",
        "held-out ROUGE-L",
        "right held-out",
        "right train",
    )
    for c in s["checkpoints"]:
        table.add_row(
            Text(c["name"]),
            _cell(c["step"]),
            _cell(c["eval_loss"]),
            _cell(c["heldout_rouge_l"]),
            "{}/{}".format(*c["heldout_right"]),
            "{}/{}".format(*c["train_right"]),
        )
    console.print(table)
    console.print(Text(s["verdict"] + "."))
    if s.get("recommended"):
        rec = s["recommended"]
        console.print(Text(f"keep {rec['checkpoint']}: {rec['why']}."))
    for model, counts in s["categories"].items():
        listed = ", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "none"
        console.print(Text(f"{model}: {listed}"))
    if s.get("bench"):
        print_bench(console, s["bench"])
    console.print(Text(f"report: {result.out_dir / 'report.md'} ({s['seconds']} s)"))


def print_bench(console, bench: dict) -> None:
    from rich.text import Text

    deltas = {(d["model"], d["task"], d["metric"]): d["delta"] for d in bench["deltas"]}
    for model, scores in bench["scores"].items():
        for b in scores:
            d = deltas.get((model, b["task"], b["metric"]))
            stderr = f" ± {b['stderr']:.3f}" if b["stderr"] is not None else ""
            delta = f"  ({d:+.3f} vs base)" if d is not None else ""
            console.print(
                Text(f"{model} {b['task']} {b['metric']}: {b['value']:.3f}{stderr}{delta}")
            )


def _parse_tag(spec: str, flag: str) -> tuple[int, str]:
    from tunewiz.core.errors import UserError

    row, sep, tag = spec.partition("=")
    if not sep or not row.strip().isdigit():
        raise UserError(f"expected ROW=TAG, e.g. 3=hallucination, got {spec!r}", where=flag)
    return int(row), tag.strip()


def cmd_tag(args) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.text import Text

    from tunewiz.core.errors import UserError
    from tunewiz.core.eval import latest_eval, set_tag
    from tunewiz.core.models import find_run

    folder = Path(args.eval_dir) if args.eval_dir else None
    if folder is None:
        run_dir = find_run(args.target, args.runs_dir)
        root = (run_dir / "eval") if run_dir else Path(args.runs_dir) / "eval"
        folder = latest_eval(root)
        if folder is None:
            raise UserError(
                "no evaluation to tag yet", where=str(root), hint="run tunewiz eval first"
            )
    for spec in args.tag or []:
        set_tag(folder, *_parse_tag(spec, "--tag"), on=True)
    for spec in args.untag or []:
        set_tag(folder, *_parse_tag(spec, "--untag"), on=False)
    Console(highlight=False).print(Text(f"tags saved in {folder / 'rows.jsonl'}"))
    return 0
