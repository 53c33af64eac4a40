"""The estimator against published measured GPU peaks where the settings are stated.

    .venv/bin/python bench/bench_published.py

Pure arithmetic (no torch, no GPU). Each row names its source, the settings it states and
the ones assumed from the recipe it links; the error is (estimate - published) / published.

torchtune's README ("Memory and training speed", Llama 3.1 rows: batch size 2, no gradient
accumulation, a dataset packed to 2048 tokens, torch.compile on, peak memory per GPU) with
the single-device recipe's settings (recipes/configs/llama3_1/8B_lora_single_device.yaml and
8B_qlora_single_device.yaml: LoRA rank 8 / alpha 16 on q, v, output projections and the MLP,
no dropout, activation checkpointing, bf16 everywhere, fused AdamW, CEWithChunkedOutputLoss).

torchtune's loss is chunked cross-entropy, neither the default loss nor Liger's fused one:
the output projection writes all logits in bf16 as 8 chunks, and each chunk is upcast to fp32
inside the loss (`chunked_ce_bytes`). The estimator has no such mode, so the table shows it
three ways: as tunewiz would run it (default loss), with Liger, and with the default loss's
logits term replaced by the chunked one; each as the tensors torch's peak counters see (the
estimate less its CUDA context and allocator slack). Not modelled: torch.compile (fuses and frees some
activations) and torchtune's QLoRA keeping norms/embeddings in bf16 (PEFT upcasts them to
fp32, which the estimator follows). The full fine-tuning row (18.9 GiB) uses optimizer-in-
backward, which tunewiz does not do, so it is not compared.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tunewiz.core.estimate import EstimateRequest, estimate  # noqa: E402
from tunewiz.core.estimate.memory import GIB, logits_bytes, with_  # noqa: E402
from tunewiz.core.profiles import ModelArch, load_model_arch  # noqa: E402

TORCHTUNE = "torchtune README, Memory and training speed (Llama 3.1, 1x RTX 4090)"
LORA_TARGETS = "q_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"

ROWS = [
    # (source, model, published GiB, request)
    (
        TORCHTUNE,
        "meta-llama/Llama-3.1-8B",
        16.2,
        EstimateRequest(
            method="lora", precision="bf16-true", batch_size=2, seq_len=2048,
            grad_checkpointing=True, lora_r=8, lora_targets=LORA_TARGETS, lora_dropout=0.0,
        ),
    ),
    (
        TORCHTUNE,
        "meta-llama/Llama-3.1-8B",
        7.4,
        EstimateRequest(
            method="qlora", precision="bf16-true", batch_size=2, seq_len=2048,
            grad_checkpointing=True, lora_r=8, lora_targets=LORA_TARGETS, lora_dropout=0.0,
        ),
    ),
]  # fmt: skip


def chunked_ce_bytes(arch: ModelArch, tokens: int, chunks: int = 8) -> float:
    """torchtune's CEWithChunkedOutputLoss (torchtune/modules/loss/ce_chunked_output_loss.py):
    all logits kept in bf16 (2 x V per token, the model returns them as `chunks` pieces), and
    for one chunk at a time its fp32 upcast, log-softmax and gradient (3 x 4 x V per token)."""
    return 2 * arch.vocab_size * tokens + 12 * arch.vocab_size * tokens / chunks


def main() -> int:
    print(
        f"{'source / model / method':<58}{'published':>10}{'default':>9}{'err':>8}"
        f"{'Liger':>8}{'err':>8}{'chunked':>9}{'err':>8}"
    )
    errs: dict[str, list[float]] = {"default": [], "liger": [], "chunked": []}
    for source, model, published, req in ROWS:
        arch = load_model_arch(model)
        plain = estimate(arch, req)
        fused = estimate(arch, with_(req, liger=True))
        tokens = req.batch_size * req.seq_len
        # same estimate with the logits term swapped; the peak is at the backward start here
        chunked = (
            plain.total - logits_bytes(arch, req) + chunked_ce_bytes(arch, tokens)
            if plain.peak_phase == "backward"
            else plain.total
        )
        # torch's peak counters see tensors only: the estimate less its CUDA context and slack
        over = plain.breakdown["overhead"]
        row = {
            "default": (plain.total - over) / GIB,
            "liger": (fused.total - fused.breakdown["overhead"]) / GIB,
            "chunked": (chunked - over) / GIB,
        }
        cells = ""
        for key, value in row.items():
            err = (value - published) / published * 100
            errs[key].append(abs(err))
            cells += f"{value:>9.2f}{err:>+7.1f}%"
        label = f"{model.split('/')[-1]} {req.method} b{req.batch_size}x{req.seq_len}"
        print(f"{label:<58}{published:>10.1f}{cells}")
        print(f"  ({source})")
    for key, values in errs.items():
        print(
            f"|error| {key:8s} median {statistics.median(values):5.1f}%  worst {max(values):5.1f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
