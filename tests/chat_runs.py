"""Builds run directories the way the trainer writes them, without training (for chat/export tests).

Adapters are random but non-zero (init_lora_weights=False) so that a loaded
adapter visibly changes the model's output.
"""

from __future__ import annotations

import json
from pathlib import Path


def write_state(ckpt: Path, step: int, history: list[dict], best: str | None = None) -> None:
    state = {
        "global_step": step,
        "epoch": history[-1].get("epoch") if history else None,
        "log_history": history,
        "best_model_checkpoint": best,
    }
    (ckpt / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")


def make_run(
    runs_dir: Path,
    base_dir: Path,
    *,
    name: str = "demo",
    method: str = "lora",
    steps: tuple[int, ...] = (2, 4),
    final: bool = True,
    seed: int = 0,
) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewiz.core.config import RunConfig

    run = runs_dir / name
    run.mkdir(parents=True)
    cfg = RunConfig(name=name, runs_dir=str(runs_dir))
    cfg.model.model = str(base_dir)
    cfg.model.method = method
    cfg.save(run / "config.toml")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    history: list[dict] = []
    torch.manual_seed(seed)
    for i, step in enumerate(steps):
        history += [
            {"step": step, "epoch": step / 2, "loss": 2.0 - 0.3 * i},
            {"step": step, "epoch": step / 2, "eval_loss": [1.5, 1.2, 1.4][i % 3]},
        ]
        model = AutoModelForCausalLM.from_pretrained(base_dir)
        if method == "full":
            with torch.no_grad():
                model.lm_head.weight.add_(torch.randn_like(model.lm_head.weight) * 0.5)
        else:
            lora = LoraConfig(
                r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False
            )
            model = get_peft_model(model, lora)
        ckpt = run / f"checkpoint-{step}"
        model.save_pretrained(ckpt)
        tokenizer.save_pretrained(ckpt)
        write_state(ckpt, step, list(history))
        if final and step == steps[-1]:
            model.save_pretrained(run / "final")
            tokenizer.save_pretrained(run / "final")
    with open(run / "metrics.jsonl", "w", encoding="utf-8") as fh:
        for row in history:
            fh.write(json.dumps(row) + "\n")
    return run
