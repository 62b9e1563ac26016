"""Fixtures for the reliability suite: a tiny random Llama with SmolLM2's tokenizer (steps take milliseconds),
real data files written per test (tests/processes.py runs real `seektune` processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread_here(one_thread):  # tests/conftest.py
    yield


def build_tiny_llama(folder: Path, tokenizer, seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, smol_tokenizer) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", smol_tokenizer)


def alpaca_records(n: int, start: int = 0) -> list[dict]:
    topics = ["rivers", "bread", "stars", "music", "trees", "clocks", "rain", "maps", "salt", "glass"]
    return [
        {"instruction": f"Tell me one fact about {topics[i % len(topics)]} number {i}.", "input": "",
         "output": f"Fact {i}: {topics[i % len(topics)]} are interesting in their own way."}
        for i in range(start, start + n)
    ]


def write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def tiny_config(model_dir, data_path, out, **train) -> dict:
    t = {"max_steps": 6, "per_device_batch_size": 2, "learning_rate": 1e-2, "logging_steps": 1, "save_steps": 2,
         "group_by_length": False, "warmup_ratio": 0.0}
    t.update(train)
    return {
        "model": {"source": str(model_dir)},
        "data": {"datasets": [{"path": str(data_path)}], "max_length": 64, "holdout_prompts": 0},
        "lora": {"r": 4, "dropout": 0.0},
        "train": t,
        "output": str(out),
    }
