"""One command on any GPU box: real peak memory next to the estimate, tokens/s next to a plain
Trainer script, bf16 / QLoRA / DDP checks; one JSON file and a Markdown table.

    python bench/gpu_check.py                  # CUDA: about 6-8 minutes on one GPU
    python bench/gpu_check.py --cpu            # the reduced form (tiny model, few steps)
    python bench/gpu_check.py --out DIR --budget-s 450 --only 135m,1b

No download: models are random-initialised from catalog configs (SmolLM2-135M, Llama-3.2-1B
and, where the GPU has room, Llama-3.1-8B), saved once as bf16 checkpoints in a temporary
folder and loaded through tunewiz's own loader (tunewiz.core.train.model.load_for_training), so
attention choice, Liger, LoRA and QLoRA go through the code a run uses. Data are random token
rows (no tokenizer needed).

(a) memory: full / LoRA / QLoRA x gradient checkpointing x two sequence lengths x Liger,
    each case `torch.cuda.max_memory_allocated` / `max_memory_reserved` / nvidia-smi used,
    next to `tunewiz.core.estimate.estimate` with the error;
(b) speed: non-padding tokens/s of a plain `transformers.Trainer` LoRA script (pad to the
    longest row, sdpa, no Liger) against tunewiz's training path (RunTrainer, Collator,
    training_kwargs) with/without packing, flash attention and Liger, same model and batch;
(c) bf16, QLoRA on CUDA, a 2-process DDP run when two GPUs are present;
(d) gpu_check.json and gpu_check.md in --out, and the targets printed at the end.

Each group of cases runs in its own process (Liger patches transformers' modules globally,
and a crash must not end the check); a case that fails (out of memory, missing package, time
budget spent) is recorded with its reason and the check goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GIB = 1024**3

#: name -> catalog id (GPU) or a config dict (the CPU's tiny model)
GPU_MODELS = {
    "135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "1b": "meta-llama/Llama-3.2-1B",
    "8b": "meta-llama/Llama-3.1-8B",
}
TINY = {
    "model_type": "llama", "vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "max_position_embeddings": 512, "tie_word_embeddings": True,
}  # fmt: skip
TARGETS = {"median_err_pct": 5.0, "max_err_pct": 15.0, "lora_speedup": 1.3, "batch_ratio": 1.5}


# -- plans ------------------------------------------------------------------------------


def memory_plan(cpu: bool, models: list[str], gpu_gib: float) -> list[dict]:
    """Memory cases, most informative first (the budget may cut the tail)."""
    if cpu:
        return [
            dict(model="tiny", method=m, gc=False, seq=64, batch=2, liger=lig)
            for m, lig in (("lora", False), ("full", False), ("lora", True))
        ]
    cases = []
    for name in models:
        if name == "8b":
            methods = ["lora", "qlora"] + (["full"] if gpu_gib >= 140 else [])
            seqs, batch = [2048], 2
        else:
            methods, seqs, batch = ["full", "lora", "qlora"], [512, 2048], 4
        for lig in (False, True):
            for method in methods:
                for gc in (False, True):
                    for seq in seqs:
                        cases.append(
                            dict(model=name, method=method, gc=gc, seq=seq, batch=batch, liger=lig)
                        )
    return cases


def speed_plan(cpu: bool, models: list[str]) -> list[dict]:
    """Throughput cases: the plain script, then tunewiz's variants, per model."""
    if cpu:
        shapes = {"tiny": (4, 128, 4)}
    else:
        shapes = {"135m": (8, 1024, 12), "1b": (8, 1024, 12), "8b": (2, 2048, 10)}
        shapes = {k: v for k, v in shapes.items() if k in models}
    out = []
    for name, (batch, seq, steps) in shapes.items():
        base = dict(model=name, batch=batch, seq=seq, steps=steps, method="lora")
        out.append(dict(base, path="plain", attn="sdpa", packing=False, liger=False))
        variants = [("auto", True, False), ("auto", True, True)]  # 8B: loading costs ~15 s each
        if name == "tiny":
            variants = [("sdpa", False, False), ("sdpa", True, False), ("auto", True, True)]
        elif name != "8b":
            variants += [("sdpa", False, False), ("auto", False, False), ("sdpa", True, False),
                         ("auto", False, True)]  # fmt: skip
        for attn, packing, liger in variants:
            out.append(dict(base, path="tunewiz", attn=attn, packing=packing, liger=liger))
        if name == "1b":  # torch.compile is no tunewiz option until this shows it pays
            out.append(dict(base, path="tunewiz+compile", attn="auto", packing=True, liger=True))
    return out


# -- helpers in the child ---------------------------------------------------------------


def hf_config(name: str) -> dict:
    if name == "tiny":
        return dict(TINY)
    from tunewiz.core.profiles import load_model_arch

    a = load_model_arch(GPU_MODELS[name])
    return {
        "model_type": "llama", "vocab_size": a.vocab_size, "hidden_size": a.hidden_size,
        "intermediate_size": a.intermediate_size, "num_hidden_layers": a.num_layers,
        "num_attention_heads": a.num_heads, "num_key_value_heads": a.num_kv_heads,
        "head_dim": a.head_dim, "max_position_embeddings": a.max_position_embeddings,
        "tie_word_embeddings": a.tie_word_embeddings,
    }  # fmt: skip


def model_folder(name: str, cache: Path) -> Path:
    """A random-initialised checkpoint of the model's shape, saved in bf16 like hub models."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = cache / name
    ready = folder / ".ready"
    if int(os.environ.get("LOCAL_RANK", "0")) > 0:  # under torchrun: rank 0 writes it
        for _ in range(600):
            if ready.is_file():
                break
            time.sleep(0.5)
    if ready.is_file():
        return folder
    cfg = LlamaConfig(**{k: v for k, v in hf_config(name).items() if k != "model_type"})
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model: Any = LlamaForCausalLM(cfg)
    model.to(torch.bfloat16).save_pretrained(folder)
    del model
    ready.touch()
    return folder


def rows(n: int, seq: int, vocab: int, *, full_length: bool, seed: int = 0) -> list[dict]:
    """Random token rows: all `seq` long (memory cases), or 1/8 to full length (speed)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = seq if full_length else rng.randint(max(2, seq // 8), seq)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        out.append({"input_ids": ids, "labels": list(ids)})
    return out


def run_config(case: dict, folder: Path):
    from tunewiz.core.config import RunConfig

    cfg = RunConfig()
    cfg.model.model = str(folder)
    cfg.model.method = case["method"]
    cfg.model.gradient_checkpointing = case.get("gc", False)
    cfg.model.attn_implementation = case.get("attn", "auto")
    cfg.model.liger_kernel = "true" if case["liger"] else "false"
    cfg.model.lora_dropout = 0.05
    cfg.data.max_seq_len = case["seq"]
    cfg.training.per_device_train_batch_size = case["batch"]
    cfg.training.max_steps = case.get("steps", 3)
    cfg.training.save_strategy = "no"
    cfg.training.eval_strategy = "no"
    cfg.training.logging_steps = 1000
    cfg.training.warmup_ratio = 0.0
    return cfg


class _Clock:
    """A TrainerCallback that times each optimizer step (synchronised on CUDA)."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        clock = self

        class CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                import torch

                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                clock.times.append(time.perf_counter())

        self.times: list[float] = []
        self.callback = CB()


def _nvidia_smi_used_mib() -> float | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        for line in out.stdout.splitlines():
            pid, used = (s.strip() for s in line.split(","))
            if int(pid) == os.getpid():
                return float(used)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return None


def _peak_rss() -> int:
    """VmHWM (reset per case through clear_refs); ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def train_case(case: dict, folder: Path, tmp: Path) -> dict:
    """One case through tunewiz's path (or the plain script's); returns the measurements."""
    import torch

    from tunewiz.core.train.args import build_training_args
    from tunewiz.core.train.collate import TOKENS_KEY, Collator
    from tunewiz.core.train.model import load_for_training, resolve_precision
    from tunewiz.core.train.trainer import RunTrainer

    cuda = torch.cuda.is_available()
    vocab = hf_config(case["model"])["vocab_size"]
    steps = case.get("steps", 3)
    n_rows = case["batch"] * steps * (4 if case.get("packing") else 1)
    data = rows(n_rows, case["seq"], vocab, full_length=case["kind"] != "speed")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        if case.get("card_fraction"):  # emulate a smaller card on this one
            torch.cuda.set_per_process_memory_fraction(min(case["card_fraction"], 1.0))
    elif Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark per case
    clock = _Clock()
    counted: list[tuple[int, int]] = []
    t0 = time.perf_counter()
    if case.get("path") == "plain":
        trainer = _plain_trainer(case, folder, tmp, data, counted, clock)
    else:
        from tunewiz.core.data.stats import pack

        cfg = run_config(case, folder)
        precision = resolve_precision("auto")
        model = load_for_training(cfg, str(folder), precision=precision)
        if case.get("packing"):
            data = pack(data, case["seq"])
        args = build_training_args(
            cfg, tmp / "out", precision=precision, has_eval=False, packed=bool(case.get("packing"))
        )
        if case.get("path") == "tunewiz+compile":
            args.torch_compile, args.torch_compile_backend = True, "inductor"
        inner = Collator(0)

        def collate(features):
            batch = inner(features)
            counted.append((batch["input_ids"].numel(), int(batch[TOKENS_KEY])))
            return batch

        trainer = RunTrainer(
            model=model, args=args, train_dataset=data, data_collator=collate,
            callbacks=[clock.callback],
        )  # fmt: skip
    trainer.train()
    out: dict = {"wall_s": round(time.perf_counter() - t0, 1)}
    if len(clock.times) > 2:
        span = clock.times[-1] - clock.times[1]
        used = counted[2 : len(clock.times)]
        out["tokens_per_s"] = round(sum(c[1] for c in used) / span, 1)
        out["padded_tokens_per_s"] = round(sum(c[0] for c in used) / span, 1)
    if cuda:
        out["max_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
        out["max_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 3)
        smi = _nvidia_smi_used_mib()
        out["nvidia_smi_used_gib"] = round(smi / 1024, 3) if smi is not None else None
        out["measured_gib"] = out["max_allocated_gib"]
        out["bf16"] = bool(trainer.args.bf16)
    else:
        out["measured_gib"] = round(_peak_rss() / GIB, 3)
    out["use_liger_kernel"] = bool(trainer.args.use_liger_kernel)
    out["attn_implementation"] = trainer.model.config._attn_implementation
    del trainer
    return out


def _plain_trainer(case, folder, tmp, data, counted, clock):
    """What a plain script does: bf16 model, LoRA, pad to the longest row, Trainer defaults."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    model: Any = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.bfloat16 if bf16 else torch.float32, attn_implementation="sdpa"
    )
    model = get_peft_model(
        model,
        LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                   task_type="CAUSAL_LM"),
    )  # fmt: skip

    def collate(features):
        longest = max(len(f["input_ids"]) for f in features)
        ids = [f["input_ids"] + [0] * (longest - len(f["input_ids"])) for f in features]
        labels = [f["labels"] + [-100] * (longest - len(f["labels"])) for f in features]
        mask = [[1] * len(f["input_ids"]) + [0] * (longest - len(f["input_ids"])) for f in features]
        counted.append((longest * len(features), sum(len(f["input_ids"]) for f in features)))
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }

    args = TrainingArguments(
        output_dir=str(tmp / "plain"), max_steps=case.get("steps", 3),
        per_device_train_batch_size=case["batch"], learning_rate=2e-4, bf16=bf16,
        use_cpu=not cuda, save_strategy="no", report_to=[], disable_tqdm=True,
        remove_unused_columns=False, logging_steps=1000,
    )  # fmt: skip
    return Trainer(
        model=model, args=args, train_dataset=data, data_collator=collate,
        callbacks=[clock.callback],
    )  # fmt: skip


def child(cases_file: Path, results_file: Path, cache: Path, deadline: float) -> int:
    """Run a group of cases; append one JSON line per case, whatever happens to it."""
    import gc
    import warnings

    import torch
    from transformers.utils import logging as tlog

    from tunewiz.core.errors import UserError

    warnings.filterwarnings("ignore")
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    cases = json.loads(cases_file.read_text())
    for case in cases:
        rec = dict(case)
        if time.time() > deadline:
            rec.update(status="skipped", reason="time budget spent")
        else:
            try:
                with tempfile.TemporaryDirectory() as d:
                    folder = model_folder(case["model"], cache)
                    rec.update(train_case(case, folder, Path(d)), status="ok")
            except Exception as exc:  # noqa: BLE001 - recorded, and the check goes on
                oom = isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc)
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                status = "oom" if oom else "refused" if isinstance(exc, UserError) else "failed"
                rec.update(status=status, reason=f"{type(exc).__name__}: {text}"[:300])
                if status == "failed":
                    traceback.print_exc()
        if int(os.environ.get("RANK", "0")) == 0:
            with open(results_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return 0


# -- the parent ---------------------------------------------------------------------------


def run_group(
    cases: list[dict], cache: Path, deadline: float, log: Path, *, nproc: int = 1
) -> list[dict]:
    if not cases:
        return []
    with tempfile.TemporaryDirectory() as d:
        cf, rf = Path(d) / "cases.json", Path(d) / "results.jsonl"
        cf.write_text(json.dumps(cases))
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
        launch = [sys.executable]
        if nproc > 1:  # torchrun: Trainer runs DDP across the processes
            launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
        cmd = [*launch, __file__, "--child", str(cf), str(rf), str(cache), str(deadline)]
        with open(log, "a", encoding="utf-8") as fh:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        done = [json.loads(x) for x in rf.read_text().splitlines()] if rf.is_file() else []
    for case in cases[len(done) :]:
        done.append(
            dict(case, status="failed", reason=f"process ended ({proc.returncode}); see log")
        )
    return done


def add_estimates(results: list[dict]) -> None:
    from tunewiz.core.estimate import EstimateRequest, estimate
    from tunewiz.core.profiles import arch_from_config, load_model_arch

    for r in results:
        if r.get("kind") != "memory":
            continue
        name = r["model"]
        arch = (
            arch_from_config(TINY, name="tiny", where="tiny")
            if name == "tiny"
            else load_model_arch(GPU_MODELS[name])
        )
        cpu = r.get("device") == "cpu"
        attn = {"flash_attention_2": "flash", "eager": "eager"}.get(
            r.get("attn_implementation", ""), "sdpa"
        )
        try:
            est = estimate(
                arch,
                EstimateRequest(
                    method=r["method"], precision="fp32" if cpu else "bf16-mixed",
                    batch_size=r["batch"], seq_len=r["seq"], grad_checkpointing=r["gc"],
                    attention=attn, lora_dropout=0.05, device="cpu" if cpu else "cuda",
                    liger=r["liger"],
                ),
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            r["estimate_error"] = str(exc)
            continue
        # torch's counters see no CUDA context: max_memory_allocated is the tensors (the estimate
        # less its overhead), max_memory_reserved adds the allocator's slack; nvidia-smi is all.
        from tunewiz.core.estimate.memory import CUDA_CONTEXT_BYTES

        r["estimate_gib"] = round(est.total / GIB, 3)
        tensors = est.total - est.breakdown["overhead"]
        r["estimate_tensors_gib"] = round(tensors / GIB, 3)
        if r.get("status") != "ok" or not r.get("measured_gib"):
            continue
        if cpu:  # peak RSS: the whole process, as the CPU estimate counts it
            r["error_pct"] = _err(est.total, r["measured_gib"])
        else:
            r["error_pct"] = _err(tensors, r["max_allocated_gib"])
            r["error_reserved_pct"] = _err(est.total - CUDA_CONTEXT_BYTES, r["max_reserved_gib"])
            r["error_nvidia_smi_pct"] = _err(est.total, r.get("nvidia_smi_used_gib"))


def _err(estimated_bytes: float, measured_gib: float | None) -> float | None:
    """(estimate - measured) / measured in percent."""
    if not measured_gib:
        return None
    return round((estimated_bytes / GIB - measured_gib) / measured_gib * 100, 1)


def targets(results: list[dict]) -> dict:
    errs = [abs(r["error_pct"]) for r in results if "error_pct" in r]
    out: dict = {
        "memory_cases_measured": len(errs),
        "median_abs_err_pct": round(statistics.median(errs), 1) if errs else None,
        "max_abs_err_pct": round(max(errs), 1) if errs else None,
    }
    out["memory_ok"] = bool(errs) and (
        out["median_abs_err_pct"] < TARGETS["median_err_pct"]
        and out["max_abs_err_pct"] < TARGETS["max_err_pct"]
    )
    speed: dict[str, list[dict]] = {}
    for r in results:
        if r.get("kind") == "speed" and r.get("status") == "ok" and r.get("tokens_per_s"):
            speed.setdefault(r["model"], []).append(r)
    ratios = {}
    for model, rs in speed.items():
        plain = [r for r in rs if r["path"] == "plain"]
        ours = [r for r in rs if r["path"].startswith("tunewiz")]
        if plain and ours:
            best = max(ours, key=lambda r: r["tokens_per_s"])
            ratios[model] = {
                "plain_tokens_per_s": plain[0]["tokens_per_s"],
                "best_tokens_per_s": best["tokens_per_s"],
                "best_case": {k: best[k] for k in ("path", "attn", "packing", "liger")},
                "ratio": round(best["tokens_per_s"] / plain[0]["tokens_per_s"], 3),
            }
    out["speed"] = ratios
    return out


def batch_fit_check(gpu_gib: float, models: list[str]) -> list[dict]:
    """Cases for 'the same card fits a larger batch with fused cross-entropy': the estimator's
    largest batch with and without Liger on a 24 GiB card (emulated with a memory fraction)."""
    from tunewiz.core.estimate import EstimateRequest, max_batch
    from tunewiz.core.profiles import load_model_arch

    name = "8b" if "8b" in models and gpu_gib >= 40 else "1b" if "1b" in models else None
    if name is None:
        return []
    card = 24.0 if name == "8b" else 8.0
    arch = load_model_arch(GPU_MODELS[name])
    cases = []
    for lig in (False, True):
        req = EstimateRequest(method="lora", seq_len=2048, grad_checkpointing=True, liger=lig)
        b = max_batch(arch, req, card)
        cases.append(
            dict(kind="fit", model=name, method="lora", gc=True, seq=2048, batch=max(b, 1),
                 liger=lig, steps=2, card_gib=card, estimated_max_batch=b)
        )  # fmt: skip
    return cases


def write_outputs(out_dir: Path, report: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    lines = [f"# tunewiz GPU check: {report['device']}", ""]
    lines += ["## Peak memory vs estimate (GiB)", ""]
    lines += [
        "error: estimated tensors vs `max_memory_allocated` (CPU: the estimate vs peak RSS); "
        "also the estimate less the CUDA context vs reserved, and the whole estimate vs nvidia-smi",
        "",
        "| model | method | ckpt | seq | batch | Liger | allocated | reserved | nvidia-smi "
        "| est. tensors | est. total | error | err reserved | err smi | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if r.get("kind") != "memory":
            continue
        lines.append(
            f"| {r['model']} | {r['method']} | {'on' if r['gc'] else 'off'} | {r['seq']} | {r['batch']} "
            f"| {'on' if r['liger'] else 'off'} | {r.get('max_allocated_gib', r.get('measured_gib', '-'))} "
            f"| {r.get('max_reserved_gib', '-')} | {r.get('nvidia_smi_used_gib', '-')} "
            f"| {r.get('estimate_tensors_gib', '-')} | {r.get('estimate_gib', '-')} "
            f"| {r.get('error_pct', '-')}% | {r.get('error_reserved_pct', '-')}% "
            f"| {r.get('error_nvidia_smi_pct', '-')}% | {r['status']} {r.get('reason', '')} |"
        )
    lines += ["", "## Training tokens/s (non-padding), LoRA", ""]
    lines += [
        "| model | batch x seq | path | attention | packing | Liger | tokens/s | processed/s | status |"
    ]
    lines += ["|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        if r.get("kind") != "speed":
            continue
        lines.append(
            f"| {r['model']} | {r['batch']}x{r['seq']} | {r['path']} | {r.get('attn_implementation', r['attn'])} "
            f"| {'on' if r['packing'] else 'off'} | {'on' if r['liger'] else 'off'} | {r.get('tokens_per_s', '-')} "
            f"| {r.get('padded_tokens_per_s', '-')} | {r['status']} {r.get('reason', '')} |"
        )
    fits = [r for r in report["results"] if r.get("kind") == "fit"]
    if fits:
        lines += ["", "## Largest batch on the same card (LoRA, checkpointing, seq 2048)", ""]
        lines += [
            "| model | card GiB | Liger | estimated max batch | ran at it | allocated |",
            "|---|---|---|---|---|---|",
        ]
        for r in fits:
            lines.append(
                f"| {r['model']} | {r['card_gib']} | {'on' if r['liger'] else 'off'} | {r['estimated_max_batch']} "
                f"| {r['status']} {r.get('reason', '')} | {r.get('max_allocated_gib', '-')} |"
            )
    lines += ["", "## Checks and targets", "", "```", json.dumps(report["checks"], indent=2),
              json.dumps(report["targets"], indent=2), "```", ""]  # fmt: skip
    (out_dir / "gpu_check.md").write_text("\n".join(lines), encoding="utf-8")


def print_targets(t: dict) -> None:
    print("\nTargets")
    print(
        f"  estimate vs measured peak: median |error| {t['median_abs_err_pct']}% "
        f"(target < {TARGETS['median_err_pct']}%), worst {t['max_abs_err_pct']}% "
        f"(target < {TARGETS['max_err_pct']}%) over {t['memory_cases_measured']} cases"
    )
    for model, s in t["speed"].items():
        print(
            f"  LoRA tokens/s {model}: tunewiz {s['best_tokens_per_s']} ({s['best_case']}) / plain "
            f"{s['plain_tokens_per_s']} = {s['ratio']}x (target >= {TARGETS['lora_speedup']}x)"
        )
    if t.get("batch_ratio") is not None:
        print(
            f"  largest batch with Liger / without on a {t['batch_card_gib']} GiB card: "
            f"{t['batch_ratio']}x (target >= {TARGETS['batch_ratio']}x; ran: {t['batch_ran']})"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="The reduced form, even with a GPU.")
    ap.add_argument("--out", default=None, help="Folder for gpu_check.json and gpu_check.md.")
    ap.add_argument("--budget-s", type=float, default=400, help="Stop starting cases after this.")
    ap.add_argument("--only", default="135m,1b,8b", help="Models to check (GPU): 135m,1b,8b.")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("TUNEWIZ_HOME", str(ROOT / ".tunewiz-home"))
    if args.child:
        cf, rf, cache, deadline = args.child
        return child(Path(cf), Path(rf), Path(cache), float(deadline))

    import torch

    from tunewiz.cli.estimate import detect_gpu

    start = time.time()
    deadline = start + args.budget_s
    # NVML, not torch.cuda: the parent must hold no CUDA context while the children measure.
    gpu = None if args.cpu else detect_gpu()
    cuda = gpu is not None
    gpu_name, gpu_gib, n_gpus = gpu if gpu else ("cpu", 0.0, 0)
    device = f"{gpu_name} ({gpu_gib:.0f} GiB) x{n_gpus}" if cuda else "cpu"
    models = [m for m in args.only.split(",") if m in GPU_MODELS]
    if cuda and gpu_gib < 40:
        models = [m for m in models if m != "8b"]
    out_dir = Path(args.out or f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "gpu_check.log"
    print(f"tunewiz GPU check on {device}; log: {log}")
    dev = "cuda" if cuda else "cpu"
    mem = [dict(c, kind="memory", device=dev) for c in memory_plan(not cuda, models, gpu_gib)]
    speed = [dict(c, kind="speed", device=dev) for c in speed_plan(not cuda, models)]
    fit = [dict(c, device=dev) for c in (batch_fit_check(gpu_gib, models) if cuda else [])]
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = Path(cache_dir)
        # Liger patches transformers globally: cases without it run in processes that never load it.
        for model in dict.fromkeys(c["model"] for c in mem + speed):
            for lig in (False, True):
                group = [c for c in mem + speed if c["model"] == model and c["liger"] == lig]
                print(f"  {model}, Liger {'on' if lig else 'off'}: {len(group)} cases", flush=True)
                results += run_group(group, cache, deadline, log)
        for c in fit:  # each in its own process, with the card's memory fraction
            c["card_fraction"] = c["card_gib"] / gpu_gib
            results += run_group([c], cache, deadline, log)
        ddp: list[dict] = []
        if cuda and n_gpus >= 2:  # tunewiz's trainer under torchrun, LoRA on the 135M shape
            case = dict(speed_plan(False, ["135m"])[1], kind="ddp", device=dev)
            ddp = run_group([case], cache, deadline + 120, log, nproc=2)
            results += ddp
    add_estimates(results)
    checks: dict[str, Any] = {
        "bf16": any(r.get("bf16") for r in results if r.get("status") == "ok") if cuda else None,
        "qlora_cuda": any(r["method"] == "qlora" and r.get("status") == "ok" for r in results) if cuda else None,
        "ddp_2_gpus": None,
        "liger_ran": any(r.get("use_liger_kernel") for r in results),
        "cases": len(results),
        "failed": sum(r.get("status") in ("failed", "oom") for r in results),
        "seconds": round(time.time() - start, 1),
    }  # fmt: skip
    if ddp:
        checks["ddp_2_gpus"] = {k: ddp[0].get(k) for k in ("status", "reason", "tokens_per_s")}
    t = targets(results)
    if fit:
        by = {r["liger"]: r for r in results if r.get("kind") == "fit"}
        if by.get(False) and by.get(True):
            t["batch_card_gib"] = by[True]["card_gib"]
            t["batch_ratio"] = round(by[True]["batch"] / max(by[False]["batch"], 1), 2)
            t["batch_ran"] = {("liger" if k else "plain"): v["status"] for k, v in by.items()}
    report = {
        "device": device,
        "torch": torch.__version__,
        "results": results,
        "checks": checks,
        "targets": t,
    }
    write_outputs(out_dir, report)
    print(
        f"\n{len(results)} cases in {checks['seconds']} s ({checks['failed']} failed or out of memory)"
    )
    print(
        f"checks: {json.dumps({k: v for k, v in checks.items() if k not in ('cases', 'seconds')})}"
    )
    print_targets(t)
    print(f"\nwrote {out_dir / 'gpu_check.json'} and {out_dir / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
