"""Shared fixtures: the embedded model (converted once per cache), tokenizers for real chat templates,
and the real datasets in ../shared/data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SEEKTUNE_SHARED_DATA", ROOT.parent / "shared" / "data"))
TEMPLATE_FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"
TEMPLATE_NAMES = ["deepseek_llm_7b_chat", "deepseek_v3", "deepseek_r1_distill_qwen", "llama3_instruct"]

# Tests never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def shared(rel: str) -> Path:
    path = SHARED_DATA / rel
    if not path.exists():
        pytest.fail(f"{path} is missing: tests read the real datasets in ../shared/data")
    return path


@pytest.fixture(scope="session")
def smol_dir() -> str:
    from seektune.models.source import resolve_source

    return resolve_source(None).location


@pytest.fixture(scope="session")
def smol_tokenizer(smol_dir):
    from seektune.models.load import load_tokenizer
    from seektune.models.source import ModelSource

    return load_tokenizer(ModelSource("embedded", smol_dir, "embedded"))


def template_tokenizer(smol_dir: str, name: str):
    """SmolLM2's vocabulary with a real model's chat template and special tokens (from its tokenizer_config.json)."""
    from transformers import AutoTokenizer

    spec = json.loads((TEMPLATE_FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    tok = AutoTokenizer.from_pretrained(smol_dir)
    tok.add_special_tokens({"additional_special_tokens": spec["special_tokens"]})
    tok.bos_token = spec["bos_token"]
    tok.eos_token = spec["eos_token"]
    tok.pad_token = spec.get("pad_token") or spec["eos_token"]
    tok.chat_template = spec["chat_template"]
    return tok


@pytest.fixture(scope="session")
def template_tokenizers(smol_dir, smol_tokenizer):
    toks = {name: template_tokenizer(smol_dir, name) for name in TEMPLATE_NAMES}
    toks["smollm2_chatml"] = smol_tokenizer
    return toks


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny models: on a small CPU a second intra-op thread costs more in synchronisation than it
    gains (measured 0.4 s vs 0.5-3 s per step on 2 vCPUs). Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
