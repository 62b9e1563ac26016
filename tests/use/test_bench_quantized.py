"""The CPU-runnable part of bench/quantized_inference.py (the GPU run measures bf16 vs 8-bit vs 4-bit)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "quantized_inference.py"


def test_bench_smoke_run_on_cpu(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("quantized_inference", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setenv("OUT", str(tmp_path))
    info = bench.main(["--tiny", "--modes", "bf16", "--prompt-tokens", "8", "--new-tokens", "8", "--batches", "1", "2"])
    row = info["rows"][0]
    assert row["mode"] == "bf16" and row["tok_s_batch1"] > 0 and row["tok_s_batch2"] > 0 and row["weights_MiB"] > 0
    assert json.loads((tmp_path / "quantized_inference.json").read_text())["shape"] == "tiny"
    assert bench.DEEPSEEK_LLM_7B["hidden_size"] == 4096 and bench.DEEPSEEK_LLM_7B["vocab_size"] == 102400
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):  # argparse error: 8bit/4bit need a GPU
            bench.main(["--tiny", "--modes", "8bit"])
