"""Will the run fit on its disk? Checkpoints, final/ and the prepared data, sized before it starts.

Checked in the launcher (no torch): a run that fills the disk fails at a checkpoint,
minutes or hours in. The trainable count is the estimator's, so the sizes agree
with what `tunewiz estimate` shows.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from tunewiz.core.config import RunConfig
from tunewiz.core.errors import UserError

if TYPE_CHECKING:
    from tunewiz.core.profiles import ModelArch

log = logging.getLogger(__name__)

# Files a checkpoint and final/ hold besides the weights and optimizer (save_pretrained of the
# tokenizer, the chat template); sized from the model folder itself.
TOKENIZER_FILES = (
    "tokenizer*",
    "vocab*",
    "merges*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template*",
    "*.model",
)
PREPARED_BYTES_PER_DATA_BYTE = 4  # token ids and labels as JSON take ~4x the text they came from


def tokenizer_bytes(model_path: str) -> int:
    """The tokenizer files of a local model folder (0 for a hub id: not known before download)."""
    folder = Path(model_path)
    if not folder.is_dir():
        return 0
    seen = {p for pattern in TOKENIZER_FILES for p in folder.glob(pattern) if p.is_file()}
    return sum(p.stat().st_size for p in seen)


def data_bytes(cfg: RunConfig) -> int:
    """What the prepared data (runs/<name>/data/) will take, from the size of the local files."""
    total = 0
    for value in (cfg.data.data, cfg.data.validation_file):
        path = Path(value).expanduser() if value else None
        if path is None or not path.exists():
            continue
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        total += sum(p.stat().st_size for p in files)
    return total * PREPARED_BYTES_PER_DATA_BYTE


def checkpoint_bytes(cfg: RunConfig, arch: ModelArch) -> tuple[int, int]:
    """(bytes of one checkpoint, bytes of final/): fp32 trainable weights + AdamW's two moments.

    The trainable count is the estimator's (all weights for full, the adapters otherwise).
    """
    from tunewiz.core.estimate.memory import EstimateRequest, trainable_params

    req = EstimateRequest(
        method=cfg.model.method,
        lora_r=cfg.model.lora_r,
        lora_targets=cfg.model.lora_target_modules,
        freeze_layers=cfg.model.freeze_trainable_layers,
        freeze_lm_head=cfg.model.freeze_train_lm_head,
        freeze_embeddings=cfg.model.freeze_train_embeddings,
    )
    trainable = trainable_params(arch, req)
    # full and freeze save every weight (freeze's frozen blocks too); adapters only themselves
    weights = (arch.num_params() if cfg.model.method in ("full", "freeze") else trainable) * 4
    optimizer = trainable * 8  # AdamW: two fp32 moments
    return weights + optimizer, weights


def checkpoints_kept(cfg: RunConfig) -> int:
    """How many checkpoints can be on disk at once under the run's save options."""
    t = cfg.training
    if t.save_strategy == "no":
        return 1  # a stop still saves one
    # One more than the limit exists briefly while the newest is written; the best one may be kept too.
    return (
        (t.save_total_limit if t.save_total_limit > 0 else 10) + 1 + int(t.load_best_model_at_end)
    )


def check_disk_space(
    cfg: RunConfig, arch: ModelArch | None, runs_dir: Path, *, model_path: str
) -> None:
    """UserError when the run's checkpoints, final/ and data would not fit where runs_dir is."""
    if arch is None:
        log.warning("unknown model shape: skipping the disk space check")
        return
    try:
        ckpt, final = checkpoint_bytes(cfg, arch)
    except UserError as exc:  # e.g. LoRA targets the estimator cannot place: do not block here
        log.warning("could not size checkpoints (%s); skipping the disk space check", exc)
        return
    extra = tokenizer_bytes(model_path) + 64 * 1024  # + trainer_state, configs, chat template
    ckpt, final = ckpt + extra, final + extra
    kept = checkpoints_kept(cfg)
    need = kept * ckpt + final + data_bytes(cfg)
    probe = (
        runs_dir
        if runs_dir.exists()
        else next((p for p in runs_dir.absolute().parents if p.exists()), Path("/"))
    )
    free = shutil.disk_usage(probe).free
    if need > free:
        raise UserError(
            f"not enough disk space: {kept} checkpoints of ~{_gib(ckpt)} plus the final model need "
            f"~{_gib(need)}, but only {_gib(free)} is free",
            where=f"runs_dir = {cfg.runs_dir}",
            hint="lower training.save_total_limit, free some space, or use --runs-dir on a bigger disk",
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"
