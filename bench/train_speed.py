"""LoRA training speed and memory, side by side in one run: plain transformers+PEFT, + Liger, seektune's fast
path, and Unsloth, on random-initialised models with real shapes and real variable-length conversations.

  # here (needs ../shared/data and the embedded model): tokenise the conversations once
  python bench/train_speed.py prepare
  # on the GPU machine (torch, transformers, peft; Liger/Unsloth/bitsandbytes as wheels if present):
  python bench/train_speed.py run --models qwen1.5b,llm7b --tools hf,liger,seektune,unsloth --ckpt on,off

Every tool trains the same samples in the same order from the same weights with the same LoRA (r=16, alpha=32,
dropout 0, attention + MLP projections), fused AdamW 2e-4, one optimizer step per batch. tokens/s counts real
(non-padding) tokens: median over the steps after warm-up, with device synchronisation. Peak memory is
max_memory_allocated/reserved including the weights. MFU = useful FLOPs / the bf16 matmul rate measured in the same
call (4*N_frozen + 6*N_lora per token + 12*L*d_attn*s per token of a sample of length s, like ../shared/GPU-ANCHORS.md).
Each tool runs in its own process: Liger and Unsloth patch transformers globally.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / ".data"
SAMPLES = DATA / "speed_samples.json"
TOKENIZER = DATA / "tokenizer"
sys.path.insert(0, str(ROOT / "src"))

DENSE_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODELS = {
    # deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B
    "qwen1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                     num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, max_position_embeddings=131072,
                     rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False,
                     batch=4),
    # deepseek-ai/deepseek-llm-7b-chat
    "llm7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=30,
                  num_attention_heads=32, num_key_value_heads=32, vocab_size=102400, max_position_embeddings=4096,
                  rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False, batch=2),
    # deepseek-ai/DeepSeek-V2-Lite: MLA without q compression, 64 routed + 2 shared experts, 6 active
    "v2lite": dict(model_type="deepseek_v2", hidden_size=2048, intermediate_size=10944, moe_intermediate_size=1408,
                   num_hidden_layers=27, num_attention_heads=16, num_key_value_heads=16, n_shared_experts=2,
                   n_routed_experts=64, num_experts_per_tok=6, first_k_dense_replace=1, kv_lora_rank=512,
                   q_lora_rank=None, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, vocab_size=102400,
                   max_position_embeddings=4096, rope_theta=10000.0, routed_scaling_factor=1.0, topk_method="greedy",
                   n_group=1, topk_group=1, norm_topk_prob=False, rms_norm_eps=1e-6, tie_word_embeddings=False,
                   batch=2),
    # CPU smoke tests of this harness
    "tiny-llama": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=49152, batch=2),
    "tiny-v2": dict(model_type="deepseek_v2", hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
                    n_routed_experts=8, num_experts_per_tok=2, first_k_dense_replace=1, kv_lora_rank=16,
                    q_lora_rank=None, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, vocab_size=49152,
                    topk_method="greedy", n_group=1, topk_group=1, batch=2),
}


# ---- prepare (here): real conversations -> token ids + assistant-only labels -----------------------------------


def prepare(n: int, max_length: int) -> None:
    import random

    from seektune.config import DatasetSpec
    from seektune.data.dataset import DatasetReport, load_conversations
    from seektune.data.render import ChatRenderer
    from seektune.models.load import load_tokenizer
    from seektune.models.source import resolve_source

    shared = ROOT.parent / "shared" / "data"
    source = resolve_source(None)
    tok = load_tokenizer(source)
    renderer = ChatRenderer(tok, None, "all_assistant", max_length)
    samples, truncated = [], 0
    for rel, fmt in (("emollm_data/data.json", "conversation"),
                     ("medicalgpt_medical_sft_zh/medical_sft_1K_format.jsonl", "sharegpt")):
        spec = DatasetSpec(path=str(shared / rel), format=fmt)
        for conv in load_conversations(spec, False, DatasetReport(spec.path)):
            enc = renderer.encode(conv)
            truncated += enc.truncated
            if enc.n_supervised:
                samples.append({"input_ids": enc.input_ids, "labels": enc.labels, "source": rel.split("/")[0]})
    random.Random(0).shuffle(samples)
    samples = samples[:n]
    DATA.mkdir(exist_ok=True)
    SAMPLES.write_text(json.dumps({"max_length": max_length, "tokenizer": "SmolLM2-135M-Instruct (embedded)",
                                   "truncated": truncated, "samples": samples}))
    tok.save_pretrained(str(TOKENIZER))
    lens = sorted(len(s["input_ids"]) for s in samples)
    print(f"{len(samples)} samples -> {SAMPLES}; lengths min {lens[0]} median {lens[len(lens) // 2]} max {lens[-1]}; "
          f"{truncated} truncated at {max_length}")


# ---- models ------------------------------------------------------------------------------------------------------


def model_config(name: str):
    from transformers import AutoConfig

    spec = dict(MODELS[name])
    spec.pop("batch")
    model_type = spec.pop("model_type")
    return AutoConfig.for_model(model_type, **spec)


def make_weights(name: str, root: Path) -> Path:
    """Random weights saved once, so every tool starts from the same model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = root / name
    if (folder / "config.json").is_file():
        return folder
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(model_config(name), dtype=torch.bfloat16)
    model.save_pretrained(str(folder), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(TOKENIZER)).save_pretrained(str(folder))
    del model
    return folder


def lora_targets(config) -> list[str]:
    if config.model_type == "deepseek_v2":
        from seektune.models.arch import resolve_targets

        return resolve_targets("default", "deepseek_v2")  # MLA projections, dense + shared-expert MLPs
    return DENSE_TARGETS


def linear_flops_params(model) -> tuple[int, int]:
    """(frozen weights that each token passes through, attention width * layers)."""
    cfg = model.config
    active = 0
    for name, p in model.named_parameters():
        if p.requires_grad or "embed_tokens" in name or p.dim() < 2:
            continue
        if p.dim() == 3:  # fused routed experts: a token passes through k of n
            active += p.numel() * cfg.num_experts_per_tok // cfg.n_routed_experts
        else:
            active += p.numel()
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "qk_nope_head_dim", None)
    if head_dim is not None:
        head_dim = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    else:
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return active, cfg.num_hidden_layers * heads * head_dim


# ---- one tool, one setting (a worker process) ------------------------------------------------------------------


def worker(args) -> dict:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    folder = Path(args.weights)
    data = json.loads(SAMPLES.read_text())["samples"]
    bs = MODELS[args.model]["batch"]
    steps = args.warmup + args.steps
    batches = [data[i * bs:(i + 1) * bs] for i in range(steps)]
    ckpt = args.ckpt == "on"
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_load = time.perf_counter()
    model, packed = build(args.tool, folder, dtype, device, ckpt, args.seed)
    load_s = time.perf_counter() - t_load
    frozen, attn_width = linear_flops_params(model.get_base_model() if hasattr(model, "get_base_model") else model)
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4,
                            fused=device == "cuda")
    losses, times, tokens, flops = [], [], [], []
    for batch in batches:
        inputs = collate(batch, packed, device)
        n_tokens = sum(len(s["input_ids"]) for s in batch)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(**inputs)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss = out.loss.item()  # synchronises
        times.append(time.perf_counter() - t0)
        losses.append(loss)
        tokens.append(n_tokens)
        flops.append(sum((4 * frozen + 6 * lora) * len(s["input_ids"]) + 12 * attn_width * len(s["input_ids"]) ** 2
                         for s in batch))
    measured = range(args.warmup, steps)
    tps = statistics.median(tokens[i] / times[i] for i in measured)
    flops_per_s = statistics.median(flops[i] / times[i] for i in measured)
    result = {
        "model": args.model, "tool": args.tool, "ckpt": args.ckpt, "batch": bs, "tokens_per_second": round(tps, 1),
        "flops_per_second": flops_per_s, "losses": [round(x, 5) for x in losses], "load_seconds": round(load_s, 1),
        "step_seconds": [round(t, 4) for t in times], "trainable_parameters": lora,
        "padding_fraction": 0.0 if packed else round(1 - sum(tokens) / sum(len(b) * max(len(s["input_ids"]) for s in b)
                                                              for b in batches), 4),
    }
    if device == "cuda":
        result["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    return result


def build(tool: str, folder: Path, dtype, device: str, ckpt: bool, seed: int):
    """(model with LoRA attached, whether it takes packed rows)."""
    import torch

    if tool == "unsloth":
        return build_unsloth(folder, dtype, ckpt, seed), False
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, attn_implementation="sdpa",
                                                 device_map=device)
    model.config.use_cache = False
    packed = False
    if tool == "liger":
        from liger_kernel.transformers.monkey_patch import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=model)
    if tool.startswith("seektune"):
        from seektune.config import TrainSection
        from seektune.training.speed import decide, prepare_model_for_fast_path

        # "seektune" = every switch on auto (packing, varlen FlashAttention, compiled layers); the variants take one
        # switch away or add Liger, to show what each is worth.
        variant = {"seektune-nocompile": dict(compile=False), "seektune-liger": dict(liger=True)}
        fast = decide(TrainSection(**variant.get(tool, {})), model.config, device)
        prepare_model_for_fast_path(model, fast)
        print(f"seektune fast path: {fast.describe()} {fast.notes}", file=sys.stderr)
        packed = fast.packing
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    torch.manual_seed(seed)
    if tool.startswith("seektune"):
        from seektune.adapters.lora import attach_lora
        from seektune.config import LoraSection

        targets = lora_targets(model.config)
        model = attach_lora(model, LoraSection(r=16, alpha=32, dropout=0.0, targets=targets))
        if fast.compile:
            from seektune.training.speed import compile_layers

            compile_layers(model)
    else:
        from peft import LoraConfig, get_peft_model

        targets = lora_targets(model.config)
        if model.config.model_type == "deepseek_v2":
            # The same modules as seektune: without this PEFT 0.21 moves MLP targets onto the routed experts (peft#3711).
            from seektune.adapters.lora import native_v5_targets

            with native_v5_targets(model.config.model_type):
                model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets))
        else:
            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets))
    return model, packed


def build_unsloth(folder: Path, dtype, ckpt: bool, seed: int):
    from unsloth import FastLanguageModel  # must come before transformers is imported

    model, _ = FastLanguageModel.from_pretrained(
        model_name=str(folder), max_seq_length=2048, dtype=dtype, load_in_4bit=False, fix_tokenizer=False,
        use_gradient_checkpointing="unsloth" if ckpt else False,
    )
    return FastLanguageModel.get_peft_model(
        model, r=16, lora_alpha=32, lora_dropout=0, target_modules=DENSE_TARGETS, bias="none",
        use_gradient_checkpointing="unsloth" if ckpt else False, random_state=seed,
    )


def collate(batch: list[dict], packed: bool, device: str) -> dict:
    import torch

    if packed:
        from seektune.training.speed import packed_collator

        out = packed_collator()([{"input_ids": s["input_ids"], "labels": s["labels"]} for s in batch])
    else:
        from seektune.training.collate import PadCollator

        out = PadCollator(0)([{"input_ids": s["input_ids"], "labels": s["labels"]} for s in batch])
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in out.items()}


# ---- driver --------------------------------------------------------------------------------------------------


def matmul_tflops() -> float:
    import torch

    if not torch.cuda.is_available():
        return float("nan")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * 10 / (time.perf_counter() - t0) / 1e12


def run(args) -> None:
    out = Path(args.out or os.environ.get("OUT") or HERE / ".results")
    out.mkdir(parents=True, exist_ok=True)
    ceiling = matmul_tflops()
    print(f"bf16 matmul ceiling: {ceiling:.0f} TFLOP/s", flush=True)
    results = []
    for name in args.models.split(","):
        t0 = time.perf_counter()
        folder = make_weights(name, Path(args.weights_root))
        print(f"[{name}] weights ready in {time.perf_counter() - t0:.0f} s", flush=True)
        for ckpt in args.ckpt.split(","):
            for tool in args.tools.split(","):
                res = run_worker(name, tool, ckpt, folder, args)
                if "flops_per_second" in res and ceiling == ceiling:
                    res["mfu"] = round(res["flops_per_second"] / (ceiling * 1e12), 4)
                results.append(res)
                line = res.get("error") or (f"{res['tokens_per_second']:.0f} tok/s, "
                                            f"{res.get('peak_allocated_gib', '-')} GiB, MFU {res.get('mfu', '-')}")
                print(f"[{name} ckpt={ckpt}] {tool}: {line}", flush=True)
                (out / "speed.json").write_text(json.dumps({"ceiling_tflops": ceiling, "results": results,
                                                            "versions": versions()}, indent=1))
    table = render_table(results, ceiling)
    print(table)
    (out / "speed.md").write_text(table)


def run_worker(name, tool, ckpt, folder, args) -> dict:
    cmd = [sys.executable, __file__, "worker", "--model", name, "--tool", tool, "--ckpt", ckpt, "--weights",
           str(folder), "--steps", str(args.steps), "--warmup", str(args.warmup), "--seed", str(args.seed)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "tool": tool, "ckpt": ckpt, "error": f"timed out after {args.timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
    return {"model": name, "tool": tool, "ckpt": ckpt, "error": f"exit {proc.returncode}: " + " | ".join(tail)}


def render_table(results: list[dict], ceiling: float) -> str:
    lines = [f"bf16 matmul ceiling measured in this run: {ceiling:.0f} TFLOP/s", "",
             "| model | grad-ckpt | tool | tok/s | × hf | × unsloth | peak alloc GiB | peak reserved GiB | MFU | "
             "padding | max loss diff vs hf (20 steps) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (model, ckpt) in dict.fromkeys((r["model"], r["ckpt"]) for r in results):
        group = {r["tool"]: r for r in results if r["model"] == model and r["ckpt"] == ckpt}
        base, uns = group.get("hf", {}), group.get("unsloth", {})
        for tool, r in group.items():
            if "error" in r:
                lines.append(f"| {model} | {ckpt} | {tool} | failed: {r['error'][-200:]} |||||||||")
                continue
            ratio = lambda other: (f"{r['tokens_per_second'] / other['tokens_per_second']:.2f}"  # noqa: E731
                                   if other.get("tokens_per_second") else "–")
            diff = ("–" if not base.get("losses") else
                    f"{max(abs(a - b) for a, b in zip(r['losses'], base['losses'])):.4f}")
            lines.append(
                f"| {model} | {ckpt} | {tool} | {r['tokens_per_second']:.0f} | {ratio(base)} | {ratio(uns)} | "
                f"{r.get('peak_allocated_gib', '–')} | {r.get('peak_reserved_gib', '–')} | "
                f"{r.get('mfu', float('nan')):.1%} | {r['padding_fraction']:.0%} | {diff} |")
    return "\n".join(lines) + "\n"


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "transformers", "peft", "liger-kernel", "unsloth", "bitsandbytes", "triton"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        import torch

        out["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:
        pass
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare")
    pp.add_argument("--n", type=int, default=400)
    pp.add_argument("--max-length", type=int, default=2048)
    for name in ("run", "worker"):
        q = sub.add_parser(name)
        q.add_argument("--steps", type=int, default=17)
        q.add_argument("--warmup", type=int, default=3)
        q.add_argument("--seed", type=int, default=0)
        if name == "run":
            q.add_argument("--models", default="qwen1.5b,llm7b")
            q.add_argument("--tools", default="hf,liger,seektune,unsloth")
            q.add_argument("--ckpt", default="on,off")
            q.add_argument("--weights-root", default="/tmp/seektune-bench-models")
            q.add_argument("--timeout", type=int, default=400)
            q.add_argument("--out")
        else:
            q.add_argument("--model", required=True)
            q.add_argument("--tool", required=True)
            q.add_argument("--ckpt", default="on")
            q.add_argument("--weights", required=True)
    args = p.parse_args()
    if args.cmd == "prepare":
        prepare(args.n, args.max_length)
    elif args.cmd == "run":
        run(args)
    else:
        print("RESULT " + json.dumps(worker(args)), flush=True)


if __name__ == "__main__":
    main()
