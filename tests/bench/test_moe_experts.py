"""bench/moe_experts.py runs (tiny shapes, CPU) for every expert kernel; the training path keeps experts grouped."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from rich.console import Console

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


def load_bench():
    spec = importlib.util.spec_from_file_location("moe_experts_bench", ROOT / "bench" / "moe_experts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_runs_every_implementation(tmp_path, monkeypatch):
    bench = load_bench()
    monkeypatch.setenv("OUT", str(tmp_path))
    rows = bench.main(["--shape", "tiny-v3", "--device", "cpu", "--batch", "1", "--seq", "16", "--steps", "1",
                       "--warmup", "0", "--impls", "eager,grouped_mm,batched_mm"])
    assert [(r["targets"], r["experts_implementation"]) for r in rows] == [
        (t, i) for t in ("default", "experts") for i in ("eager", "grouped_mm", "batched_mm")
    ]
    assert all("error" not in r and r["tokens_per_s"] > 0 for r in rows), rows
    assert rows[3]["trainable"] > rows[0]["trainable"]  # the experts rows carry expert LoRA too
    assert (tmp_path / "moe_experts.json").is_file()


def test_training_path_uses_grouped_experts():
    from seektune.training.moe import use_grouped_experts

    bench = load_bench()
    model = bench.build("tiny-v3", "cpu", torch.float32)
    bench.set_implementation(model, "eager")
    assert use_grouped_experts(model, None, Console(file=None, quiet=True)) == "grouped_mm"
    experts = model.model.layers[1].mlp.experts
    assert experts.config._experts_implementation == "grouped_mm"
    assert use_grouped_experts(model, "eager", Console(quiet=True)) == "eager"  # asked for explicitly


def test_v2_lite_shape_matches_the_real_model():
    bench = load_bench()
    model = bench.build("v2-lite", "meta", torch.bfloat16)  # no memory: shapes only
    assert type(model).__name__ == "DeepseekV2ForCausalLM"
    assert 15.6e9 < sum(p.numel() for p in model.parameters()) < 15.8e9  # DeepSeek-V2-Lite: 15.7B parameters
    moe = model.model.layers[1].mlp
    assert moe.experts.gate_up_proj.shape == (64, 2 * 1408, 2048) and moe.gate.top_k == 6
    assert model.model.layers[0].self_attn.q_proj.out_features == 16 * 192  # q_lora_rank None: plain q_proj
