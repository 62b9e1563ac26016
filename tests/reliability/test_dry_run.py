"""`seektune train --dry-run`: config, every record, template, mask coverage, LoRA targets (meta device) and a
memory estimate, all problems reported at once, exit 2 if any; a summary when all is well. No weights loaded."""

from __future__ import annotations

import shutil

import pytest

from tests.processes import run_cli
from tests.reliability.conftest import alpaca_records, write_json


@pytest.fixture(scope="module")
def good_data(tmp_path_factory):
    return write_json(tmp_path_factory.mktemp("dry") / "good.json", alpaca_records(10))


@pytest.fixture(scope="module")
def weightless_model(tiny_llama, tmp_path_factory):
    """The tiny model's folder with its weights file replaced by garbage: only config and tokenizer are usable."""
    d = tmp_path_factory.mktemp("dry") / "no-weights"
    shutil.copytree(tiny_llama, d)
    (d / "model.safetensors").write_bytes(b"\x00garbage, not a safetensors file")
    return d


def test_all_well_prints_a_summary_and_writes_nothing(tmp_path, weightless_model, good_data, capsys):
    out = tmp_path / "run"
    code, text = run_cli(capsys, "train", "--model", weightless_model, "--data", good_data, "--output", out, "--dry-run")
    assert code == 0, text
    assert "dry run: no weights are loaded" in text
    assert "LoRA r=16 on 'default': " in text and "trainable of" in text
    assert "estimated memory:" in text and "of RAM" in text
    assert "good.json [alpaca]: 10 read" in text and "supervised" in text
    assert "dry run: all checks passed -- 7 training samples" in text
    assert not out.exists() and not out.with_name("run.incomplete").exists()


def test_a_real_run_of_the_same_folder_fails_at_loading_the_weights(tmp_path, weightless_model, good_data, capsys):
    # The proof that the dry run above never read the weights.
    code, text = run_cli(capsys, "train", "--model", weightless_model, "--data", good_data, "--output", tmp_path / "r")
    assert code == 2 and "weights file is damaged or truncated" in text and "Traceback" not in text, text


def test_every_problem_is_reported_at_once(tmp_path, tiny_llama, capsys):
    recs = alpaca_records(8)
    recs[1] = {"instruction": "no answer"}
    recs[4] = {"instruction": "x", "output": ""}
    bad = write_json(tmp_path / "bad.json", recs)
    missing = tmp_path / "missing.jsonl"
    code, text = run_cli(
        capsys, "train", "--model", tiny_llama, "--data", bad, "--data", missing, "--output", tmp_path / "o",
        "--dry-run", "--set", "lora.targets=[nope_proj]", "--set", "train.precision=fp16",
        "--set", "train.per_device_batch_size=100000",
    )
    assert code == 2, text
    expected = [
        "problem(s) found before training; nothing was trained",
        "train.precision=fp16 needs a CUDA GPU",
        "record 1 field `output`: missing",
        "record 4 field `output`: is empty",
        "2 bad record(s) of 8", "--skip-bad-records",
        "missing.jsonl: file not found",
        "lora.targets=['nope_proj'] matched no module",
    ]
    for words in expected:
        assert words in text, (words, text)
    assert "Traceback" not in text and not (tmp_path / "o.incomplete").exists()


def test_memory_and_mask_coverage_problems(tmp_path, tiny_llama, capsys):
    data = write_json(tmp_path / "d.json", alpaca_records(6))
    code, text = run_cli(
        capsys, "train", "--model", tiny_llama, "--data", data, "--output", tmp_path / "o", "--dry-run",
        "--set", "data.max_length=9", "--set", "data.holdout_prompts=0",
        "--set", "train.per_device_batch_size=20000000",
    )
    assert code == 2, text
    assert "no token carries a loss (supervised fraction 0)" in text and "data.max_length" in text
    assert "more than there is" in text
    for setting in ("train.per_device_batch_size", "train.gradient_accumulation", "train.gradient_checkpointing=true",
                    "data.max_length", "4-bit"):
        assert setting in text, (setting, text)


def test_every_run_starts_with_the_same_checks(tmp_path, tiny_llama, capsys):
    recs = alpaca_records(6)
    recs[2] = {"instruction": "x"}
    recs[3] = {"instruction": "y"}
    data = write_json(tmp_path / "d.json", recs)
    code, text = run_cli(capsys, "train", "--model", tiny_llama, "--data", data, "--output", tmp_path / "o",
                      "--set", "lora.targets=[nope_proj]")
    assert code == 2, text
    assert "record 2 field `output`" in text and "record 3 field `output`" in text and "nope_proj" in text
    assert "Loading weights" not in text
    assert not (tmp_path / "o.incomplete").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_qlora_without_a_gpu_is_refused_before_loading(tmp_path, weightless_model, good_data, capsys):
    out = tmp_path / "run"
    code, text = run_cli(capsys, "train", "--model", weightless_model, "--data", good_data, "--output", out,
                      "--dry-run", "--set", "model.load_in=4bit")
    assert code == 2, text
    assert "model.load_in=4bit (QLoRA) needs a CUDA GPU" in text and "remove model.load_in" in text
    assert not out.exists()
    code, text = run_cli(capsys, "train", "--model", weightless_model, "--data", good_data, "--output", out,
                      "--dry-run", "--set", "model.load_in=3bit")
    assert code == 2 and "model.load_in" in text and "4bit" in text, text


def test_memory_estimate_counts_quantized_weights(tiny_llama):
    from transformers import AutoConfig

    from seektune.config import RunConfig
    from seektune.training.preflight import estimate_memory

    cfg = AutoConfig.from_pretrained(tiny_llama)
    full = estimate_memory(RunConfig(), cfg, 1_000_000, 1000, 64)
    four = estimate_memory(RunConfig.model_validate({"model": {"load_in": "4bit"}}), cfg, 1_000_000, 1000, 64)
    assert four.weights < full.weights / 4  # fp32 on CPU: 4 bytes per weight vs ~0.6
    assert (four.activations, four.logits) == (full.activations, full.logits)


def test_memory_estimate_follows_the_speed_switches(tiny_llama):
    """The fused loss never holds the vocabulary-wide logits; offloaded checkpoints move the layer inputs to pinned
    CPU memory, which the estimate then counts against RAM."""
    import dataclasses

    from transformers import AutoConfig

    from seektune.config import RunConfig
    from seektune.training.preflight import estimate_memory
    from seektune.training.speed import decide

    cfg = AutoConfig.from_pretrained(tiny_llama)
    run = RunConfig.model_validate({"train": {"gradient_checkpointing": True, "per_device_batch_size": 4}})
    plain = estimate_memory(run, cfg, 1_000_000, 1000, 512)
    gpu = decide(run.train, cfg, "cuda")  # what a GPU would run: offload on (and fused loss where Liger is installed)
    assert gpu.offload_checkpoints
    fast = estimate_memory(run, cfg, 1_000_000, 1000, 512, gpu)
    layers, tokens, width = cfg.num_hidden_layers, 4 * 512, cfg.hidden_size * 4  # fp32 on CPU
    assert fast.host == tokens * layers * width
    assert plain.activations - fast.activations == tokens * (layers - 2) * width
    assert "pinned CPU memory" in fast.line() and "pinned" not in plain.line()
    unfused = dataclasses.replace(gpu, fused_loss=False)
    assert estimate_memory(run, cfg, 1_000_000, 1000, 512, unfused).logits == plain.logits
    fused = estimate_memory(run, cfg, 1_000_000, 1000, 512, dataclasses.replace(gpu, fused_loss=True))
    assert fused.logits == tokens * (cfg.hidden_size * 8 + width) < plain.logits / 10


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_only_speed_switches_are_refused_before_loading(tmp_path, weightless_model, good_data, capsys):
    for setting, says in (("train.fused_loss=true", "train.fused_loss=true needs a CUDA GPU and liger-kernel"),
                          ("train.attention=seektune_varlen", "train.attention=seektune_varlen needs train.packing on")):
        # no --dry-run: the check comes before the (unreadable) weights are loaded
        code, text = run_cli(capsys, "train", "--model", weightless_model, "--data", good_data,
                             "--output", tmp_path / "o", "--set", setting)
        assert code == 2, text
        assert says in text, text
        assert "weights file is damaged" not in text, text  # refused before the weights were read
