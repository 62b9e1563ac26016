"""Real training of the embedded SmolLM2 on real data (advertisegen): loss goes down, the adapter
reloads to the same logits, the run folder is complete."""

from __future__ import annotations

import json

import pytest
import torch

import seektune
from seektune.config import load_config
from tests.conftest import shared


@pytest.fixture(scope="module")
def advertisegen_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "adgen"
    cfg = load_config(
        overrides={
            "output": str(out),
            "data.datasets": [
                {"path": str(shared("advertisegen/dev.json")), "columns": {"prompt": "content", "response": "summary"},
                 "max_records": 40}
            ],
        },
        sets=[
            "data.max_length=320", "data.holdout_prompts=2", "train.max_steps=16", "train.per_device_batch_size=4",
            "train.learning_rate=1e-3", "train.save_steps=8", "train.sample_max_new_tokens=12", "lora.dropout=0",
            "data.eval_split=0.1", "train.eval_steps=8", "train.report_to=[tensorboard]",
        ],
    )
    return seektune.train(cfg)


def _batch(run, n=6):
    from seektune.data.dataset import prepare_data
    from seektune.data.render import ChatRenderer
    from seektune.training.collate import PadCollator

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(run.path / "tokenizer"))
    renderer = ChatRenderer(tokenizer, None, run.config.data.loss_on, run.config.data.max_length)
    data = prepare_data(run.config.data, renderer)
    collate = PadCollator(tokenizer.pad_token_id)
    return collate([{"input_ids": s.input_ids, "labels": s.labels} for s in data.train[:n]])


def test_run_folder_is_complete(advertisegen_run):
    run = advertisegen_run
    assert run.complete and run.path.is_dir()
    assert not run.path.with_name(run.path.name + ".incomplete").exists()
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "tokenizer/tokenizer_config.json",
                 "config.yaml", "metrics.jsonl", "data_report.json", "samples.md", "run.json"):
        assert (run.path / name).is_file(), name
    report = json.loads((run.path / "data_report.json").read_text())
    ds = report["datasets"][0]
    assert ds["records_read"] == 40
    assert ds["records_held_out_for_eval"] == 4
    assert list((run.path / "tensorboard").glob("events.out.tfevents.*"))
    accounted = ("records_used_for_training", "records_held_out_for_eval", "records_held_out_for_samples", "records_skipped",
                 "dropped_no_supervised_after_truncation")
    assert sum(ds[k] for k in accounted) == 40
    assert 0 < ds["supervised_fraction"] < 1
    # config.yaml replays the run: it loads back to the same config.
    assert load_config(run.path / "config.yaml") == run.config


def test_training_lowers_loss(advertisegen_run):
    run = advertisegen_run
    losses = [m["loss"] for m in run.step_metrics]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    batch = _batch(run)
    model = run.model.eval()
    with torch.no_grad():
        tuned = model(**batch).loss.item()
        with model.disable_adapter():
            base = model(**batch).loss.item()
    assert tuned < base - 0.1, (base, tuned)
    assert all(m.get("tokens_per_second", 1) > 0 for m in run.metrics)
    eval_losses = [m["eval_loss"] for m in run.metrics if "eval_loss" in m]
    assert len(eval_losses) == 2 and all(0 < v < 20 for v in eval_losses)  # evaluated at steps 8 and 16


def test_adapter_reloads_to_identical_logits(advertisegen_run):
    run = advertisegen_run
    batch = _batch(run, n=3)
    with torch.no_grad():
        trained = run.model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loaded = seektune.load(run.path)
        reloaded = loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        with loaded.model.disable_adapter():
            base = loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(trained, reloaded)
    assert (trained - base).abs().max() > 1e-3  # the adapter is not a no-op
    answer = loaded.generate("类型#裙*颜色#红色", max_new_tokens=8)
    assert isinstance(answer, str)


def test_samples_show_base_and_tuned(advertisegen_run):
    text = (advertisegen_run.path / "samples.md").read_text()
    assert text.count("**base model:**") == 2 and text.count("**fine-tuned:**") == 2
