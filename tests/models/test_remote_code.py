"""A DeepSeek-V2 folder as DeepSeek publishes it (config.json with auto_map, modeling_deepseek.py, per-expert
weights) loads into transformers' native class without running its code, with the same logits; a remote-code-only
model type fails with what to do."""

from __future__ import annotations

import json

import pytest
import torch

from seektune.errors import ModelSourceError
from seektune.models.load import load_model
from seektune.models.source import ModelSource


@pytest.fixture(scope="module")
def remote_folder(tmp_path_factory):
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, DeepseekV2Config

    cfg = DeepseekV2Config(
        vocab_size=128, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, n_shared_experts=1, n_routed_experts=4, num_experts_per_tok=2,
        first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
        v_head_dim=8, max_position_embeddings=128,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    d = tmp_path_factory.mktemp("remote") / "deepseek-v2-remote"
    d.mkdir()
    weights = {}
    for k, v in model.state_dict().items():  # the per-expert layout of DeepSeek's own checkpoints
        if k.endswith("mlp.experts.gate_up_proj"):
            for e in range(v.shape[0]):
                gate, up = v[e].chunk(2, dim=0)
                weights[k.replace("gate_up_proj", f"{e}.gate_proj.weight")] = gate.contiguous()
                weights[k.replace("gate_up_proj", f"{e}.up_proj.weight")] = up.contiguous()
        elif k.endswith("mlp.experts.down_proj"):
            for e in range(v.shape[0]):
                weights[k.replace("down_proj", f"{e}.down_proj.weight")] = v[e].contiguous()
        else:
            weights[k] = v.contiguous()
    assert "model.layers.1.mlp.experts.3.up_proj.weight" in weights
    save_file(weights, str(d / "model.safetensors"), metadata={"format": "pt"})
    config = cfg.to_dict() | {"auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV2Config",
                                           "AutoModelForCausalLM": "modeling_deepseek.DeepseekV2ForCausalLM"}}
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")
    for f in ("modeling_deepseek.py", "configuration_deepseek.py"):  # would fail loudly if it were ever run
        (d / f).write_text("raise RuntimeError('remote code was executed')\n", encoding="utf-8")
    return d, model


@pytest.mark.parametrize("trust", [False, True])
def test_remote_code_folder_maps_to_native_class(remote_folder, trust):
    d, original = remote_folder
    loaded = load_model(ModelSource("folder", str(d), str(d)), trust_remote_code=trust)
    assert type(loaded).__name__ == "DeepseekV2ForCausalLM" and type(loaded).__module__.startswith("transformers.")
    ids = torch.randint(0, 128, (1, 12))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, original(input_ids=ids).logits)


def test_remote_code_only_type_fails_with_advice(tmp_path):
    d = tmp_path / "deepseek-vl-original"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "multi_modality", "auto_map": {
        "AutoModelForCausalLM": "modeling_vlm.MultiModalityCausalLM"}}), encoding="utf-8")
    (d / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelSourceError, match="deepseek-community/deepseek-vl-7b-chat"):
        load_model(ModelSource("folder", str(d), str(d)))


@pytest.mark.parametrize("kind", ["v32", "v4"])
def test_v32_v4_folders_with_auto_map_load_native(tmp_path, kind):
    """DeepSeek-V3.2 / V4 folders that name remote code still load into transformers' native classes, same logits."""
    from tests.adapters.test_deepseek_v32_v4 import tiny

    model = tiny(kind)
    d = tmp_path / f"deepseek-{kind}"
    model.save_pretrained(str(d))
    (d / "modeling_deepseek.py").write_text("raise RuntimeError('remote code was executed')\n", encoding="utf-8")
    cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_deepseek.DeepseekForCausalLM"}
    (d / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    loaded = load_model(ModelSource("folder", str(d), str(d)), trust_remote_code=True)
    assert type(loaded) is type(model) and type(loaded).__module__.startswith("transformers.")
    ids = torch.randint(0, 128, (1, 12))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)
