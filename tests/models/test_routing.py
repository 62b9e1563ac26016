"""Routing profile: a planted routing bias makes the planted experts the most picked, and `lora.experts:
{top_k_used: N}` trains exactly those through `seektune.train` (profile printed and saved, adapter report written)."""

from __future__ import annotations

import json

import pytest
import torch

import seektune
from seektune.models.routing import routing_profile
from tests.conftest import shared, template_tokenizer

PLANTED = {1: [1, 2], 2: [5, 6]}  # layer -> experts given a large correction bias (same group, so reachable)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


def tiny_v3(vocab: int, plant: bool = True, **tok_ids):
    from transformers import AutoModelForCausalLM, DeepseekV3Config

    cfg = DeepseekV3Config(
        vocab_size=vocab, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=2, n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=2,
        n_group=2, topk_group=1, first_k_dense_replace=1, q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=8,
        qk_nope_head_dim=8, v_head_dim=8, max_position_embeddings=256, **tok_ids,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    for layer, experts in (PLANTED if plant else {}).items():
        bias = model.model.layers[layer].mlp.gate.e_score_correction_bias
        bias[experts] = 5.0  # sigmoid scores are in (0, 1): +5 wins every top-k
    return model


def test_planted_bias_dominates_profile():
    model = tiny_v3(128)
    torch.manual_seed(3)
    samples = [torch.randint(0, 128, (n,)).tolist() for n in (5, 9, 17, 30)]
    prof = routing_profile(model, samples, progress=False)
    assert prof.tokens == 61 and prof.samples == 4 and prof.top_k == 2
    assert set(prof.counts) == {"model.layers.1.mlp", "model.layers.2.mlp"}
    for layer, experts in PLANTED.items():
        counts = prof.counts[f"model.layers.{layer}.mlp"]
        assert sum(counts) == 61 * 2  # every token picks top_k experts; no padding counted
        assert prof.top_experts(2)[f"model.layers.{layer}.mlp"] == experts
        assert all(counts[e] == 61 for e in experts)
    # without the plant, the same data spreads over more experts
    plain = routing_profile(tiny_v3(128, plant=False), samples, progress=False)
    assert all(len([c for c in counts if c]) > 2 for counts in plain.counts.values())


@pytest.fixture(scope="module")
def topk_run(tmp_path_factory, smol_dir):
    tok = template_tokenizer(smol_dir, "deepseek_v3")
    model = tiny_v3(len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    d = tmp_path_factory.mktemp("models") / "tiny-v3-planted"
    model.save_pretrained(str(d), safe_serialization=True)
    tok.save_pretrained(str(d))
    from rich.console import Console

    console = Console(record=True, width=200)
    run = seektune.train({
        "model": {"source": str(d)},
        "data": {"datasets": [{"path": str(shared("identity/identity.json")), "max_records": 12}], "max_length": 96,
                 "holdout_prompts": 0},
        "lora": {"targets": ["attention", "experts"], "experts": {"top_k_used": 2}, "r": 8,
                 "routing_profile_records": 6},
        "train": {"max_steps": 2, "per_device_batch_size": 4, "learning_rate": 1e-2, "save_steps": 100},
        "output": str(tmp_path_factory.mktemp("runs") / "planted"),
    }, console=console)
    return run, console.export_text()


def test_train_with_top_k_used(topk_run):
    run, out = topk_run
    assert run.complete
    profile = json.loads((run.path / "routing_profile.json").read_text())
    assert profile["samples"] == 6
    assert profile["chosen"] == {f"model.layers.{k}.mlp": v for k, v in PLANTED.items()}
    assert "routing profile" in out and "experts_implementation=grouped_mm" in out
    assert "training 2 experts per layer" in out
    report = json.loads((run.path / "adapter_report.json").read_text())
    assert set(report["groups"]) == {"attention", "experts"}
    assert report["effective"]["experts"] == report["groups"]["experts"] * 2 // 8
    assert any("seektune merge" in w for w in report["warnings"]) and "seektune merge" in out
    assert not any("dropout" in n for n in report["notes"])  # lora.dropout defaults to 0: nothing to switch off
    # the trained adapter changed the planted experts only
    layer = run.model.base_model.model.model.layers[2].mlp.experts
    delta = layer.get_delta_weight("default")
    changed = [e for e in range(8) if delta[e].abs().max() > 0]
    assert changed and set(changed) <= set(PLANTED[2])
