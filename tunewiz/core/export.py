"""Export: merge a LoRA adapter into its base and save a standalone Hugging Face folder.

The result loads with plain `AutoModelForCausalLM.from_pretrained(folder)`: no
peft, no bitsandbytes. A QLoRA adapter is merged into the base loaded
*unquantized* in 16 bits (merging into 4-bit weights would round the adapter
away and leave a model only bitsandbytes can load).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from tunewiz.core.errors import UserError

log = logging.getLogger(__name__)


def _merge_dtype(method: str, device: str, dtype: str) -> Any:
    import torch

    from tunewiz.core.loading import DTYPE_NAMES, torch_dtype

    if dtype != "auto":
        if dtype not in DTYPE_NAMES:
            raise UserError(
                f"unknown dtype {dtype!r}", where="--dtype", hint="auto, fp32, fp16 or bf16"
            )
        return torch_dtype(dtype)
    if method == "qlora":
        return torch.bfloat16  # the 16-bit base the 4-bit weights were quantized from
    return None  # the base's own dtype, as saved in its config


def merge_run(
    run: str,
    out_dir: str | Path,
    *,
    checkpoint: str | None = None,
    runs_dir: str | Path = "runs",
    dtype: str = "auto",
    overwrite: bool = False,
    push_to_hub: str | None = None,
    trust_remote_code: bool = False,
) -> Path:
    """Merge the run's adapter (default: final, else last) into its base; save to `out_dir`."""
    from tunewiz.core.checkpoints import resolve_checkpoint
    from tunewiz.core.config import load_run_config
    from tunewiz.core.loading import fit_embeddings, load_causal_lm, load_checkpoint_tokenizer
    from tunewiz.core.models import find_run, trust_for_run

    run_dir = find_run(run, runs_dir)
    if run_dir is None:
        raise UserError(f"no run named {run!r}", where=str(runs_dir))
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(
            "the output folder is not empty",
            where=str(out),
            hint="pick a new folder or pass --overwrite",
        )
    cfg = load_run_config(run_dir)
    trust = trust_for_run(run_dir, cfg, trust_remote_code)
    ckpt = resolve_checkpoint(run_dir, checkpoint)  # none named: final, else the last
    tokenizer = load_checkpoint_tokenizer(str(ckpt.path), cfg.model.model, trust)

    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    if ckpt.is_adapter:
        from peft import PeftModel

        base = load_causal_lm(
            cfg.model.model,
            device="cpu",
            dtype=_merge_dtype(cfg.model.method, "cpu", dtype) or "auto",
            trust_remote_code=trust,
        )
        fit_embeddings(base, tokenizer)
        model = PeftModel.from_pretrained(base, str(ckpt.path)).merge_and_unload()
    else:
        log.info("%s is a full checkpoint: copying it as a standalone model", ckpt.name)
        model = load_causal_lm(
            str(ckpt.path),
            device="cpu",
            dtype=_merge_dtype("full", "cpu", dtype) or "auto",
            trust_remote_code=trust,
        )
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    log.info("saved the merged model to %s", out)
    if push_to_hub:
        push(out, push_to_hub)
    return out


def push(folder: Path, repo_id: str) -> str:
    """Upload a saved folder to the hub (needs network and `hf auth login`)."""
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    except Exception as exc:  # network, auth, permissions: all the user's to fix
        raise UserError(
            f"could not push to the hub: {exc}",
            where=f"--push-to-hub {repo_id}",
            hint=f"the merged model is saved in {folder}; check the network and `hf auth login`, then retry",
        ) from None
    return str(getattr(info, "commit_url", repo_id))
