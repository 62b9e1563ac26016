"""A real (tiny) DeepSeek-V3 model: MLA attention, a dense first layer, shared + routed experts, a top-k router.
Trains end to end through seektune.train and checks which modules got LoRA and that the adapter reloads."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import seektune
from tests.conftest import shared, template_tokenizer

MLA = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


@pytest.fixture(scope="module")
def tiny_v3_dir(tmp_path_factory, smol_dir):
    from transformers import AutoModelForCausalLM, DeepseekV3Config

    tok = template_tokenizer(smol_dir, "deepseek_v3")
    cfg = DeepseekV3Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=2,
        n_group=2, topk_group=1, first_k_dense_replace=1, q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8,
        qk_nope_head_dim=8, v_head_dim=8, max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    d = tmp_path_factory.mktemp("models") / "tiny-deepseek-v3"
    model.save_pretrained(str(d), safe_serialization=True)
    tok.save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def v3_run(tiny_v3_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "v3"
    return seektune.train({
        "model": {"source": str(tiny_v3_dir)},
        "data": {
            "datasets": [{"path": str(shared("identity/identity.json")), "max_records": 24}],
            "max_length": 128,
            "holdout_prompts": 1,
        },
        "train": {"max_steps": 4, "per_device_batch_size": 4, "learning_rate": 1e-2, "sample_max_new_tokens": 4,
                  "save_steps": 100},
        "output": str(out),
    })


def _lora_modules(model) -> list[str]:
    return [n for n, m in model.named_modules() if hasattr(m, "lora_A")]


def test_run_completes(v3_run):
    run = v3_run
    assert run.complete and run.path.is_dir()
    assert not run.path.with_name(run.path.name + ".incomplete").exists()
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "tokenizer/tokenizer_config.json",
                 "config.yaml", "run.json", "samples.md", "metrics.jsonl"):
        assert (run.path / name).is_file(), name
    info = json.loads((run.path / "run.json").read_text())
    assert info["status"] == "complete" and info["global_step"] == 4
    assert math.isfinite(info["train_loss"]) and info["train_loss"] > 0
    losses = [m["loss"] for m in run.step_metrics]
    assert len(losses) == 4 and all(math.isfinite(x) and x > 0 for x in losses)


def test_lora_on_attention_and_dense_mlps_only(v3_run):
    lora = _lora_modules(v3_run.model)
    suffixes = {n.split("model.layers.", 1)[1].split(".", 1)[1] for n in lora}
    expected = {f"self_attn.{p}" for p in MLA} | {f"mlp.{p}" for p in MLP} | {f"mlp.shared_experts.{p}" for p in MLP}
    assert suffixes == expected, suffixes ^ expected
    # every layer's attention; the dense MLP only in layer 0 (first_k_dense_replace=1); shared experts in 1 and 2
    for i in range(3):
        for p in MLA:
            assert any(n.endswith(f"layers.{i}.self_attn.{p}") for n in lora), (i, p)
    assert any(n.endswith("layers.0.mlp.gate_proj") for n in lora)
    assert all(any(n.endswith(f"layers.{i}.mlp.shared_experts.down_proj") for n in lora) for i in (1, 2))
    # the router and the routed experts carry no adapter
    assert not [n for n in lora if n.endswith("mlp.gate") or ".experts" in n]
    for name, param in v3_run.model.named_parameters():
        if param.requires_grad:
            assert "lora_" in name, name
            assert ".mlp.gate." not in name and ".mlp.experts." not in name, name

    from safetensors import safe_open

    with safe_open(str(v3_run.adapter_dir / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not [k for k in keys if ".mlp.experts" in k or ".mlp.gate." in k]
    assert any("kv_a_proj_with_mqa.lora_A" in k for k in keys)
    assert any("shared_experts.up_proj.lora_B" in k for k in keys)


def test_adapter_config_targets(v3_run, tiny_v3_dir):
    from transformers import AutoConfig, AutoModelForCausalLM

    acfg = json.loads((v3_run.adapter_dir / "adapter_config.json").read_text())
    assert acfg["base_model_name_or_path"]
    targets = acfg["target_modules"]
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(tiny_v3_dir)))
    names = [n for n, _ in base.named_modules()]
    if isinstance(targets, str):  # a regex, matched by PEFT against full module names
        matched = {n for n in names if re.fullmatch(targets, n)}
    else:
        matched = {n for n in names if n.split(".")[-1] in targets}
    for i in range(3):
        for p in MLA:
            assert f"model.layers.{i}.self_attn.{p}" in matched, (i, p)
    for p in MLP:
        assert f"model.layers.0.mlp.{p}" in matched
        assert f"model.layers.1.mlp.shared_experts.{p}" in matched
    assert "model.layers.1.mlp.gate" not in matched
    assert not [n for n in matched if ".mlp.experts" in n]
    assert "lm_head" not in matched


def test_reload_gives_identical_logits(v3_run):
    loaded = seektune.load(v3_run.path)
    ids = loaded.tokenizer("Who are you? Tell me about yourself.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        trained = v3_run.model.eval()(input_ids=ids).logits
        reloaded = loaded.model(input_ids=ids).logits
        with loaded.model.disable_adapter():
            base = loaded.model(input_ids=ids).logits
    assert torch.isfinite(trained).all()
    assert torch.equal(trained, reloaded)
    assert (trained - base).abs().max() > 1e-3  # the adapter changed the model
    # the reloaded LoRA sits on the same modules
    assert sorted(_lora_modules(loaded.model)) == sorted(_lora_modules(v3_run.model))
