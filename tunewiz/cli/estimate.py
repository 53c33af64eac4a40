"""`tunewiz estimate MODEL ...`: will it fit, with which method and batch, and what will it cost?

Answers without torch, without a GPU and without network (catalog models).
"""

from __future__ import annotations

import argparse
import json
import sys

from tunewiz.core.config import OBJECTIVES, finite_float
from tunewiz.core.estimate.memory import (
    ATTENTIONS,
    DEVICES,
    ESTIMATE_METHODS,
    ESTIMATE_PRECISIONS,
    OPTIMIZERS,
    QUANTS,
)

DEFAULT_TOKENS = 10_000_000


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "estimate",
        help="Memory, time and cost of fine-tuning a model, before you rent a GPU.",
        description="Estimate peak GPU memory (weights, gradients, optimizer, activations, logits, "
        "overhead) for full fine-tuning, LoRA or QLoRA; recommend a method and batch that fit; "
        "rank GPUs to rent by cost. Needs no GPU, no torch and no network for catalog models.",
    )
    p.add_argument(
        "model", metavar="MODEL", help="Hub id (catalog or any), local config.json or model folder."
    )
    p.add_argument(
        "--method",
        choices=ESTIMATE_METHODS,
        help="Force a method (default: the first of full, lora, qlora that fits).",
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="sft",
        help="sft, or a preference objective: dpo/orpo pass chosen and rejected together "
        "(twice the activations); dpo/kto with full keep a reference copy (default sft).",
    )
    p.add_argument(
        "--precompute-ref",
        action="store_true",
        help="dpo/kto with full or freeze: reference log-probs scored before training (no copy).",
    )
    p.add_argument(
        "--freeze-layers",
        type=int,
        default=2,
        help="--method freeze: how many of the last layers train (default 2).",
    )
    p.add_argument(
        "--precision",
        choices=ESTIMATE_PRECISIONS,
        help="Default: bf16-mixed on CUDA (fp16-mixed where the GPU has no bf16), fp32 on CPU.",
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    p.add_argument(
        "--batch-size", type=int, default=4, help="Rows per step per device (default 4)."
    )
    p.add_argument("--seq-len", type=int, default=512, help="Tokens per row (default 512).")
    p.add_argument(
        "--grad-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Recompute activations in the backward pass (default off).",
    )
    p.add_argument("--attention", choices=ATTENTIONS, default="sdpa")
    p.add_argument(
        "--liger",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="With Liger kernels (fused linear cross-entropy, RMSNorm, SwiGLU): shows the saving.",
    )
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default 16).")
    p.add_argument(
        "--lora-targets", default="all-linear", help="all-linear, or a list such as q_proj,v_proj."
    )
    p.add_argument(
        "--double-quant",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="QLoRA: quantize the quantization constants too (default on).",
    )
    p.add_argument(
        "--quant",
        choices=QUANTS,
        default="none",
        help="Weight quantization for --method inference.",
    )
    p.add_argument("--gpus", type=int, default=1, help="GPUs per node (default 1).")
    p.add_argument(
        "--zero", type=int, default=0, choices=(0, 1, 2, 3), help="ZeRO stage / FSDP (3)."
    )
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument(
        "--gpu", metavar="NAME", help="A catalog GPU, e.g. 'RTX 4090', A100-80GB, H100."
    )
    gpu.add_argument(
        "--gpu-mem", metavar="GB", type=finite_float, help="Memory of your GPU in GiB."
    )
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="cuda",
        help="cpu: estimate training on this machine's CPU and RAM.",
    )
    p.add_argument("--tokens", type=int, help="Training tokens in total (rows x tokens x epochs).")
    p.add_argument("--dataset-tokens", type=int, help="Tokens in the dataset (one epoch).")
    p.add_argument(
        "--epochs",
        type=finite_float,
        default=1.0,
        help="Epochs, with --dataset-tokens (default 1).",
    )
    p.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
    p.set_defaults(func=run)


def detect_gpu() -> tuple[str, float, int] | None:
    """(name, GiB, count) of this machine's first NVIDIA GPU through NVML, or None (no torch)."""
    from tunewiz.core.nvml import local_gpus

    gpus = local_gpus()
    return (gpus[0].name, gpus[0].memory_gib, len(gpus)) if gpus else None


def build_report(args: argparse.Namespace) -> dict:
    """Everything the table and --json show, as one plain dict."""
    from tunewiz.core.errors import UserError
    from tunewiz.core.estimate import EstimateRequest, estimate, recommend, rent_table, train_hours
    from tunewiz.core.estimate.memory import GIB
    from tunewiz.core.profiles import find_gpu, load_model_arch

    arch = load_model_arch(args.model)
    gpu_profile = None
    gpu_mem = None
    gpu_name = None
    detected = False
    if args.gpu:
        gpu_profile = find_gpu(args.gpu)
        gpu_mem, gpu_name = gpu_profile.memory_gib, gpu_profile.name
    elif args.gpu_mem is not None:
        if args.gpu_mem <= 0:
            raise UserError(f"must be positive, got {args.gpu_mem:g}", where="--gpu-mem")
        gpu_mem, gpu_name = args.gpu_mem, f"{args.gpu_mem:g} GiB GPU"
    elif args.device == "cuda" and (found := detect_gpu()):
        gpu_name, gpu_mem, _count = found
        detected = True
        try:
            gpu_profile = find_gpu(gpu_name)
        except UserError:
            gpu_profile = None
    if args.device == "cpu" and gpu_mem is None:
        try:
            import psutil

            gpu_mem, gpu_name = psutil.virtual_memory().total / GIB, "this machine's RAM"
        except Exception:  # noqa: BLE001
            pass
    precision = args.precision
    if precision is None:
        if args.device == "cpu":
            precision = "fp32"
        else:
            precision = "bf16-mixed" if (gpu_profile is None or gpu_profile.bf16) else "fp16-mixed"
    if args.tokens is not None and args.dataset_tokens is not None:
        raise UserError(
            "give either --tokens or --dataset-tokens with --epochs, not both", where="--tokens"
        )
    if args.dataset_tokens is not None:
        if args.dataset_tokens <= 0 or args.epochs <= 0:
            raise UserError(
                "--dataset-tokens and --epochs must be positive", where="--dataset-tokens"
            )
        tokens, tokens_given = int(args.dataset_tokens * args.epochs), True
    elif args.tokens is not None:
        if args.tokens <= 0:
            raise UserError(f"must be positive, got {args.tokens}", where="--tokens")
        tokens, tokens_given = args.tokens, True
    else:
        tokens, tokens_given = DEFAULT_TOKENS, False
    req = EstimateRequest(
        method=args.method or "lora",
        precision=precision,
        optimizer=args.optimizer,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        grad_checkpointing=args.grad_checkpointing,
        attention=args.attention,
        lora_r=args.lora_r,
        lora_targets=args.lora_targets,
        double_quant=args.double_quant,
        quant=args.quant,
        gpus=args.gpus,
        zero=args.zero,
        device=args.device,
        objective=args.objective,
        precompute_ref=args.precompute_ref,
        freeze_layers=args.freeze_layers,
        liger=args.liger,
    )
    methods = [args.method] if args.method else ["full", "lora", "qlora"]
    ests = {m: estimate(arch, EstimateRequest(**{**req.__dict__, "method": m})) for m in methods}
    rec = None
    method = args.method or "lora"
    if gpu_mem is not None and method != "inference":
        rec = recommend(arch, req, gpu_mem, force_method=args.method)
        if rec.method:
            method = rec.method
    est = ests[method]
    report = {
        "model": arch.name,
        "model_source": arch.source,
        **est.to_dict(),
        "gpu": {"name": gpu_name, "memory_gib": gpu_mem, "detected": detected}
        if gpu_mem is not None
        else None,
        "fits": est.fits(gpu_mem),
        "recommendation": rec.to_dict() if rec else None,
        "methods": {
            m: e.to_dict()["memory"]
            | {"params_trainable": e.params_trainable, "fits": e.fits(gpu_mem)}
            for m, e in ests.items()
        },
        "request": dict(req.__dict__, method=method),
        "tokens": tokens,
        "tokens_assumed": not tokens_given,
        "time": None,
        "rent": [],
    }
    if args.liger and method != "inference":
        report["without_liger"] = _without_liger(arch, req, methods, gpu_mem, args.method)
    if method != "inference":
        run_req = EstimateRequest(**{**req.__dict__, "method": method})
        if gpu_profile is not None:
            hours = train_hours(arch, run_req, tokens, gpu_profile, args.gpus)
            report["time"] = {
                "gpu": gpu_profile.name,
                "hours": round(hours, 3),
                "cost_usd": round(hours * gpu_profile.price_per_hour_usd * args.gpus, 2),
                "price_per_hour_usd": gpu_profile.price_per_hour_usd,
                "price_date": gpu_profile.price_date,
                "price_source": gpu_profile.price_source,
                "fits": report["fits"],
            }
        report["rent"] = [o.to_dict() for o in rent_table(arch, run_req, tokens)]
    return report


def _without_liger(arch, req, methods: list[str], gpu_mem: float | None, force: str | None) -> dict:
    """The same estimates without Liger kernels, to show what they save."""
    from tunewiz.core.estimate import EstimateRequest, estimate, recommend

    plain = EstimateRequest(**{**req.__dict__, "liger": False})
    out: dict = {
        m: estimate(arch, EstimateRequest(**{**plain.__dict__, "method": m})).to_dict()["memory"]
        for m in methods
    }
    if gpu_mem is not None:
        rec = recommend(arch, plain, gpu_mem, force_method=force)
        out["recommendation"] = rec.to_dict()
    return out


def run(args: argparse.Namespace) -> int:
    report = build_report(args)
    if args.json:
        json.dump(report, sys.stdout, indent=2, allow_nan=False)  # inputs are finite
        sys.stdout.write("\n")
        return 0
    print_report(report)
    return 0


def _gib(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def print_report(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    head = Text()
    head.append(r["model"], style="bold")
    head.append(f"  {r['params_total'] / 1e9:.2f}B parameters")
    if not r["exact_params"]:
        head.append("  (approximate: family not in the exact list)", style="yellow")
    req = r["request"]
    head.append(
        f"\nbatch {req['batch_size']} x {req['seq_len']} tokens, {req['precision']}, {req['optimizer']}, "
        f"attention {req['attention']}, gradient checkpointing {'on' if req['grad_checkpointing'] else 'off'}, "
        f"{req['gpus']} GPU(s), ZeRO {req['zero']}, device {req['device']}"
        + (", Liger kernels" if req.get("liger") else "")
    )
    console.print(head)

    table = Table(title="Peak memory per device (GiB)", title_justify="left")
    table.add_column("term")
    methods = list(r["methods"])
    for m in methods:
        table.add_column(m + (" *" if m == r["method"] else ""), justify="right")
    for term in ("weights", "gradients", "optimizer", "activations", "logits", "overhead"):
        table.add_row(term, *(_gib(r["methods"][m]["breakdown_gib"][term]) for m in methods))
    table.add_row(
        Text("peak total", style="bold"),
        *(Text(_gib(r["methods"][m]["total_gib"]), style="bold") for m in methods),
    )
    table.add_row("peak at", *(r["methods"][m]["peak_phase"] for m in methods))
    plain = r.get("without_liger")
    if plain:
        table.add_row(
            Text("without Liger", style="dim"),
            *(Text(_gib(plain[m]["total_gib"]), style="dim") for m in methods),
        )
    table.add_row(
        "trainable params", *(f"{r['methods'][m]['params_trainable']:,}" for m in methods)
    )
    if r["gpu"]:
        table.add_row(
            f"fits {r['gpu']['name']}?",
            *(
                Text("yes", style="green") if r["methods"][m]["fits"] else Text("no", style="red")
                for m in methods
            ),
        )
    console.print(table)
    console.print(
        Text(
            "Terms are each at their largest; activations are freed as gradients appear, so the peak "
            "is the larger of backward start (weights+optimizer+activations+logits) and optimizer step "
            "(weights+optimizer+gradients).",
            style="dim",
        )
    )
    rec = r["recommendation"]
    if rec:
        style = "green" if rec["fits"] else "red"
        console.print(Text("Recommendation: ", style=f"bold {style}") + Text(rec["reason"]))
        for s in rec["suggestions"]:
            console.print(Text(f"  - {s}"))
        if plain and plain.get("recommendation"):
            p = plain["recommendation"]
            console.print(
                Text(
                    f"Without Liger kernels: {p['method'] or 'nothing'} at batch {p['batch_size']}"
                    + ("" if p["fits"] else " (does not fit)"),
                    style="dim",
                )
            )
    elif r["gpu"] is None:
        console.print(Text("Give --gpu NAME or --gpu-mem GB for a recommendation.", style="dim"))
    tok = f"{r['tokens']:,} tokens" + (
        " (assumed; give --tokens or --dataset-tokens/--epochs)" if r["tokens_assumed"] else ""
    )
    if r["time"]:
        t = r["time"]
        console.print(
            Text(
                f"Time on {t['gpu']}: {t['hours']:.2f} h for {tok}, about ${t['cost_usd']:.2f} "
                f"at ${t['price_per_hour_usd']:.2f}/h ({t['price_source']}, {t['price_date']})"
                + ("" if t["fits"] else "  (if it fitted: it does not at these settings)")
            )
        )
    if r["rent"]:
        rent = Table(
            title=f"What to rent for {r['method']}, {tok}: cheapest first", title_justify="left"
        )
        for col in ("GPU", "GPUs", "ZeRO", "ckpt", "batch/GPU", "hours", "cost $", "$/h"):
            rent.add_column(col, justify="left" if col == "GPU" else "right")
        shown: set[str] = set()
        for o in r["rent"]:
            if o["gpu"] in shown:  # the cheapest node of each GPU here; --json lists them all
                continue
            shown.add(o["gpu"])
            rent.add_row(
                o["gpu"],
                str(o["n_gpus"]),
                str(o["zero"]),
                "on" if o["grad_checkpointing"] else "off",
                str(o["batch_size"]),
                f"{o['hours']:.2f}",
                f"{o['cost_usd']:.2f}",
                f"{o['price_per_hour_usd']:.2f}",
            )
            if len(shown) == 12:
                break
        console.print(rent)
        console.print(
            Text(
                "Prices are typical on-demand rates with their date; override them in "
                "<config dir>/gpus.toml (see README).",
                style="dim",
            )
        )
    elif r["method"] != "inference":
        console.print(
            Text("No catalog GPU or node up to 8 GPUs fits this configuration.", style="red")
        )
