"""Target groups on tiny DeepSeek-V2 (MLA without q_lora_rank) and V3 (with q_lora_rank) models: a dense first
layer, shared + routed (fused) experts, a top-k router. Each group attaches exactly the modules it names; the router
stays frozen unless asked; a few steps lower the loss; the adapter saves, reloads and merges to the same logits."""

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

L = 3  # layer 0 dense, 1 and 2 MoE
MOE = (1, 2)


def tiny(kind: str):
    from transformers import AutoModelForCausalLM, DeepseekV2Config, DeepseekV3Config

    common = dict(
        vocab_size=128, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=L,
        num_attention_heads=2, num_key_value_heads=2, n_shared_experts=2, n_routed_experts=8, num_experts_per_tok=2,
        first_k_dense_replace=1, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8,
        max_position_embeddings=128,
    )
    if kind == "v2":
        cfg = DeepseekV2Config(q_lora_rank=None, **common)
    else:
        cfg = DeepseekV3Config(q_lora_rank=16, n_group=2, topk_group=1, **common)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


def expected(kind: str, group: str) -> list[str]:
    q = ["q_proj"] if kind == "v2" else ["q_a_proj", "q_b_proj"]
    mlp = ["gate_proj", "up_proj", "down_proj"]
    names = {
        "attention": [f"model.layers.{i}.self_attn.{p}" for i in range(L) for p in q + ["kv_a_proj_with_mqa", "kv_b_proj", "o_proj"]],
        "dense-mlp": [f"model.layers.0.mlp.{p}" for p in mlp],
        "shared-experts": [f"model.layers.{i}.mlp.shared_experts.{p}" for i in MOE for p in mlp],
        "experts": [f"model.layers.{i}.mlp.experts:{p}" for i in MOE for p in ("gate_up_proj", "down_proj")],
        "router": [f"model.layers.{i}.mlp.gate:weight" for i in MOE],
    }
    return sorted(names[group])


@pytest.mark.parametrize("kind", ["v2", "v3"])
def test_each_group_attaches_exactly_its_modules(kind):
    groups = ["attention", "dense-mlp", "shared-experts", "experts", "router"]
    members = group_members(tiny(kind))
    assert {g: sorted(n) for g, n in members.items()} == {g: expected(kind, g) for g in groups}
    for g in groups:
        peft_model = attach_lora(tiny(kind), LoraSection(targets=g, r=4, dropout=0.0))
        assert adapted_names(peft_model) == expected(kind, g), g
        router_trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad and ".mlp.gate." in n]
        assert bool(router_trainable) == (g == "router"), (g, router_trainable)
    # default = attention + dense MLP + shared experts; combinations are lists of group names
    default = attach_lora(tiny(kind), LoraSection())
    assert adapted_names(default) == sorted(expected(kind, "attention") + expected(kind, "dense-mlp") + expected(kind, "shared-experts"))
    combo = attach_lora(tiny(kind), LoraSection(targets=["attention", "experts"], dropout=0.0))
    assert adapted_names(combo) == sorted(expected(kind, "attention") + expected(kind, "experts"))


def test_all_linear_warns_what_it_leaves_out(capsys):
    from rich.console import Console

    from seektune.adapters.report import build_report, render_report

    peft_model = attach_lora(tiny("v3"), LoraSection(targets="all-linear"))
    names = adapted_names(peft_model)
    assert not [n for n in names if ".experts" in n or n.startswith("mlp.gate:") or ".mlp.gate:" in n]  # nn.Linear only
    rep = build_report(peft_model)
    [warning] = [w for w in rep.warnings if "all-linear" in w]
    assert "attention, dense-mlp, shared-experts" in warning and "leaves out experts and router" in warning
    render_report(rep, Console(width=200))
    assert "leaves out experts and router" in capsys.readouterr().out


def test_expert_rank_and_config_errors():
    peft_model = attach_lora(tiny("v3"), LoraSection(targets="experts", r=16, dropout=0.0))
    wrapper = peft_model.base_model.model.model.layers[1].mlp.experts
    assert wrapper.r["default"] == 16 // 8 and wrapper.num_experts == 8
    assert wrapper.scaling["default"] == pytest.approx(32 / 16)  # same alpha / r scaling as the other targets
    sub = attach_lora(tiny("v3"), LoraSection(targets="experts", r=16, dropout=0.0, experts=[1, 6]))
    assert sub.base_model.model.model.layers[1].mlp.experts.r["default"] == 16 // 2
    custom = attach_lora(tiny("v3"), LoraSection(targets="experts", r=16, dropout=0.0, expert_r=3))
    assert custom.base_model.model.model.layers[2].mlp.experts.r["default"] == 3
    with pytest.raises(Exception, match="dropout"):
        attach_lora(tiny("v3"), LoraSection(targets="experts", dropout=0.1))
    with pytest.raises(ConfigError, match="out of range"):
        attach_lora(tiny("v3"), LoraSection(targets="experts", dropout=0.0, experts=[8]))
    with pytest.raises(ConfigError, match="routing profile"):
        attach_lora(tiny("v3"), LoraSection(targets="experts", dropout=0.0, experts={"top_k_used": 2}))
    with pytest.raises(ConfigError, match="no `experts` group"):
        attach_lora(tiny("v3"), LoraSection(targets="attention", experts=[1]))
    with pytest.raises(ConfigError, match="mixes group names"):
        attach_lora(tiny("v3"), LoraSection(targets=["attention", "o_proj"]))


def base_with_bias(kind: str):
    model = tiny(kind)
    if kind == "v3":  # a non-zero correction bias, to see that training leaves it alone
        for layer in MOE:
            model.model.layers[layer].mlp.gate.e_score_correction_bias.copy_(torch.linspace(-0.1, 0.1, 8))
    return model


# ---- training: a few steps on a fixed batch, save, reload, merge ---------------------------------------
EVERYTHING = ["attention", "dense-mlp", "shared-experts", "experts", "router"]


@pytest.fixture(scope="module", params=["v2", "v3"])
def trained(request, tmp_path_factory):
    kind = request.param
    lora = LoraSection(targets=EVERYTHING, r=8, dropout=0.0, experts=[1, 6])
    run = train_and_save(base_with_bias(kind), lora, tmp_path_factory.mktemp(f"adapter-{kind}"),
                         ("e_score_correction_bias",))
    return dict(run, kind=kind)


def test_training_lowers_loss(trained):
    assert_loss_fell(trained["losses"])


def test_router_bias_and_base_router_untouched(trained):
    model = trained["model"]
    for n, b in model.named_buffers():
        if "e_score_correction_bias" in n:
            assert torch.equal(b, trained["buffers_before"][base_name(n)]), n
    for n, p in model.named_parameters():
        if n.endswith("mlp.gate.weight") or ".mlp.gate.parametrizations" in n:
            assert torch.equal(p.detach(), trained["router_before"][base_name(n)]), n
    from safetensors import safe_open

    with safe_open(str(trained["dir"] / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if "correction_bias" in k]
    assert any("mlp.gate.lora_A" in k for k in keys) and any("mlp.experts.lora_B" in k for k in keys)


def test_unchosen_experts_stay_zero(trained):
    from seektune.adapters.experts import expert_masks

    model = trained["model"]
    layer = model.base_model.model.model.layers[1].mlp.experts
    for wrapper in (layer, layer.base_layer):  # down_proj outside, gate_up_proj nested inside
        a_keep, b_keep = expert_masks(wrapper, [1, 6])
        wa, wb = wrapper.lora_A["default"].weight, wrapper.lora_B["default"].weight
        assert torch.count_nonzero(wa[~a_keep]) == 0 and torch.count_nonzero(wb[:, ~b_keep]) == 0
        assert torch.count_nonzero(wb[:, b_keep]) > 0  # the chosen experts did learn
        delta = wrapper.get_delta_weight("default")
        changed = [e for e in range(8) if delta[e].abs().max() > 0]  # an expert no token reached learns nothing
        assert changed and set(changed) <= {1, 6}, (wrapper.parameter_name, changed)


def test_reload_and_merge_give_adapter_logits(trained):
    assert_reload_and_merge_match(trained, base_with_bias(trained["kind"]), tiny(trained["kind"]))


def test_inspect_shows_target_groups():
    from rich.console import Console

    from seektune.models.inspect import inspect_model, render_inspection

    console = Console(record=True, width=200)
    ins = inspect_model(tiny("v2"), LoraSection(targets=["attention", "experts"], dropout=0.0))
    render_inspection(ins, console)
    out = console.export_text()
    for group in ("attention", "dense-mlp", "shared-experts", "experts", "router"):
        assert f"  {group}\n" in out, group
    assert "model.layers.*.self_attn.q_proj  ×3" in out and "model.layers.*.mlp.experts:gate_up_proj  ×2" in out
    assert "q_a_proj" not in out  # V2 here has no q_lora_rank: only the projections that exist are listed
    assert ins.lora_targets and any("experts" in t for t in ins.lora_targets)


def test_separate_linear_experts_by_module_name():
    """Remote-code-style MoE layers keep each expert as its own MLP (nn.Linear): chosen experts by module name."""
    from torch import nn
    from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2MLP

    model = tiny("v2")
    for i in MOE:
        mlp = model.model.layers[i].mlp
        mlp.experts = nn.ModuleList(DeepseekV2MLP(model.config, intermediate_size=16) for _ in range(8))
    peft_model = attach_lora(model, LoraSection(targets="experts", r=8, experts=[1, 3], dropout=0.05))
    assert adapted_names(peft_model) == sorted(
        f"model.layers.{i}.mlp.experts.{e}.{p}" for i in MOE for e in (1, 3) for p in ("gate_proj", "up_proj", "down_proj")
    )
    assert peft_model.base_model.model.model.layers[2].mlp.experts[3].up_proj.r["default"] == 8 // 2
    assert peft_model.peft_config["default"].lora_dropout == 0.05  # plain Linear LoRA keeps its dropout
