"""Tiny DeepSeek-V3.2 and V4 models train end to end through seektune.train (routing profile, top_k_used experts,
held-out samples generated with the model's own cache) and reload to identical logits. V4 runs eager, unpacked."""

from __future__ import annotations

import json
import math

import pytest
import torch

import seektune
from seektune.config import TrainSection
from seektune.training.speed import decide
from tests.conftest import shared, template_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


def config(kind: str, tok):
    from transformers import DeepseekV4Config, DeepseekV32Config

    common = dict(vocab_size=len(tok), hidden_size=64, moe_intermediate_size=32, num_hidden_layers=3,
                  num_attention_heads=4, n_routed_experts=8, num_experts_per_tok=2, index_n_heads=2, index_head_dim=16,
                  q_lora_rank=32, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if kind == "v32":
        return DeepseekV32Config(intermediate_size=96, num_key_value_heads=4, n_shared_experts=1, n_group=2,
                                 topk_group=1, first_k_dense_replace=1, kv_lora_rank=16, qk_rope_head_dim=8,
                                 qk_nope_head_dim=8, v_head_dim=8, index_topk=16, **common)
    return DeepseekV4Config(num_key_value_heads=1, head_dim=16, partial_rotary_factor=0.5, o_groups=2, o_lora_rank=16,
                            index_topk=4, sliding_window=16, hc_mult=2, hc_sinkhorn_iters=3,
                            compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 16},
                            layer_types=["sliding_attention", "compressed_sparse_attention",
                                         "heavily_compressed_attention"],
                            mlp_layer_types=["hash_moe", "moe", "moe"], **common)


@pytest.fixture(scope="module", params=["v32", "v4"])
def run(request, tmp_path_factory, smol_dir):
    from transformers import AutoModelForCausalLM

    kind = request.param
    tok = template_tokenizer(smol_dir, "deepseek_v3")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config(kind, tok))
    gate = getattr(model.model.layers[0].mlp, "gate", None)
    if hasattr(gate, "tid2eid"):  # V4 hash routing: a real token -> experts table instead of all zeros
        t = torch.arange(len(tok))
        with torch.no_grad():
            gate.tid2eid.copy_(torch.stack([t % 8, (t + 3) % 8], dim=1))
    d = tmp_path_factory.mktemp("models") / f"tiny-deepseek-{kind}"
    model.save_pretrained(str(d))
    tok.save_pretrained(str(d))
    out = tmp_path_factory.mktemp("runs") / kind
    result = seektune.train({
        "model": {"source": str(d)},
        "data": {"datasets": [{"path": str(shared("identity/identity.json")), "max_records": 24}], "max_length": 128,
                 "holdout_prompts": 1},
        "lora": {"targets": ["attention", "shared-experts", "experts"], "experts": {"top_k_used": 2}, "dropout": 0.0},
        "train": {"max_steps": 4, "per_device_batch_size": 4, "learning_rate": 1e-2, "sample_max_new_tokens": 4,
                  "save_steps": 100},
        "output": str(out),
    })
    return kind, result


def test_trains_and_reloads(run):
    kind, result = run
    assert result.complete
    losses = [m["loss"] for m in result.step_metrics]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses
    profile = json.loads((result.path / "routing_profile.json").read_text())
    moe = [1, 2] if kind == "v32" else [0, 1, 2]
    assert sorted(profile["counts"]) == [f"model.layers.{i}.mlp" for i in moe]
    assert all(len(ids) == 2 for ids in profile["chosen"].values())
    lora = {n.split("model.layers.", 1)[1] for n, m in result.model.named_modules() if hasattr(m, "lora_A")}
    assert not [n for n in lora if ".indexer." in n or "o_a_proj" in n or ".mlp.gate" in n]
    assert {f"{i}.mlp.experts" for i in moe} <= lora and f"{moe[0]}.mlp.shared_experts.up_proj" in lora
    loaded = seektune.load(result.path)
    ids = loaded.tokenizer("Who are you? Tell me about yourself.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(result.model.eval()(input_ids=ids).logits, loaded.model(input_ids=ids).logits)
    assert (result.path / "samples.md").is_file()


def test_v4_speed_switches(smol_dir):
    from transformers import AutoTokenizer

    cfg = config("v4", AutoTokenizer.from_pretrained(str(smol_dir)))
    gpu = decide(TrainSection(), cfg, "cuda")
    assert (gpu.packing, gpu.attention) == (False, "eager") and any("DeepSeek-V4" in n for n in gpu.notes)
    with pytest.raises(ValueError, match="eager attention only"):
        decide(TrainSection(attention="sdpa"), cfg, "cpu")
    with pytest.raises(ValueError, match="packed"):
        decide(TrainSection(packing=True), cfg, "cuda")
    assert decide(TrainSection(), config("v32", AutoTokenizer.from_pretrained(str(smol_dir))), "cpu").attention == "sdpa"
