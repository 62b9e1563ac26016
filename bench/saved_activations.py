"""What one decoder layer keeps for the backward pass without gradient checkpointing, per token, side by side:
PEFT's LoRA, seektune's one-node LoRA linears, and its one-node SwiGLU MLP, eager and compiled. This is what sets
the peak memory with checkpointing off (bytes, so a CPU measures it; the attention kernel's own saves differ on a
GPU: FlashAttention keeps q, k, v, out and the log-sum-exp instead of sdpa-math's probabilities).

  python bench/saved_activations.py                 # deepseek-llm-7b layer width, 256 tokens, bf16 (~5 min on CPU)
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

VARIANTS = ["peft", "peft+compile", "fused", "fused+compile", "fused+mlp", "fused+mlp+compile"]


def build(width: dict):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=1024, num_hidden_layers=1, max_position_embeddings=4096, **width)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.config.use_cache = False
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets))


def saved_bytes(model, tokens: int) -> int:
    """Distinct storages the decoder layer hands to autograd in one forward pass, weights excluded."""
    import torch

    from seektune.training.speed import decoder_layers

    layer = decoder_layers(model)[0]
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in params:
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    forward = layer.forward

    def counted(*args, **kwargs):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            return forward(*args, **kwargs)

    ids = torch.randint(0, 1024, (1, tokens), generator=torch.Generator().manual_seed(0))
    layer.forward = counted
    try:
        out = model(input_ids=ids, labels=ids)
    finally:
        layer.forward = forward
    out.loss.backward()
    return sum(seen.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--intermediate", type=int, default=11008)
    p.add_argument("--heads", type=int, default=32)
    args = p.parse_args()
    from seektune.training.lora_fused import fuse_lora_linears, fuse_lora_mlps
    from seektune.training.speed import compile_layers

    width = dict(hidden_size=args.hidden, intermediate_size=args.intermediate, num_attention_heads=args.heads,
                 num_key_value_heads=args.heads)
    base = build(width)
    rows = []
    for variant in VARIANTS:
        model = copy.deepcopy(base).train()
        if "fused" in variant:
            fuse_lora_linears(model)
        if "mlp" in variant:
            fuse_lora_mlps(model)
        if "compile" in variant:
            compile_layers(model)
            saved_bytes(model, args.tokens)  # compiles
        n = saved_bytes(model, args.tokens)
        per_token = n / args.tokens
        rows.append({"variant": variant, "bytes_per_token": round(per_token),
                     "hidden_vectors": round(per_token / (args.hidden * 2), 2)})
        print(f"{variant:20s} {per_token / 1024:8.1f} KiB per token per layer = "
              f"{per_token / (args.hidden * 2):5.1f} bf16 hidden vectors", flush=True)
    print("RESULT " + json.dumps({"tokens": args.tokens, "width": width, "rows": rows}))


if __name__ == "__main__":
    main()
