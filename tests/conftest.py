"""Shared fixtures: datasets, the bundled default model, and tiny models built from a config.

TUNEWIZ_HOME points at a folder inside the checkout so the bundled GGUF is
converted once and reused by every test (and every later test run). Every file
a test reads is in the repository (`tests/fixtures/`, sources in its README) or
written by the test, so a clone with nothing beside it passes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
os.environ.setdefault("TUNEWIZ_HOME", str(ROOT / ".tunewiz-home"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


TOPICS = (
    "photosynthesis|the water cycle|compound interest|a binary search|volcanoes|"
    "the French Revolution|machine translation|sourdough bread|black holes|recycling|"
    "the immune system|jazz|plate tectonics|a hash table|tides|the printing press|vaccines|"
    "solar panels|chess openings|café culture"
).split("|")


def alpaca_rows() -> list[dict[str, str]]:
    """60 distinct Alpaca rows (every third with an `input`), then exact repeats of rows 3, 17 and 42.

    It stands in for LLaMA-Factory's Alpaca demo set, whose CC BY-NC licence this
    repository cannot ship: the same shape (instruction, input, output; most inputs
    empty; a few rows repeated), and the repeats come after row 40 so the first 40
    rows are clean.
    """
    rows = []
    for i in range(60):
        topic = TOPICS[i % len(TOPICS)]
        kind = ("Explain", "Give three facts about", "Write a short poem about")[i // len(TOPICS)]
        has_input = i % 3 == 2
        rows.append(
            {
                "instruction": f"{kind} {topic}." if not has_input else f"{kind} the text below.",
                "input": f"A note on {topic}: it matters more than it seems." if has_input else "",
                "output": f"{kind.split()[0]} ({i}): {topic} is a subject worth a careful answer.\n"
                f"First, {topic} has a history; second, it has uses; third, it has limits.",
            }
        )
    return rows + [dict(rows[3]), dict(rows[17]), dict(rows[42])]


@pytest.fixture(scope="session")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with `alpaca.json` (written here), `identity.json` and `c4_demo_16.jsonl`."""
    folder = tmp_path_factory.mktemp("data")
    for path in FIXTURES.iterdir():
        if path.suffix in (".json", ".jsonl"):
            shutil.copy(path, folder / path.name)
    (folder / "alpaca.json").write_text(json.dumps(alpaca_rows(), indent=2), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The bundled SmolLM2-135M-Instruct as a Hugging Face folder (converted once)."""
    from tunewiz.core.bundled import ensure_default_model

    return ensure_default_model()


@pytest.fixture(scope="session")
def tiny_model_dir(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama with the bundled model's tokenizer and chat template.

    Small enough to train for a few steps in seconds on a CPU; the real
    tokenizer keeps templates and masking honest.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
