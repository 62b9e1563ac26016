"""Target groups on tiny DeepSeek-V3.2 (MLA + a sparse-attention indexer) and DeepSeek-V4 (shared-KV MQA with a
grouped output projection, KV compressors, hash-routed then top-k-routed MoE in every layer) built from transformers'
own config classes. Same promises as for V2/V3: each group attaches exactly the modules it names (never the indexer),
the router stays frozen unless asked, a few steps lower the loss, the adapter reloads and merges to the same logits.
Both run on CPU (eager / sdpa attention, the indexer's top-k folded into a mask; grouped_mm experts)."""

from __future__ import annotations

import pytest
import torch

from seektune.adapters.lora import attach_lora
from seektune.adapters.targets import adapted_names, group_members
from seektune.config import LoraSection
from seektune.errors import ConfigError
from tests.adapters.lora_steps import (
    assert_loss_fell, assert_reload_and_merge_match, base_name, train_and_save,
)

L = 3
MLP = ("gate_proj", "up_proj", "down_proj")


def tiny(kind: str):
    from transformers import AutoModelForCausalLM, DeepseekV4Config, DeepseekV32Config

    common = dict(vocab_size=128, hidden_size=32, moe_intermediate_size=16, num_hidden_layers=L, num_attention_heads=2,
                  n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=2, max_position_embeddings=128,
                  index_n_heads=2, index_head_dim=16)
    if kind == "v32":  # layer 0 dense, 1-2 MoE; index_topk < sequence length so the indexer really drops tokens
        cfg = DeepseekV32Config(intermediate_size=48, first_k_dense_replace=1, num_key_value_heads=2, kv_lora_rank=16,
                                q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, n_group=2,
                                topk_group=1, index_topk=8, **common)
    else:  # one layer of each attention type; layer 0 hash-routed MoE, 1-2 top-k MoE
        cfg = DeepseekV4Config(num_key_value_heads=1, head_dim=16, q_lora_rank=16, partial_rotary_factor=0.5,
                               o_groups=2, o_lora_rank=8, index_topk=2, sliding_window=8, hc_mult=2, hc_sinkhorn_iters=3,
                               compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
                               layer_types=["sliding_attention", "compressed_sparse_attention",
                                            "heavily_compressed_attention"],
                               mlp_layer_types=["hash_moe", "moe", "moe"], **common)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for layer in model.model.layers:
            gate = getattr(layer.mlp, "gate", None)
            if hasattr(gate, "tid2eid"):  # a real hash table: token t -> experts (t, t + 3) mod 8, not all zeros
                t = torch.arange(128)
                gate.tid2eid.copy_(torch.stack([t % 8, (t + 3) % 8], dim=1))
            if hasattr(gate, "e_score_correction_bias"):  # non-zero, to see that training leaves it alone
                gate.e_score_correction_bias.copy_(torch.linspace(-0.1, 0.1, 8))
    return model


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


def moe_layers(kind):
    return (1, 2) if kind == "v32" else (0, 1, 2)


def expected(kind: str, group: str) -> list[str]:
    moe = moe_layers(kind)
    if kind == "v32":
        attn = ["q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"]
        attention = [f"model.layers.{i}.self_attn.{p}" for i in range(L) for p in attn]
    else:  # layer 0 sliding only; 1 (CSA) and 2 (HCA) have a KV compressor
        attention = [f"model.layers.{i}.self_attn.{p}" for i in range(L) for p in ("q_a_proj", "q_b_proj", "kv_proj", "o_b_proj")]
        attention += [f"model.layers.{i}.self_attn.compressor.{p}" for i in (1, 2) for p in ("kv_proj", "gate_proj")]
    names = {
        "attention": attention,
        "dense-mlp": [f"model.layers.0.mlp.{p}" for p in MLP] if kind == "v32" else [],
        "shared-experts": [f"model.layers.{i}.mlp.shared_experts.{p}" for i in moe for p in MLP],
        "experts": [f"model.layers.{i}.mlp.experts:{p}" for i in moe for p in ("gate_up_proj", "down_proj")],
        "router": [f"model.layers.{i}.mlp.gate:weight" for i in moe],
    }
    return sorted(names[group])


def groups_of(kind):
    return ["attention", "dense-mlp", "shared-experts", "experts", "router"] if kind == "v32" else \
        ["attention", "shared-experts", "experts", "router"]


@pytest.mark.parametrize("kind", ["v32", "v4"])
def test_each_group_attaches_exactly_its_modules(kind):
    groups = groups_of(kind)
    members = group_members(tiny(kind))
    assert {g: sorted(n) for g, n in members.items()} == {g: expected(kind, g) for g in groups}
    for g in groups:
        peft_model = attach_lora(tiny(kind), LoraSection(targets=g, r=4, dropout=0.0))
        assert adapted_names(peft_model) == expected(kind, g), g
        assert not [n for n in adapted_names(peft_model) if ".indexer." in n or n.endswith("o_a_proj")]
        router_trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad and ".mlp.gate." in n]
        assert bool(router_trainable) == (g == "router"), (g, router_trainable)
    default = attach_lora(tiny(kind), LoraSection())
    assert adapted_names(default) == sorted(expected(kind, "attention") + expected(kind, "dense-mlp")
                                            + expected(kind, "shared-experts"))
    if kind == "v4":
        with pytest.raises(ConfigError, match="no dense MLP layers"):
            attach_lora(tiny(kind), LoraSection(targets=["attention", "dense-mlp"]))


@pytest.mark.parametrize("kind", ["v32", "v4"])
def test_all_linear_runs_and_says_what_it_adapts(kind):
    from seektune.adapters.report import build_report

    model = tiny(kind)
    peft_model = attach_lora(model, LoraSection(targets="all-linear", dropout=0.0))
    names = adapted_names(peft_model)
    assert "lm_head" not in names and not [n for n in names if ".experts" in n or ".mlp.gate:" in n]
    assert [n for n in names if ".indexer." in n]  # every plain nn.Linear, the indexer's included ...
    [warning] = [w for w in build_report(peft_model).warnings if "all-linear" in w]
    assert "indexer's LoRA gets no gradient" in warning and "leaves out experts and router" in warning
    if kind == "v4":  # ... but not V4's grouped o_a_proj, which PEFT's Linear LoRA would break (shape error)
        assert not [n for n in names if n.endswith("o_a_proj")]
        assert any("DeepseekV4GroupedLinear" in n for n in peft_model.seektune_plan.notes)
    ids = torch.randint(0, 128, (1, 16))
    loss = peft_model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad for n, p in peft_model.named_parameters() if "lora_B" in n}
    assert all(g is None or g.abs().max() == 0 for n, g in grads.items() if ".indexer." in n)
    assert any(g is not None and g.abs().max() > 0 for n, g in grads.items() if "q_b_proj" in n and ".indexer." not in n)


# ---- training: a few steps on a fixed batch, save, reload, merge ---------------------------------------
@pytest.fixture(scope="module", params=["v32", "v4"])
def trained(request, tmp_path_factory):
    kind = request.param
    lora = LoraSection(targets=groups_of(kind), r=8, dropout=0.0, experts=[1, 6])
    # The batch is 24 tokens: 3 HCA windows of 8, 6 CSA windows of 4, an 8-token indexer top-k.
    run = train_and_save(tiny(kind), lora, tmp_path_factory.mktemp(f"adapter-{kind}"),
                         ("e_score_correction_bias", "tid2eid"))
    return dict(run, kind=kind)


def test_training_lowers_loss(trained):
    assert_loss_fell(trained["losses"])


def test_router_buffers_and_base_router_untouched(trained):
    model = trained["model"]
    seen = 0
    for n, b in model.named_buffers():
        if "e_score_correction_bias" in n or "tid2eid" in n:
            assert torch.equal(b, trained["buffers_before"][base_name(n)]), n
            seen += 1
    assert seen == len(trained["buffers_before"]) > 0
    for n, p in model.named_parameters():
        if n.endswith("mlp.gate.weight") or ".mlp.gate.parametrizations" in n:
            assert torch.equal(p.detach(), trained["router_before"][base_name(n)]), n
    from safetensors import safe_open

    with safe_open(str(trained["dir"] / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if "correction_bias" in k or "tid2eid" in k or ".indexer." in k]
    assert any("mlp.gate.lora_A" in k for k in keys) and any("mlp.experts.lora_B" in k for k in keys)


def test_reload_and_merge_give_adapter_logits(trained):
    assert_reload_and_merge_match(trained, tiny(trained["kind"]), tiny(trained["kind"]))


def test_v4_routing_profile_counts_hash_and_topk_routers():
    """The routing profile hooks V4's hash router (layer 0: picks fixed by token id) and its top-k routers."""
    from rich.console import Console

    from seektune.models.routing import routing_profile
    from seektune.training.moe import use_grouped_experts

    model = tiny("v4")
    assert use_grouped_experts(model, None, Console(file=None, width=120, quiet=True)) in ("grouped_mm", "batched_mm")
    torch.manual_seed(2)
    samples = [torch.randint(0, 128, (n,)).tolist() for n in (9, 12, 16)]
    profile = routing_profile(model, samples, progress=False)
    assert sorted(profile.counts) == [f"model.layers.{i}.mlp" for i in range(L)]
    table = model.model.layers[0].mlp.gate.tid2eid
    want = torch.bincount(table[torch.tensor(sum(samples, []))].reshape(-1), minlength=8).tolist()
    assert profile.counts["model.layers.0.mlp"] == want
    assert all(sum(c) == 2 * profile.tokens for c in profile.counts.values())
    chosen = profile.top_experts(2)
    peft_model = attach_lora(model, LoraSection(targets="experts", dropout=0.0, experts={"top_k_used": 2}),
                             expert_choice=chosen)
    assert peft_model.seektune_plan.expert_subset["model.layers.0.mlp.experts"] == chosen["model.layers.0.mlp"]


def test_inspect_lists_v4_groups():
    from rich.console import Console

    from seektune.models.inspect import inspect_model, render_inspection

    console = Console(record=True, width=200)
    render_inspection(inspect_model(tiny("v4"), LoraSection()), console)
    out = console.export_text()
    for group in groups_of("v4"):
        assert f"  {group}\n" in out, group
    assert "  dense-mlp\n" not in out and "model.layers.*.self_attn.compressor.kv_proj  ×2" in out
