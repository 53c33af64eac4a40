"""`tunewiz estimate MODEL ...`: will it fit, with which method and batch, and what will it cost?

Answers without torch, without a GPU and without network (catalog models). The flags become a
`ReportRequest`; `tunewiz.core.estimate.report` assembles the numbers; this module prints them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from tunewiz.core.config import finite_float
from tunewiz.core.estimate.memory import (
    ATTENTIONS,
    DEVICES,
    ESTIMATE_METHODS,
    ESTIMATE_PRECISIONS,
    OBJECTIVES,
    OPTIMIZERS,
    QUANTS,
    TERMS,
    ZERO_STAGES,
    EstimateRequest,
)
from tunewiz.core.estimate.report import ReportRequest, build_report, detect_gpu

if TYPE_CHECKING:  # rich is imported only to print, after the estimate
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

#: The flags' defaults are the estimator's own (one copy), but for the batch: the command
#: asks about 4 rows per step unless told, as it always has.
DEFAULTS = EstimateRequest(batch_size=4)


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
    _add_method_options(p.add_argument_group("method"))
    _add_step_options(p.add_argument_group("training step"))
    _add_hardware_options(p.add_argument_group("hardware"))
    _add_token_options(p.add_argument_group("time and cost"))
    p.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
    p.set_defaults(func=run)


def _add_method_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--method",
        choices=ESTIMATE_METHODS,
        help="Force a method (default: the first of full, lora, qlora that fits).",
    )
    g.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default=DEFAULTS.objective,
        help="sft, or a preference objective: dpo/orpo pass chosen and rejected together "
        f"(twice the activations); dpo/kto with full keep a reference copy (default {DEFAULTS.objective}).",
    )
    g.add_argument(
        "--precompute-ref",
        action="store_true",
        help="dpo/kto with full or freeze: reference log-probs scored before training (no copy).",
    )
    g.add_argument(
        "--freeze-layers",
        type=int,
        default=DEFAULTS.freeze_layers,
        help=f"--method freeze: how many of the last layers train (default {DEFAULTS.freeze_layers}).",
    )
    g.add_argument(
        "--lora-r",
        type=int,
        default=DEFAULTS.lora_r,
        help=f"LoRA rank (default {DEFAULTS.lora_r}).",
    )
    g.add_argument(
        "--lora-targets",
        default=DEFAULTS.lora_targets,
        help="all-linear, or a list such as q_proj,v_proj.",
    )
    g.add_argument(
        "--double-quant",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS.double_quant,
        help="QLoRA: quantize the quantization constants too (default on).",
    )
    g.add_argument(
        "--quant",
        choices=QUANTS,
        default=DEFAULTS.quant,
        help="Weight quantization for --method inference.",
    )


def _add_step_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--precision",
        choices=ESTIMATE_PRECISIONS,
        help="Default: bf16-mixed on CUDA (fp16-mixed where the GPU has no bf16), fp32 on CPU.",
    )
    g.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=DEFAULTS.optimizer,
        help="Optimizer: adamw keeps two states per trained weight, the -8bit ones a byte each, "
        f"sgd one, adafactor far fewer (default {DEFAULTS.optimizer}).",
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULTS.batch_size,
        help=f"Rows per step per device (default {DEFAULTS.batch_size}).",
    )
    g.add_argument(
        "--seq-len",
        type=int,
        default=DEFAULTS.seq_len,
        help=f"Tokens per row (default {DEFAULTS.seq_len}).",
    )
    g.add_argument(
        "--grad-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS.grad_checkpointing,
        help="Recompute activations in the backward pass (default off).",
    )
    g.add_argument(
        "--attention",
        choices=ATTENTIONS,
        default=DEFAULTS.attention,
        help="Attention kernel: eager also keeps the attention scores, which grow with the "
        f"square of the sequence (default {DEFAULTS.attention}).",
    )
    g.add_argument(
        "--liger",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS.liger,
        help="With Liger kernels (fused linear cross-entropy, RMSNorm, SwiGLU): shows the saving.",
    )


def _add_hardware_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--gpus",
        type=int,
        default=DEFAULTS.gpus,
        help=f"GPUs per node (default {DEFAULTS.gpus}).",
    )
    g.add_argument(
        "--zero",
        type=int,
        default=DEFAULTS.zero,
        choices=ZERO_STAGES,
        help="ZeRO stage / FSDP (3).",
    )
    gpu = g.add_mutually_exclusive_group()
    gpu.add_argument(
        "--gpu", metavar="NAME", help="A catalog GPU, e.g. 'RTX 4090', A100-80GB, H100."
    )
    gpu.add_argument(
        "--gpu-mem", metavar="GB", type=finite_float, help="Memory of your GPU in GiB."
    )
    g.add_argument(
        "--device",
        choices=DEVICES,
        default=DEFAULTS.device,
        help="cpu: estimate training on this machine's CPU and RAM.",
    )


def _add_token_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--tokens", type=int, help="Training tokens in total (rows x tokens x epochs).")
    g.add_argument("--dataset-tokens", type=int, help="Tokens in the dataset (one epoch).")
    g.add_argument(
        "--epochs",
        type=finite_float,
        default=1.0,
        help="Epochs, with --dataset-tokens (default 1).",
    )


def request_from_args(args: argparse.Namespace) -> ReportRequest:
    """The flags as a ReportRequest (method and precision None: the report chooses)."""
    return ReportRequest(
        model=args.model,
        options=EstimateRequest(
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
        ),
        method=args.method,
        precision=args.precision,
        gpu=args.gpu,
        gpu_mem_gib=args.gpu_mem,
        tokens=args.tokens,
        dataset_tokens=args.dataset_tokens,
        epochs=args.epochs,
    )


def run(args: argparse.Namespace) -> int:
    # detect_gpu is looked up here, at call time, so tests can stand in for NVML.
    report = build_report(request_from_args(args), detect=detect_gpu).to_dict()
    if args.json:
        json.dump(report, sys.stdout, indent=2, allow_nan=False)  # inputs are finite
        sys.stdout.write("\n")
        return 0
    print_report(report)
    return 0


# ---------------------------------------------------------------------------
# printing: the --json object as tables, so both always show the same numbers
# ---------------------------------------------------------------------------


PEAK_NOTE = (
    "Terms are each at their largest; activations are freed as gradients appear, so the peak "
    "is the larger of backward start (weights+optimizer+activations+logits) and optimizer step "
    "(weights+optimizer+gradients)."
)
PRICE_NOTE = (
    "Prices are typical on-demand rates with their date; override them in "
    "<config dir>/gpus.toml (see README)."
)
#: GPU models in the rent table at most, the cheapest node of each; --json lists every node.
RENT_ROWS = 12


def _gib(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def print_report(r: dict[str, Any]) -> None:
    """`EstimateReport.to_dict()` for people: one block per section."""
    from rich.console import Console

    console = Console()
    console.print(_header(r))
    console.print(_memory_table(r))
    console.print(_dim(PEAK_NOTE))
    _print_recommendation(console, r)
    tok = f"{r['tokens']:,} tokens" + (
        " (assumed; give --tokens or --dataset-tokens/--epochs)" if r["tokens_assumed"] else ""
    )
    if r["time"]:
        console.print(_time_line(r["time"], tok))
    _print_rent(console, r, tok)


def _dim(text: str) -> Text:
    from rich.text import Text

    return Text(text, style="dim")


def _header(r: dict[str, Any]) -> Text:
    """Model, size and the options estimated, in one sentence."""
    from rich.text import Text

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
    return head


def _memory_table(r: dict[str, Any]) -> Table:
    """Term by term for each method compared; the shown method starred."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Peak memory per device (GiB)", title_justify="left")
    table.add_column("term")
    by_method = r["methods"]
    methods = list(by_method)
    for m in methods:
        table.add_column(m + (" *" if m == r["method"] else ""), justify="right")
    for term in TERMS:
        table.add_row(term, *(_gib(by_method[m]["breakdown_gib"][term]) for m in methods))
    table.add_row(
        Text("peak total", style="bold"),
        *(Text(_gib(by_method[m]["total_gib"]), style="bold") for m in methods),
    )
    table.add_row("peak at", *(by_method[m]["peak_phase"] for m in methods))
    plain = r.get("without_liger")
    if plain:
        table.add_row(
            Text("without Liger", style="dim"),
            *(Text(_gib(plain[m]["total_gib"]), style="dim") for m in methods),
        )
    table.add_row("trainable params", *(f"{by_method[m]['params_trainable']:,}" for m in methods))
    if r["gpu"]:
        table.add_row(
            f"fits {r['gpu']['name']}?",
            *(
                Text("yes", style="green") if by_method[m]["fits"] else Text("no", style="red")
                for m in methods
            ),
        )
    return table


def _print_recommendation(console: Console, r: dict[str, Any]) -> None:
    """The method and batch to use, or what would fit; and the same without Liger kernels."""
    from rich.text import Text

    rec = r["recommendation"]
    if not rec:
        if r["gpu"] is None:
            console.print(_dim("Give --gpu NAME or --gpu-mem GB for a recommendation."))
        return
    style = "green" if rec["fits"] else "red"
    console.print(Text("Recommendation: ", style=f"bold {style}") + Text(rec["reason"]))
    for s in rec["suggestions"]:
        console.print(Text(f"  - {s}"))
    plain = (r.get("without_liger") or {}).get("recommendation")
    if plain:
        console.print(
            _dim(
                f"Without Liger kernels: {plain['method'] or 'nothing'} at batch {plain['batch_size']}"
                + ("" if plain["fits"] else " (does not fit)")
            )
        )


def _time_line(t: dict[str, Any], tok: str) -> Text:
    from rich.text import Text

    return Text(
        f"Time on {t['gpu']}: {t['hours']:.2f} h for {tok}, about ${t['cost_usd']:.2f} "
        f"at ${t['price_per_hour_usd']:.2f}/h ({t['price_source']}, {t['price_date']})"
        + ("" if t["fits"] else "  (if it fitted: it does not at these settings)")
    )


def _print_rent(console: Console, r: dict[str, Any], tok: str) -> None:
    """Cheapest node of each GPU that fits, or that none does."""
    from rich.table import Table
    from rich.text import Text

    if not r["rent"]:
        if r["method"] != "inference":
            console.print(
                Text("No catalog GPU or node up to 8 GPUs fits this configuration.", style="red")
            )
        return
    rent = Table(
        title=f"What to rent for {r['method']}, {tok}: cheapest first", title_justify="left"
    )
    for col in ("GPU", "GPUs", "ZeRO", "ckpt", "batch/GPU", "hours", "cost $", "$/h"):
        rent.add_column(col, justify="left" if col == "GPU" else "right")
    shown: set[str] = set()
    for o in r["rent"]:
        if o["gpu"] in shown:  # sorted cheapest first: the first row of a GPU is its cheapest
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
        if len(shown) == RENT_ROWS:
            break
    console.print(rent)
    console.print(_dim(PRICE_NOTE))
