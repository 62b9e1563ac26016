"""LoRA training speed and peak memory of a DeepSeek MoE model per transformers `experts_implementation`.

GPU (the measurement for bench/RESULTS.md): a randomly initialised model with DeepSeek-V2-Lite's shapes, built from
transformers' native DeepseekV2 classes (config written below, no download), bf16, batch 2 x 2048 tokens, gradient
checkpointing, LoRA on the default targets (MLA attention, dense MLP, shared experts) and, as a second row set, on the
routed experts too (PEFT target_parameters on the fused expert tensors):

    python bench/moe_experts.py                      # writes $OUT/moe_experts.json when OUT is set

CPU smoke run (tiny DeepSeek-V3 shapes):

    python bench/moe_experts.py --shape tiny-v3 --device cpu --batch 8 --seq 128 --steps 5

Needs only torch, transformers (>= 5 with experts_implementation; older versions run the eager path only) and peft.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import torch

SHAPES = {
    # deepseek-ai/DeepSeek-V2-Lite config.json, written out (no download on the GPU machine)
    "v2-lite": dict(
        arch="deepseek_v2", vocab_size=102400, hidden_size=2048, intermediate_size=10944, moe_intermediate_size=1408,
        num_hidden_layers=27, num_attention_heads=16, num_key_value_heads=16, n_shared_experts=2, n_routed_experts=64,
        num_experts_per_tok=6, first_k_dense_replace=1, kv_lora_rank=512, q_lora_rank=None, qk_nope_head_dim=128,
        qk_rope_head_dim=64, v_head_dim=128, topk_method="greedy", n_group=1, topk_group=1, routed_scaling_factor=1.0,
        norm_topk_prob=False, max_position_embeddings=4096, rms_norm_eps=1e-6,
    ),
    "tiny-v3": dict(
        arch="deepseek_v3", vocab_size=512, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8,
        num_experts_per_tok=2, n_group=2, topk_group=1, first_k_dense_replace=1, q_lora_rank=32, kv_lora_rank=16,
        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, max_position_embeddings=512,
    ),
}
DEFAULT_TARGETS = (
    r".*\.(self_attn\.(q_proj|q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)"
    r"|mlp\.(gate_proj|up_proj|down_proj)|mlp\.shared_experts\.(gate_proj|up_proj|down_proj))"
)


@contextlib.contextmanager
def native_v5_targets(model_type: str):
    """PEFT 0.21 renames DeepSeek MLP targets to fused experts (peft#3711); switch that off (as seektune does)."""
    try:
        import peft.utils.transformers_weight_conversion as conv
    except ImportError:
        yield
        return
    saved = conv._MODEL_TO_CONVERSION_PATTERN.pop(model_type, None)
    try:
        yield
    finally:
        if saved is not None:
            conv._MODEL_TO_CONVERSION_PATTERN[model_type] = saved


def available_implementations() -> list[str]:
    try:
        from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS
    except ImportError:
        return ["eager"]
    return ["eager"] + [k for k in ("grouped_mm", "batched_mm") if k in ALL_EXPERTS_FUNCTIONS]


def set_implementation(model, impl: str) -> str:
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation(impl)
    else:
        model.config._experts_implementation = impl
    return getattr(model.config, "_experts_implementation", "eager")


def build(shape: str, device: str, dtype: torch.dtype):
    import transformers

    spec = dict(SHAPES[shape])
    arch = spec.pop("arch")
    cls = transformers.DeepseekV2Config if arch == "deepseek_v2" else transformers.DeepseekV3Config
    cfg = cls(**spec)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model


def attach(model, targets: str, r: int):
    from peft import LoraConfig, get_peft_model

    n_experts = model.config.n_routed_experts
    kw = dict(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=DEFAULT_TARGETS)
    if targets == "experts":
        r_e = max(1, r // n_experts)  # PEFT's guidance for fused experts: r // number of experts
        key = r"mlp\.experts\.(gate_up_proj|down_proj)"
        kw.update(target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
                  rank_pattern={key: r_e}, alpha_pattern={key: 2 * r_e})
    with native_v5_targets(model.config.model_type):
        return get_peft_model(model, LoraConfig(**kw))


def measure(peft_model, batch: int, seq: int, steps: int, warmup: int, device: str) -> dict:
    vocab = peft_model.config.vocab_size
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen).to(device)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    peft_model.train()
    cuda = device.startswith("cuda")

    def step():
        loss = peft_model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "tokens_per_s": round(batch * seq * steps / seconds, 1),
        "s_per_step": round(seconds / steps, 4),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "loss": round(float(loss.detach()), 4),
    }


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="v2-lite")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="default: bf16 on GPU, fp32 on CPU")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--impls", default=",".join(available_implementations()))
    ap.add_argument("--targets", default="default,experts", help="comma list of: default, experts")
    ap.add_argument("--no-gradient-checkpointing", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")]
    import peft
    import transformers

    rows = []
    for targets in args.targets.split(","):
        model = build(args.shape, args.device, dtype)
        if not args.no_gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        peft_model = attach(model, targets, args.r)
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        for impl in args.impls.split(","):
            used = set_implementation(peft_model.get_base_model(), impl)
            row = {"shape": args.shape, "targets": targets, "experts_implementation": used, "batch": args.batch,
                   "seq": args.seq, "trainable": trainable, "dtype": str(dtype).replace("torch.", ""),
                   "gradient_checkpointing": not args.no_gradient_checkpointing}
            try:
                row |= measure(peft_model, args.batch, args.seq, args.steps, args.warmup, args.device)
            except Exception as e:  # one failing kernel should not hide the others' numbers
                row["error"] = f"{type(e).__name__}: {e}"[:300]
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), flush=True)
        del peft_model, model
    env = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
           "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"cpu ({os.cpu_count()} cores, "
           f"{torch.get_num_threads()} threads)"}
    print(f"\n{args.shape}, batch {args.batch} x {args.seq}, {env}")
    print(f"| targets | experts_implementation | tokens/s | s/step | peak GiB | trainable |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['targets']} | {r['experts_implementation']} | {r.get('tokens_per_s', r.get('error'))} | "
              f"{r.get('s_per_step', '')} | {r.get('peak_mem_gib', '')} | {r['trainable']:,} |")
    if os.environ.get("OUT"):
        os.makedirs(os.environ["OUT"], exist_ok=True)
        with open(os.path.join(os.environ["OUT"], "moe_experts.json"), "w") as f:
            json.dump({"env": env, "args": vars(args), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
