"""`train.report_to: [wandb, mlflow]` on one tiny real run of the embedded model, fully offline: each tracker's
own files are read back (wandb's offline .wandb log, MLflow's store through MlflowClient) and hold the loss
series of metrics.jsonl, the run's name, and seektune's system details and config."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest
import torch

import seektune
from seektune.config import load_config
from seektune.training import tracking
from tests.conftest import shared

pytest.importorskip("wandb")
pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, one_thread):  # one_thread: tests/conftest.py, restored after the module
    d = tmp_path_factory.mktemp("trackers")
    lines = shared("advertisegen/dev.json").read_text(encoding="utf-8").splitlines()
    (d / "train.jsonl").write_text("\n".join(lines[:16]) + "\n", encoding="utf-8")
    cfg = load_config(overrides={
        "output": str(d / "run"),
        "data.datasets": [{"path": str(d / "train.jsonl"), "columns": {"prompt": "content", "response": "summary"}}],
    }, sets=["data.max_length=96", "data.holdout_prompts=0", "train.max_steps=4", "train.per_device_batch_size=4",
             "train.save_steps=100", "train.report_to=[wandb, mlflow]"])
    run = seektune.train(cfg)
    losses = {r["step"]: r["loss"] for r in map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines())
              if "loss" in r}
    return run, losses


def wandb_records(path: Path):
    """The protobuf records of a wandb offline log: a 7-byte header, then LevelDB-style chunks in 32 KiB blocks,
    each with a CRC-32 of its type byte and payload (what `wandb sync` uploads)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:7] == b":W&B" + struct.pack("<HB", 0xBEE1, 0), f"{path} is not a wandb log"
    pos, parts = 7, []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        crc, size, kind = struct.unpack("<IHB", data[pos:pos + 7])
        payload = data[pos + 7:pos + 7 + size]
        assert zlib.crc32(bytes([kind]) + payload) == crc, f"corrupt chunk at byte {pos} of {path}"
        pos += 7 + size
        parts.append(payload)
        if kind in (1, 4):  # FULL or LAST: a record is complete
            yield Record.FromString(b"".join(parts))
            parts = []


def _items(items) -> dict:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def test_wandb_offline_log_has_the_loss_and_details(tracked):
    run, losses = tracked
    logs = list((run.path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1, list((run.path / "wandb").rglob("*"))
    records = list(wandb_records(logs[0]))
    kinds = [r.WhichOneof("record_type") for r in records]
    assert kinds[-1] == "exit"  # the run was closed before the folder was published
    start = next(r.run for r in records if r.HasField("run"))
    assert start.display_name == run.path.name and start.project == "seektune"
    config = _items(start.config.update)
    for r in records:
        if r.HasField("config"):
            config.update(_items(r.config.update))
    history = [_items(r.history.item) for r in records if r.HasField("history")]
    logged = {int(h["train/global_step"]): h["train/loss"] for h in history if "train/loss" in h}
    assert sorted(losses) == [1, 2, 3, 4]
    assert logged == pytest.approx(losses)
    details = config["seektune"]
    assert details["system"]["torch"] == torch.__version__ and details["system"]["device"].startswith("cpu")
    assert details["config"]["train"]["report_to"] == ["wandb", "mlflow"] and details["config"]["lora"]["r"] == run.config.lora.r
    assert config["max_steps"] == 4  # the Trainer's own arguments are there too


def test_mlflow_store_has_the_loss_series_and_details(tracked, monkeypatch):
    from mlflow.tracking import MlflowClient

    run, losses = tracked
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a file store only with it
    client = MlflowClient((run.path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("seektune")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == run.path.name and found.info.status == "FINISHED"
    history = client.get_metric_history(found.info.run_id, "loss")
    assert {m.step: m.value for m in history} == pytest.approx(losses)
    params = found.data.params
    assert params["seektune.system.torch"] == torch.__version__
    assert params["seektune.system.device"].startswith("cpu") and int(params["seektune.system.cpu_count"]) >= 1
    assert params["seektune.config.lora.r"] == str(run.config.lora.r) and params["max_steps"] == "4"


def test_nothing_leaves_the_machine_by_default(monkeypatch, tmp_path):
    monkeypatch.setattr(tracking, "_ours", {})
    for name in ("WANDB_MODE", "WANDB_ERROR_REPORTING", "MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY",
                 "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(name, raising=False)
    tracking.configure_trackers(["wandb", "mlflow"], tmp_path)
    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_ERROR_REPORTING"] == "false"
    assert os.environ["MLFLOW_TRACKING_URI"] == (tmp_path / "mlruns").resolve().as_uri()
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true" and os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"


def test_exported_settings_win(monkeypatch, tmp_path):
    monkeypatch.setattr(tracking, "_ours", {})
    for name in ("WANDB_MODE", "WANDB_DIR", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    tracking.configure_trackers(["wandb", "mlflow"], tmp_path)
    assert os.environ["WANDB_MODE"] == "online" and os.environ["WANDB_DIR"] == str(tmp_path)
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///elsewhere.db"
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # the file store opt-in is only for our own store


def test_a_failed_training_closes_the_tracker_run(monkeypatch, tmp_path):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.tracking.MlflowClient(uri).create_experiment("failing")
        run_id = mlflow.start_run(experiment_id=experiment).info.run_id
        tracking.close_after_failure()
        assert mlflow.active_run() is None
        assert mlflow.tracking.MlflowClient(uri).get_run(run_id).info.status == "FAILED"
    finally:
        mlflow.set_tracking_uri(None)
