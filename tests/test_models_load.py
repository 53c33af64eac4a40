"""load_for_chat: plain models, runs with LoRA / QLoRA / full checkpoints, and the run's base."""

from __future__ import annotations

import pytest
import torch
from chat_runs import make_run

from tunewiz.core.errors import UserError
from tunewiz.core.loading import load_for_chat
from tunewiz.core.models import find_run


def logits(loaded, text="hello there"):
    ids = loaded.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return loaded.model(**ids).logits


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs"), tiny_model_dir, steps=(2, 4, 6))


def test_run_defaults_to_final_and_adapters_change_the_output(lora_run, tiny_model_dir):
    final = load_for_chat("demo", runs_dir=lora_run.parent, device="cpu")
    assert final.checkpoint == "final" and final.label.endswith("demo final")
    assert final.method == "lora" and final.run_dir == lora_run
    assert "<|im_start|>" in final.chat_template
    base = load_for_chat(str(lora_run), "base", device="cpu")
    plain = load_for_chat(str(tiny_model_dir), device="cpu")
    assert base.checkpoint == "base" and base.chat_template == final.chat_template
    assert torch.allclose(logits(base), logits(plain))
    assert not torch.allclose(logits(final), logits(base), atol=1e-3)
    # final/ was saved from the last checkpoint: same weights.
    last = load_for_chat(str(lora_run), "last", device="cpu")
    assert last.checkpoint == "checkpoint-6"
    assert torch.allclose(logits(final), logits(last))


def test_each_checkpoint_loads_its_own_adapter(lora_run):
    first = load_for_chat(str(lora_run), "2", device="cpu")
    best = load_for_chat(str(lora_run), "best", device="cpu")  # lowest eval loss: step 4
    assert (first.checkpoint, best.checkpoint) == ("checkpoint-2", "checkpoint-4")
    assert not torch.allclose(logits(first), logits(best), atol=1e-3)


def test_without_final_the_last_checkpoint_is_used(tiny_model_dir, tmp_path):
    run = make_run(tmp_path, tiny_model_dir, name="partial", steps=(3,), final=False)
    assert load_for_chat("partial", runs_dir=tmp_path, device="cpu").checkpoint == "checkpoint-3"
    with pytest.raises(UserError, match="no checkpoint 'final'"):
        load_for_chat(str(run), "final", device="cpu")


def test_full_checkpoint_loads_as_a_model_folder(tiny_model_dir, tmp_path):
    run = make_run(tmp_path, tiny_model_dir, name="full", method="full", steps=(2,))
    loaded = load_for_chat(str(run), device="cpu")
    assert loaded.method == "full" and not hasattr(loaded.model, "peft_config")
    plain = load_for_chat(str(tiny_model_dir), device="cpu")
    assert not torch.allclose(logits(loaded), logits(plain), atol=1e-3)


def test_qlora_run_reloads_the_base_in_4bit_with_the_adapter(tiny_model_dir, tmp_path):
    run = make_run(tmp_path, tiny_model_dir, name="q", method="qlora", steps=(2,))
    loaded = load_for_chat(str(run), device="cpu")
    base_layer = loaded.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert type(base_layer).__name__ == "Linear4bit"
    assert torch.isfinite(logits(loaded)).all()


def test_not_a_run_and_not_a_model_is_a_clear_error(tmp_path, tiny_model_dir):
    assert find_run("nope", tmp_path) is None
    with pytest.raises(UserError, match="not a run"):
        load_for_chat(str(tiny_model_dir), "best", device="cpu")
    with pytest.raises(UserError, match="no config.json"):
        load_for_chat(str(tmp_path), device="cpu")
    with pytest.raises(UserError, match="could not load") as err:
        load_for_chat("someone/not-downloaded-model", device="cpu")
    assert "offline" in err.value.hint
