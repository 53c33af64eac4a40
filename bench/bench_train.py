"""Training speed: `tunewiz train` against a plain transformers Trainer script.

Same model (a small random Llama with the bundled tokenizer, so it runs in a
few minutes on a CPU), same data (/work/shared/data/alpaca_en_demo.json), same
hyperparameters (LoRA r=16, batch 4, max_seq_len 512, lr 2e-4, N steps).
The baseline is written the usual way: tokenize with the chat template, mask
the prompt, DataCollatorForSeq2Seq padding to the longest row in the batch.

Printed figures (ratios against the baseline measured in this same script):
  1. training tokens/s (every token the model computes on, padding included: the
     engine's throughput, independent of how much padding the random batches hold),
     tunewiz unpacked vs baseline                     (target >= 0.97)
  2. non-padding tokens/s, tunewiz packed vs baseline (target >= 1.3)
  3. seconds from the command to the first optimizer step, both

Run:  .venv/bin/python bench/bench_train.py [--steps 12] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "alpaca_en_demo.json"
BATCH, SEQ, LR = 4, 512, 2e-4

BASELINE = textwrap.dedent(
    """
    import json, sys, time
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                              TrainingArguments, TrainerCallback)
    from peft import LoraConfig, get_peft_model
    from datasets import Dataset

    model_dir, data_path, out, steps, t_out = sys.argv[1:6]
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = json.load(open(data_path))

    def encode(r):
        user = r["instruction"] + ("\\n\\n" + r["input"] if r["input"] else "")
        prompt = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)
        full = prompt + r["output"] + tok.eos_token
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False)["input_ids"][:%(seq)d]
        return {"input_ids": ids, "labels": ([-100] * len(p) + ids[len(p):])[:len(ids)]}

    ds = Dataset.from_list([encode(r) for r in rows])
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))

    class Counting(DataCollatorForSeq2Seq):
        # Measurement only: tokens of each batch in the order the Trainer consumes them.
        batches = []
        def __call__(self, features, return_tensors=None):
            out = super().__call__(features, return_tensors)
            self.batches.append((out["input_ids"].numel(), int(out["attention_mask"].sum())))
            return out

    class StepTimes(TrainerCallback):
        times, cpu = [], []
        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.time()); self.cpu.append(time.process_time())

    cb = StepTimes()
    collator = Counting(tok, padding="longest")
    args = TrainingArguments(output_dir=out, max_steps=int(steps), per_device_train_batch_size=%(batch)d,
                             learning_rate=%(lr)g, lr_scheduler_type="cosine", warmup_steps=0.03,
                             logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                             disable_tqdm=True, seed=42)
    trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                      data_collator=collator, callbacks=[cb])
    trainer.train()
    json.dump({"times": cb.times, "cpu": cb.cpu, "batches": collator.batches[: int(steps)]},
              open(t_out, "w"))
    """
) % {"seq": SEQ, "batch": BATCH, "lr": LR}


def make_model(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tunewiz.core.bundled import ensure_default_model

    tok = AutoTokenizer.from_pretrained(ensure_default_model())
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def run_baseline(model: Path, tmp: Path, steps: int, tag: str) -> dict:
    script = tmp / "baseline.py"
    script.write_text(BASELINE)
    out = tmp / f"baseline-{tag}.json"
    t0 = time.time()
    subprocess.run(
        [sys.executable, str(script), str(model), str(DATA), str(tmp / f"base-out-{tag}"), str(steps), str(out)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    rec = json.loads(out.read_text())
    t, batches = rec["times"], rec["batches"]
    span = t[-1] - t[0]  # steady state: from the end of step 1 to the end of the last step
    cpu = rec["cpu"][-1] - rec["cpu"][0]
    return {
        "first_step_s": t[0] - t0,
        "padded_tokens_per_s": sum(b[0] for b in batches[1:]) / span,
        "tokens_per_s": sum(b[1] for b in batches[1:]) / span,
        "padded_tokens_per_cpu_s": sum(b[0] for b in batches[1:]) / cpu,
        "tokens_per_cpu_s": sum(b[1] for b in batches[1:]) / cpu,
    }


def run_tunewiz(model: Path, tmp: Path, steps: int, *, packing: bool, tag: str) -> dict:
    from tunewiz.core import runs

    name = f"bench-{tag}"
    cmd = [
        sys.executable, "-m", "tunewiz", "train", "--model", str(model), "--data", str(DATA),
        "--method", "lora", "--name", name, "--runs-dir", str(tmp / "runs"),
        "--max-steps", str(steps), "--per-device-train-batch-size", str(BATCH),
        "--max-seq-len", str(SEQ), "--learning-rate", str(LR), "--save-strategy", "no",
        "--eval-strategy", "no", "--validation-split", "0", "--logging-steps", "1",
        "--packing", "true" if packing else "false",
    ]  # fmt: skip
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    run_dir = tmp / "runs" / name
    # CPU seconds of the worker between the logs of step 1 and the last step: unlike wall time,
    # they do not grow when other processes share the machine.
    import psutil

    tail, cpu_at = runs.MetricsTail(run_dir / runs.METRICS_FILE), {}
    while runs.read_run(run_dir).state in runs.LIVE_STATES:
        for row in tail.read_new():
            if row.get("step") in (1, steps) and "loss" in row:
                times = psutil.Process(runs.read_status(run_dir)["pid"]).cpu_times()
                cpu_at[row["step"]] = times.user + times.system
        time.sleep(0.02)
    info = runs.read_run(run_dir)
    if info.state != "finished":
        raise SystemExit(f"tunewiz run {name} {info.state}: {info.error}")
    rows = [m for m in runs.read_metrics(run_dir) if "loss" in m]
    # Steady state: from the end of step 1 to the end of the last step.
    span = rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]
    first, last = rows[0], rows[-1]
    cpu = cpu_at[steps] - cpu_at[1]
    return {
        "first_step_s": runs.read_status(run_dir)["first_step_at"] - t0,
        "padded_tokens_per_s": (last["padded_tokens_seen"] - first["padded_tokens_seen"]) / span,
        "tokens_per_s": (last["tokens_seen"] - first["tokens_seen"]) / span,
        "padded_tokens_per_cpu_s": (last["padded_tokens_seen"] - first["padded_tokens_seen"]) / cpu,
        "tokens_per_cpu_s": (last["tokens_seen"] - first["tokens_seen"]) / cpu,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument(
        "--repeats", type=int, default=1, help="Alternate runs this many times; best of each."
    )
    args = ap.parse_args()
    os.environ.setdefault("TUNEWIZ_HOME", str(ROOT / ".tunewiz-home"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = make_model(tmp / "model")
        results: dict[str, list[dict]] = {"baseline": [], "tunewiz": [], "packed": []}
        for i in range(args.repeats):
            results["baseline"].append(run_baseline(model, tmp, args.steps, str(i)))
            results["tunewiz"].append(
                run_tunewiz(model, tmp, args.steps, packing=False, tag=f"plain-{i}")
            )
            results["packed"].append(
                run_tunewiz(model, tmp, args.steps, packing=True, tag=f"packed-{i}")
            )

    def best(kind: str, key: str) -> dict:
        return max(results[kind], key=lambda r: r[key])

    first = {k: min(r["first_step_s"] for r in v) for k, v in results.items()}
    print(
        f"model: random Llama 4x256 (vocab 49152), LoRA r=16, batch {BATCH}, max_seq_len {SEQ}, "
        f"{args.steps} steps, data {DATA.name}, {os.cpu_count()} CPU threads, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for unit in ("s", "cpu_s"):
        print(f"\nper {'wall second' if unit == 's' else 'CPU second of the training process'}"
              "             processed tok   non-padding tok")  # fmt: skip
        for label, kind in (("baseline Trainer (pad to longest)", "baseline"),
                            ("tunewiz train (unpacked)", "tunewiz"),
                            ("tunewiz train (packing = true)", "packed")):  # fmt: skip
            a = best(kind, f"padded_tokens_per_{unit}")[f"padded_tokens_per_{unit}"]
            b = best(kind, f"tokens_per_{unit}")[f"tokens_per_{unit}"]
            print(f"  {label:48s}{a:10.1f}{b:18.1f}")
        r1 = (best("tunewiz", f"padded_tokens_per_{unit}")[f"padded_tokens_per_{unit}"]
              / best("baseline", f"padded_tokens_per_{unit}")[f"padded_tokens_per_{unit}"])  # fmt: skip
        r2 = (best("packed", f"tokens_per_{unit}")[f"tokens_per_{unit}"]
              / best("baseline", f"tokens_per_{unit}")[f"tokens_per_{unit}"])  # fmt: skip
        print(f"  1. training tokens, tunewiz / plain script:          {r1:.3f}  (target >= 0.97)")
        print(f"  2. non-padding tokens, tunewiz packed / plain script: {r2:.3f}  (target >= 1.3)")
    print(
        f"\n3. command to first optimizer step: plain script {first['baseline']:.1f} s, "
        f"tunewiz {first['tunewiz']:.1f} s (packed {first['packed']:.1f} s)"
    )
    print(
        "On a shared machine wall-clock figures swing with other processes' load; the per-CPU-second"
    )
    print("figures measure the same work without that noise.")


if __name__ == "__main__":
    main()
