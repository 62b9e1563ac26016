"""Gradient checkpointing traced inside each compiled decoder layer: the same gradients as transformers'
checkpointing around an eager layer, only the layer inputs kept between the passes, and no graph breaks; on a
dense Llama and on a DeepSeek-V2 MoE with grouped experts."""

from __future__ import annotations

import copy

import pytest
import torch

from seektune.training.compiled_checkpoint import CheckpointedCompiledLayer
from seektune.training.lora_fused import fuse_lora_linears, fuse_lora_mlps
from seektune.training.speed import compile_layers, decoder_layers

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread

HIDDEN = 32


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=3,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))


def _tiny_v2_moe():
    from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

    torch.manual_seed(0)
    cfg = DeepseekV2Config(vocab_size=256, hidden_size=HIDDEN, intermediate_size=64, moe_intermediate_size=16,
                           num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
                           n_routed_experts=8, num_experts_per_tok=2, first_k_dense_replace=1, kv_lora_rank=16,
                           q_lora_rank=None, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
                           topk_method="greedy", n_group=1, topk_group=1, max_position_embeddings=64)
    model = DeepseekV2ForCausalLM(cfg)
    model.set_experts_implementation("grouped_mm")
    return model


def _lora_checkpointed(model):
    from peft import LoraConfig, get_peft_model

    from seektune.adapters.lora import native_v5_targets

    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    targets = ["q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    with native_v5_targets(model.config.model_type):  # DeepSeek MLP targets stay on the dense/shared MLPs
        targets = [t for t in targets if any(n.endswith(t) for n, _ in model.named_modules())]
        return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets))


def _ids(seed=1, length=24):
    return torch.randint(0, 256, (2, length), generator=torch.Generator().manual_seed(seed))


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("build", [_tiny_llama, _tiny_v2_moe], ids=["llama", "deepseek-v2-moe"])
def test_checkpoint_inside_the_compiled_layer_gives_the_same_gradients(build):
    import torch._dynamo.utils as dynamo_utils

    eager = _lora_checkpointed(build()).train()
    compiled = copy.deepcopy(eager)  # before fusing: the one-node forwards hold on to their own module
    for model in (eager, compiled):
        fuse_lora_linears(model)
        fuse_lora_mlps(model)
    assert compile_layers(compiled) == 3
    assert all(isinstance(layer.forward, CheckpointedCompiledLayer) for layer in decoder_layers(compiled))
    assert not any(layer.gradient_checkpointing for layer in decoder_layers(compiled))  # no second checkpoint
    dynamo_utils.counters.clear()
    for length in (24, 17):  # a second length: dynamic shapes, as packed rows change length every step
        ids = _ids(length=length)
        grads = []
        for model in (eager, compiled):
            model.zero_grad(set_to_none=True)
            model(input_ids=ids, labels=ids).loss.backward()
            grads.append(_grads(model))
        assert grads[0].keys() == grads[1].keys() and grads[0]
        for name, g in grads[0].items():
            assert torch.allclose(g, grads[1][name], rtol=1e-4, atol=1e-6), name
    assert not dynamo_utils.counters["graph_break"]
    with torch.no_grad():  # evaluation runs the compiled layer without the checkpoint, same logits
        ids = _ids(seed=2)
        assert torch.allclose(eager.eval()(input_ids=ids).logits, compiled.eval()(input_ids=ids).logits, atol=1e-5)


def test_only_the_layer_inputs_are_kept_between_the_passes():
    """What autograd holds after the forward pass, per decoder layer: the hidden states going in (and the rotary
    tables every layer shares), not the layer's activations."""
    model = _lora_checkpointed(_tiny_llama()).train()
    fuse_lora_linears(model)
    compile_layers(model)
    ids = _ids(length=32)
    model(input_ids=ids, labels=ids)  # compile outside the count
    rotary = model.base_model.model.model.rotary_emb(torch.zeros(1), torch.arange(32)[None])

    def kept_per_token_per_layer(run_name: str) -> float:
        kept = {}

        def pack(t):
            if not isinstance(t, torch.nn.Parameter) and t.dim() >= 2:
                kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            for layer in decoder_layers(model):  # the layers alone: the embedding and loss keep their own tensors
                getattr(layer.forward, run_name)(torch.randn(2, 32, HIDDEN, requires_grad=True),
                                                 position_embeddings=rotary)
        return sum(kept.values()) / 3 / (2 * 32) / 4  # fp32 elements

    checkpointed = kept_per_token_per_layer("train_step")
    assert checkpointed <= HIDDEN + 3, checkpointed  # the input, and a third of the shared (32 x 16) rotary tables
    assert kept_per_token_per_layer("plain") > 4 * HIDDEN  # the same layer without the checkpoint keeps activations
