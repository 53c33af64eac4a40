"""method = "freeze": only the last N transformer blocks (and optionally the LM head / embeddings) train."""

from __future__ import annotations

import pytest

from tests.test_train import launch_with_env, make_cfg, wait_done
from tunewiz.core.config import RunConfig, validate
from tunewiz.core.errors import UserError


def _cfg(model, layers: int, head: bool = False, emb: bool = False) -> RunConfig:
    cfg = RunConfig()
    cfg.model.model, cfg.model.method = str(model), "freeze"
    cfg.model.freeze_trainable_layers = layers
    cfg.model.freeze_train_lm_head, cfg.model.freeze_train_embeddings = head, emb
    return cfg


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_trains_exactly_the_last_blocks(tiny_model_dir):
    from tunewiz.core.train.model import load_for_training

    model = load_for_training(_cfg(tiny_model_dir, 1), str(tiny_model_dir), precision="fp32")
    names = _trainable(model)
    assert names and all(n.startswith("model.layers.1.") for n in names)
    block = sum(p.numel() for p in model.model.layers[1].parameters())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == block
    # Every parameter of the last block trains, none of the first.
    assert len(names) == len(list(model.model.layers[1].parameters()))

    both = load_for_training(
        _cfg(tiny_model_dir, 2, head=True), str(tiny_model_dir), precision="fp32"
    )
    expected = sum(p.numel() for p in both.model.layers.parameters())
    expected += both.lm_head.weight.numel()  # tied to the embeddings: one matrix
    assert sum(p.numel() for p in both.parameters() if p.requires_grad) == expected


def test_freeze_more_layers_than_the_model_has(tiny_model_dir):
    from tunewiz.core.train.model import load_for_training

    with pytest.raises(UserError, match="2 transformer blocks") as err:
        load_for_training(_cfg(tiny_model_dir, 3), str(tiny_model_dir), precision="fp32")
    assert err.value.where == "model.freeze_trainable_layers"


def test_freeze_zero_layers_needs_something_to_train():
    cfg = RunConfig()
    cfg.model.method, cfg.model.freeze_trainable_layers = "freeze", 0
    with pytest.raises(UserError, match="1 or more"):
        validate(cfg)
    cfg.model.freeze_train_lm_head = True
    validate(cfg)


def test_freeze_run_changes_only_the_last_block(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    cfg = make_cfg(tmp_path, tiny_model_dir, "freeze1", method="freeze", max_steps=3)
    cfg.model.freeze_trainable_layers = 1
    run_dir = launch_with_env(cfg)
    assert wait_done(run_dir).state == "finished"
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(run_dir / "final" / "model.safetensors"))
    changed = {k for k in before if not before[k].equal(after[k])}
    assert changed and all(k.startswith("model.layers.1.") for k in changed)
