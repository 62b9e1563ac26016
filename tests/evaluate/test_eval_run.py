"""`seektune eval RUN --base`: one tiny real run (tracked by TensorBoard and offline SwanLab) against its
base model on held-out AdvertiseGen records: one table, JSON + Markdown, answers kept; the loss equals
transformers' own loss on the same labels."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import seektune
from seektune.cli import main as cli_main
from seektune.config import load_config
from seektune.evaluate.loss import assistant_loss
from tests.conftest import shared

COLUMNS = {"prompt": "content", "response": "summary"}


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, one_thread):  # one_thread: tests/conftest.py, restored after the module
    d = tmp_path_factory.mktemp("evalrun")
    lines = shared("advertisegen/dev.json").read_text(encoding="utf-8").splitlines()
    (d / "train.jsonl").write_text("\n".join(lines[:32]) + "\n", encoding="utf-8")
    (d / "heldout.jsonl").write_text("\n".join(lines[-4:]) + "\n", encoding="utf-8")
    cfg = load_config(overrides={
        "output": str(d / "run"),
        "data.datasets": [{"path": str(d / "train.jsonl"), "columns": COLUMNS}],
    }, sets=["data.max_length=160", "data.holdout_prompts=0", "train.max_steps=6", "train.per_device_batch_size=4",
             "train.learning_rate=2e-3", "train.save_steps=100", "lora.dropout=0",
             "train.report_to=[tensorboard, swanlab]"])
    return seektune.train(cfg), d


def test_trackers_write_inside_the_run_folder(tracked_run):
    run, _ = tracked_run
    assert list((run.path / "tensorboard").glob("events.out.tfevents.*"))
    logs = list((run.path / "swanlog").glob("run-*/run-*.swanlab"))
    assert len(logs) == 1, list((run.path / "swanlog").rglob("*"))
    assert b"train/loss" in logs[0].read_bytes()  # the Trainer's metrics reached SwanLab's offline log
    # seektune's system details and config reached both trackers (training/tracking.py RunDetails)
    swan_config = yaml.safe_load(next((run.path / "swanlog").glob("run-*/files/config.yaml")).read_text())
    assert swan_config["seektune"]["value"]["system"]["torch"] == torch.__version__
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run.path / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    text = json.loads(events.Tensors("seektune/text_summary")[0].tensor_proto.string_val[0])
    assert text["system"]["torch"] == torch.__version__ and text["config"]["lora"]["r"] == run.config.lora.r
    info = json.loads((run.path / "run.json").read_text())
    assert info["peak_memory_bytes"] > 50 * 2**20 and info["system_details"]["cpu_count"] >= 1
    assert info["system"]["torch"] == torch.__version__


def test_eval_table_base_vs_tuned(tracked_run, capsys):
    run, d = tracked_run
    out = d / "eval"
    cli_main(["eval", str(run.path), "--base", "--data", str(d / "heldout.jsonl"), "--column", "prompt=content",
              "--column", "response=summary", "--max-new-tokens", "8", "--batch-size", "4", "-o", str(out)])
    printed = capsys.readouterr().out
    assert "rouge-l" in printed and "eval_loss" in printed  # the table on the console
    report = json.loads((out / "eval.json").read_text())
    labels = [m["label"] for m in report["models"]]
    assert labels == ["base: embedded SmolLM2-135M-Instruct", run.path.name]
    base, tuned = (r["metrics"] for r in report["results"])
    for m in (base, tuned):
        assert m["n"] == 4 and m["supervised_tokens"] > 0 and m["samples_truncated"] >= 0
        assert {"rouge-1", "rouge-2", "rouge-l", "bleu-4", "eval_loss", "perplexity"} <= set(m)
        assert m["perplexity"] == pytest.approx(2.718281828 ** m["eval_loss"], rel=1e-3)
    assert tuned["eval_loss"] < base["eval_loss"]  # 6 steps already teach the format of unseen records
    answers = {a["model"]: a["rows"] for a in report["answers"]}
    assert all(len(rows) == 4 and all(isinstance(r["answer"], str) for r in rows) for rows in answers.values())
    md = (out / "eval.md").read_text()
    assert "| base: embedded SmolLM2-135M-Instruct |" in md and f"| {run.path.name} |" in md and "reference:" in md


def test_assistant_loss_equals_transformers_loss(tracked_run):
    run, d = tracked_run
    loaded = seektune.load(run.path)
    from seektune.evaluate.tasks import load_eval_data

    conv = load_eval_data(str(d / "heldout.jsonl"), columns=COLUMNS, max_records=1).conversations[0]
    ours = assistant_loss(loaded.model, loaded.renderer, [conv])
    enc = loaded.renderer.encode(conv)
    with torch.no_grad():
        ref = loaded.model(input_ids=torch.tensor([enc.input_ids]), labels=torch.tensor([enc.labels])).loss.item()
    assert ours["eval_loss"] == pytest.approx(ref, rel=1e-4)
    assert ours["supervised_tokens"] == enc.n_supervised - 0  # every label after the first position


def test_eval_errors_are_clear(tracked_run, capsys):
    run, d = tracked_run
    with pytest.raises(SystemExit) as e:
        cli_main(["eval", str(run.path), "--data", str(d / "missing.jsonl")])
    assert e.value.code == 2 and "missing.jsonl" in capsys.readouterr().out
