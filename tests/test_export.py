"""`tunewiz export`: merged adapters load with plain transformers and give the same logits."""

from __future__ import annotations

import pytest
import torch
from chat_runs import make_run
from transformers import AutoModelForCausalLM

from tunewiz.core.errors import UserError
from tunewiz.core.export import merge_run
from tunewiz.core.loading import load_for_chat


def logits(model, tokenizer, text="The merged model says hello"):
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits.float()


def test_lora_merge_is_a_plain_model_with_the_adapters_logits(tiny_model_dir, tmp_path):
    run = make_run(tmp_path / "runs", tiny_model_dir, steps=(2, 4))
    out = merge_run("demo", tmp_path / "merged", runs_dir=tmp_path / "runs")
    names = {p.name for p in out.iterdir()}
    assert (
        "model.safetensors" in names
        and "chat_template.jinja" in names
        and "tokenizer.json" in names
    )
    assert "adapter_config.json" not in names
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not hasattr(merged, "peft_config")
    with_adapter = load_for_chat(str(run), device="cpu")
    base = load_for_chat(str(run), "base", device="cpu")
    expected = logits(with_adapter.model, with_adapter.tokenizer)
    assert torch.allclose(logits(merged, with_adapter.tokenizer), expected, atol=1e-4)
    assert not torch.allclose(logits(base.model, base.tokenizer), expected, atol=1e-3)

    # A chosen checkpoint merges its own adapter; a non-empty target is refused.
    with pytest.raises(UserError, match="not empty"):
        merge_run(str(run), out, checkpoint="2")
    merge_run(str(run), out, checkpoint="2", overwrite=True)
    first = load_for_chat(str(run), "2", device="cpu")
    again = AutoModelForCausalLM.from_pretrained(out)
    assert torch.allclose(
        logits(again, first.tokenizer), logits(first.model, first.tokenizer), atol=1e-4
    )


def test_qlora_merges_into_the_16bit_base(tiny_model_dir, tmp_path):
    run = make_run(tmp_path, tiny_model_dir, name="q", method="qlora", steps=(2,))
    out = merge_run(str(run), tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.dtype == torch.bfloat16
    assert "quantization_config" not in merged.config.to_dict()
    # Same adapter on the unquantized bf16 base, unmerged: the merge changed nothing but the layout.
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    reference = PeftModel.from_pretrained(base, str(run / "final"))
    tok = load_for_chat(str(run), "base", device="cpu").tokenizer
    assert torch.allclose(logits(merged, tok), logits(reference, tok), atol=0.1)


def test_push_without_network_is_a_user_error_and_keeps_the_folder(
    tiny_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = make_run(tmp_path, tiny_model_dir, steps=(2,))
    with pytest.raises(UserError, match="could not push") as err:
        merge_run(str(run), tmp_path / "merged", push_to_hub="someone/demo")
    assert "saved in" in err.value.hint
    assert (tmp_path / "merged" / "model.safetensors").is_file()
