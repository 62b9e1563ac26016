"""One small trained adapter on the embedded model, shared by every test of this folder, and its merge."""

from __future__ import annotations

import json

import pytest
import torch

import seektune
from seektune.config import load_config
from tests.conftest import shared

HOLDOUT = 5


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A high learning rate and few steps: the adapter visibly changes the answers. The English records of the
    identity data: a few steps teach a 135M model to answer (and stop) in English, not yet in Chinese."""
    folder = tmp_path_factory.mktemp("use-runs")
    records = json.loads(shared("identity/identity.json").read_text(encoding="utf-8"))
    english = folder / "identity_en.json"
    english.write_text(json.dumps([r for r in records if r["instruction"].isascii()], ensure_ascii=False), encoding="utf-8")
    out = folder / "identity"
    cfg = load_config(
        overrides={"output": str(out), "data.datasets": [{"path": str(english)}]},
        sets=[
            "data.max_length=128", f"data.holdout_prompts={HOLDOUT}", "train.max_steps=8", "train.per_device_batch_size=4",
            "train.learning_rate=3e-3", "train.save_steps=100", "train.sample_max_new_tokens=8", "lora.dropout=0",
            "lora.r=8", "lora.alpha=16", "train.warmup_ratio=0", "train.precision=fp32",
        ],
    )
    threads = torch.get_num_threads()
    run = seektune.train(cfg)
    torch.set_num_threads(threads)
    return run


@pytest.fixture(scope="session")
def merged_dir(trained_run, tmp_path_factory):
    from seektune.adapters.merge import merge

    out = tmp_path_factory.mktemp("use-merged") / "merged"
    report = merge(trained_run.path, out, dtype="fp32")
    return out, report
