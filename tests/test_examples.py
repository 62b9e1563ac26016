"""Every example YAML is valid, covers a dataset of ../shared/data, and trains on the embedded model
without code changes (a few steps on a few records each)."""

from __future__ import annotations

from pathlib import Path

import pytest

import seektune
from seektune.config import load_config
from seektune.data.dataset import prepare_data
from seektune.data.render import ChatRenderer
from tests.conftest import ROOT, SHARED_DATA

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_every_shared_dataset_has_an_example():
    used = {Path(ds.path).resolve().relative_to(SHARED_DATA.resolve()).parts[0]
            for ex in EXAMPLES for ds in load_config(ex).data.datasets}
    available = {p.name for p in SHARED_DATA.iterdir() if p.is_dir()}
    assert available <= used, f"datasets without an example: {sorted(available - used)}"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_reads_every_record(example, smol_tokenizer):
    cfg = load_config(example)
    assert cfg.model.source is None and cfg.model.meant_for.startswith("deepseek-ai/")
    renderer = ChatRenderer(smol_tokenizer, None, cfg.data.loss_on, cfg.data.max_length)
    data = prepare_data(cfg.data, renderer)
    for report in data.reports:
        assert report.records_read > 0 and not report.skipped, report.skipped[:3]
        assert report.supervised_tokens > 0


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_trains_on_the_embedded_model(example, tmp_path):
    cfg = load_config(
        example,
        overrides={"output": str(tmp_path / "run")},
        sets=["data.max_length=256", "data.holdout_prompts=0", "data.eval_split=0", "train.max_steps=2",
              "train.per_device_batch_size=2", "train.gradient_accumulation=1"],
    )
    for ds in cfg.data.datasets:
        ds.max_records = 6
    run = seektune.train(cfg)
    assert run.complete and (run.path / "adapter" / "adapter_model.safetensors").is_file()
    losses = [m["loss"] for m in run.step_metrics]
    assert len(losses) == 2 and all(loss == loss for loss in losses)  # two finite steps
