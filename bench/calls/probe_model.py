"""The model of the CPU probes of sessions 12-14: Llama decoder layers of a given width as seektune trains them on a
GPU with checkpointing (offloaded checkpoints, one-node LoRA linears and MLP, each layer compiled), random weights."""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def offloaded_lora_llama(hidden: int, intermediate: int, skip: bool, layers: int = 2):
    """bf16, vocabulary 256, 128-wide heads, LoRA r16/α32 on every linear; `skip` is train.lean_recompute's skipped
    down projection in the recomputation."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from seektune.training.lora_fused import fuse_lora_linears, fuse_lora_mlps
    from seektune.training.offload import offload_layer_inputs
    from seektune.training.speed import compile_layers

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                      num_attention_heads=hidden // 128, num_key_value_heads=hidden // 128)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS))
    fuse_lora_linears(model), fuse_lora_mlps(model)
    offload_layer_inputs(model, skip_unused_mlp_output=skip)
    compile_layers(model)
    return model
