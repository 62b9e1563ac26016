"""A REAL non-finite loss: a copy of the tiny model whose input embedding of the word " zebra" is NaN, and data
where some records contain that word. Those steps are skipped (no optimizer update), counted in metrics.jsonl
and run.json with their records; too many in a row stop the run with advice, keeping the last good checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import seektune
from seektune.run_folder import Run, last_checkpoint
from seektune.training.trainer import NonFiniteTrainingError
from tests.reliability.conftest import alpaca_records, tiny_config, write_json

WORD = " zebra"


@pytest.fixture(scope="module")
def nan_model(tiny_llama, tmp_path_factory, smol_tokenizer):
    d = tmp_path_factory.mktemp("nan") / "tiny-llama-nan-zebra"
    shutil.copytree(tiny_llama, d)
    ids = smol_tokenizer(WORD, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    weights = load_file(str(d / "model.safetensors"))
    key = next(k for k in weights if k.endswith("embed_tokens.weight"))
    weights[key][ids[0]] = float("nan")
    save_file(weights, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


def _data(tmp_path, n, bad_at) -> tuple:
    recs = alpaca_records(n)
    for i in bad_at:
        recs[i]["instruction"] = f"Tell me about the{WORD} number {i}."
    return write_json(tmp_path / "data.json", recs), recs


def _skip_rows(run_dir):
    return [r for r in Run.open(run_dir).metrics if "skipped_step" in r]


def test_non_finite_steps_are_skipped_counted_and_traced_to_records(nan_model, tmp_path):
    bad_at = [2, 9, 13]
    data, recs = _data(tmp_path, 16, bad_at)
    cfg = tiny_config(nan_model, data, tmp_path / "run", max_steps=-1, epochs=1, per_device_batch_size=1,
                      save_steps=100)
    run = seektune.train(cfg)
    assert run.complete and run.info["global_step"] == 16
    assert run.info["non_finite_steps_skipped"] == len(bad_at)
    rows = _skip_rows(run.path)
    assert [r["skipped_step"] for r in rows] == ["non-finite loss"] * 3
    assert [r["skipped_steps_total"] for r in rows] == [1, 2, 3]
    named = sorted(int(r["records"][0].split("record ")[1]) for r in rows)
    assert named == bad_at and all(len(r["records"]) == 1 for r in rows)
    # the bad records' lines in the file are named too
    lines = (data.read_text()).splitlines()
    for r in rows:
        line = int(r["records"][0].split(":")[1].split()[0])
        assert WORD.strip() in lines[line] or WORD.strip() in lines[line + 1]
    # no optimizer update on those steps: AdamW counted 13 steps for every LoRA parameter
    opt = torch.load(str(run.path / "checkpoints" / "checkpoint-16" / "optimizer.pt"), weights_only=True)
    assert {int(s["step"]) for s in opt["state"].values()} == {16 - len(bad_at)}
    adapter = load_file(str(run.adapter_dir / "adapter_model.safetensors"))
    assert all(torch.isfinite(v).all() for v in adapter.values())


def test_too_many_in_a_row_stop_with_advice_and_keep_the_last_good_checkpoint(nan_model, tmp_path):
    good = {8, 9}  # with seed 42 the sampler serves records 8, 9, 6, 2, 10, ...: two good steps, then bad ones
    data, recs = _data(tmp_path, 14, [i for i in range(14) if i not in good])
    cfg = tiny_config(nan_model, data, tmp_path / "run", max_steps=14, per_device_batch_size=1, save_steps=1,
                      max_bad_steps=3, save_total_limit=None)
    with pytest.raises(NonFiniteTrainingError) as ei:
        seektune.train(cfg)
    msg = str(ei.value)
    work = tmp_path / "run.incomplete"
    rows = _skip_rows(work)
    bad_steps = [r["step"] for r in rows]
    stop = bad_steps[-1]
    assert bad_steps[-3:] == [stop - 2, stop - 1, stop] and f"stopped at step {stop}" in msg
    good_steps = [s for s in range(1, stop + 1) if s not in bad_steps]
    assert good_steps, "precondition: a good step before the stop (data order is seeded)"
    for words in ("3 steps in a row", "lower train.learning_rate", "bf16 instead of fp16", "record ", "--resume"):
        assert words in msg, (words, msg)
    info = json.loads((work / "run.json").read_text())
    assert info["status"].startswith("stopped") and info["non_finite_steps_skipped"] == len(bad_steps)
    # checkpoints exist for good steps only; the newest is the last good one, with finite weights
    saved = sorted(int(p.name.split("-")[1]) for p in (work / "checkpoints").glob("checkpoint-*"))
    assert saved == good_steps, (saved, good_steps)
    newest = last_checkpoint(work)
    assert newest.name == f"checkpoint-{good_steps[-1]}" and str(newest) in msg
    adapter = load_file(str(newest / "adapter_model.safetensors"))
    assert all(torch.isfinite(v).all() for v in adapter.values())
    assert not (work / "adapter").exists()
