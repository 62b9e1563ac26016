"""LoRA training speed and memory, side by side in one run: plain transformers+PEFT, + Liger, seektune's fast
path, and Unsloth, on random-initialised models with real shapes and real variable-length conversations.

  # here (needs ../shared/data and the embedded model): tokenise the conversations once
  python bench/train_speed.py prepare
  # on the GPU machine (torch, transformers, peft; Liger/Unsloth/bitsandbytes as wheels if present):
  python bench/train_speed.py run --models qwen1.5b,llm7b --tools hf,liger,seektune,unsloth --ckpt on,off
  # the anchors' setting (../shared/GPU-ANCHORS.md): full 2048-token rows of synthetic tokens, no padding
  python bench/train_speed.py run --models llm7b --data synthetic --tools hf,seektune,unsloth --ckpt on,off
  # QLoRA 4-bit (bitsandbytes NF4): plain PEFT, seektune (model.load_in=4bit), Unsloth 4-bit
  python bench/train_speed.py run --models llm7b --data synthetic --tools hf-4bit,seektune-4bit,unsloth-4bit --ckpt on
  # the longest single sequence that trains (batch 1, checkpointing on) within an 80 GB budget
  python bench/train_speed.py maxlen --models llm7b --tools hf,seektune,unsloth --cap-gib 80
  # where the time goes on a shallow model of the same width: GPU kernels and host ops (--profile), and the
  # Python hot spots plus a gzipped Chrome trace of one step (SEEKTUNE_BENCH_TRACE=DIR)
  SEEKTUNE_BENCH_TRACE=out/trace python bench/train_speed.py run --models v2lite --layers 6 --tools seektune --profile
  # where the peak memory comes from: one more recorded step, its phase peaks and the allocations alive at its peak
  SEEKTUNE_BENCH_MEMORY=1 python bench/train_speed.py run --models llm7b --data synthetic --tools seektune-4bit --ckpt on --steps 2 --warmup 1
  # the steady state of a long run (tools that compile or capture graphs per row length have seen every length):
  # the steps go round 20 batches, the first 20 steps are the warm-up
  python bench/train_speed.py run --models v2lite --tools hf,seektune,seektune-nographs --ckpt on --cycle 20 --warmup 20 --steps 20
  # what the first step's compilation did: torch.compile's counters and seconds per phase (SEEKTUNE_BENCH_COMPILE=1),
  # every thread's Python stack sampled every 20 ms (SEEKTUNE_BENCH_STACK_SAMPLES=DIR), and with Inductor's compile
  # workers up before it starts (SEEKTUNE_BENCH_WAIT_POOL=1)
  SEEKTUNE_BENCH_COMPILE=1 SEEKTUNE_BENCH_STACK_SAMPLES=out/samples python bench/train_speed.py run --models llm7b --layers 2 --data synthetic --tools seektune-skipdown --ckpt on --steps 2 --warmup 1
  # each call of Inductor's Scheduler.codegen under cProfile, in whichever thread it runs (files under DIR/<tool>/)
  SEEKTUNE_BENCH_PROFILE_CODEGEN=out/codegen python bench/train_speed.py run --models llm7b --layers 2 --data synthetic --tools seektune-skipdown --ckpt on --steps 2 --warmup 1

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


def model_config(name: str, layers: int = 0):
    from transformers import AutoConfig

    spec = dict(MODELS[name])
    spec.pop("batch")
    if layers:  # a shallower model of the same width: quick profiles, per-layer costs unchanged
        spec["num_hidden_layers"] = layers
    model_type = spec.pop("model_type")
    return AutoConfig.for_model(model_type, **spec)


def make_weights(name: str, root: Path, layers: int = 0) -> Path:
    """Random weights saved once, so every tool starts from the same model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = root / (f"{name}-{layers}l" if layers else name)
    if (folder / "config.json").is_file():
        return folder
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(model_config(name, layers), dtype=torch.bfloat16)
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
    if os.environ.get("SEEKTUNE_BENCH_STACKS"):  # every thread's stack every N s: where a worker that hangs is
        import faulthandler

        faulthandler.dump_traceback_later(float(os.environ["SEEKTUNE_BENCH_STACKS"]), repeat=True, file=sys.stderr)
    import torch

    if os.environ.get("SEEKTUNE_BENCH_PROFILE_CODEGEN"):
        profile_inductor_codegen(Path(os.environ["SEEKTUNE_BENCH_PROFILE_CODEGEN"]) / args.tool)
    torch.backends.cuda.matmul.allow_tf32 = True
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    folder = Path(args.weights)
    bs = MODELS[args.model]["batch"]
    steps = args.warmup + args.steps
    # --cycle N: the steps go round N batches, so that after >= N warm-up steps every timed step has a row length
    # seen before: the steady state of a long run for tools that compile or capture per length.
    distinct = min(steps, args.cycle) if args.cycle else steps
    data = samples(args.data, distinct * bs)
    batches = [data[(i % distinct) * bs:(i % distinct + 1) * bs] for i in range(steps)]
    ckpt = args.ckpt == "on"
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_load = time.perf_counter()
    wait_pool = bool(os.environ.get("SEEKTUNE_BENCH_WAIT_POOL")) and device == "cuda"
    if wait_pool:  # start Inductor's compile workers now, while the model loads
        from torch._inductor.async_compile import maybe_warm_pool

        maybe_warm_pool()
    model, packed = build(args.tool, folder, dtype, device, ckpt, args.seed)
    print(f"{args.tool}: {describe(model)}", file=sys.stderr)
    load_s = time.perf_counter() - t_load
    pool_wait = wait_for_compile_pool() if wait_pool else None
    frozen, attn_width = linear_flops_params(model.get_base_model() if hasattr(model, "get_base_model") else model)
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4,
                            fused=device == "cuda")
    losses, times, tokens, flops = [], [], [], []
    compiling = None
    for batch in batches:
        inputs = collate(batch, packed, device)
        n_tokens = sum(len(s["input_ids"]) for s in batch)
        if device == "cuda":
            torch.cuda.synchronize()
        profiler = first_step_profiler(args.tool) if not times else None
        t0 = time.perf_counter()
        loss = train_step(model, opt, inputs).item()  # synchronises
        times.append(time.perf_counter() - t0)
        if profiler:
            profiler()
        print(f"step {len(times)}: {times[-1]:.3f} s", file=sys.stderr, flush=True)  # progress, kept on a timeout
        if len(times) == 1 and os.environ.get("SEEKTUNE_BENCH_COMPILE"):  # what the first step's compilation did
            compiling = compile_counters()
        losses.append(loss)
        tokens.append(n_tokens)
        flops.append(sum((4 * frozen + 6 * lora) * len(s["input_ids"]) + 12 * attn_width * len(s["input_ids"]) ** 2
                         for s in batch))
    profile = None
    if os.environ.get("SEEKTUNE_BENCH_TRACE") and device == "cuda":  # host-side hot spots, for MoE's short steps
        try:
            host_profile(model, opt, batches[-3:], packed, device, Path(os.environ["SEEKTUNE_BENCH_TRACE"]) / args.tool)
        except Exception as e:  # a profiler problem must not cost the timed result
            print(f"host profile failed: {e!r}", file=sys.stderr)
    if args.profile and device == "cuda":
        try:
            profile = kernel_profile(model, opt, batches[-2:], packed, device)
        except Exception as e:  # a profiler problem must not cost the timed result
            profile = {"error": repr(e)[:300]}
    peaks = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()) if device == "cuda" else None
    memory = None
    if os.environ.get("SEEKTUNE_BENCH_MEMORY") and device == "cuda":  # where the peak comes from, one more step
        try:
            memory = memory_breakdown(model, opt, collate(batches[-1], packed, device),
                                      depth=int(os.environ.get("SEEKTUNE_BENCH_MEMORY_DEPTH", 3)))
        except Exception as e:  # a recorder problem must not cost the timed result
            memory = {"error": repr(e)[:300]}
    measured = range(args.warmup, steps)
    tps = statistics.median(tokens[i] / times[i] for i in measured)
    flops_per_s = statistics.median(flops[i] / times[i] for i in measured)
    result = {
        "model": args.model, "tool": args.tool, "ckpt": args.ckpt, "data": args.data, "batch": bs, "cycle": args.cycle, "tokens_per_second": round(tps, 1),
        "flops_per_second": flops_per_s, "losses": [round(x, 5) for x in losses], "load_seconds": round(load_s, 1),
        "step_seconds": [round(t, 4) for t in times], "trainable_parameters": lora,
        "padding_fraction": 0.0 if packed else round(1 - sum(tokens) / sum(len(b) * max(len(s["input_ids"]) for s in b)
                                                              for b in batches), 4),
    }
    if profile:
        result["profile"] = profile
    if compiling:
        result["compile_first_step"] = compiling
    if pool_wait is not None:
        result["compile_pool_wait_seconds"] = pool_wait
    if memory:
        result["memory"] = memory
    if device == "cuda":
        result["peak_allocated_gib"] = round(peaks[0] / 2**30, 2)  # of the timed steps (the breakdown resets it)
        result["peak_reserved_gib"] = round(peaks[1] / 2**30, 2)
    return result


def train_step(model, opt, inputs: dict):
    """One optimizer step, the same for every tool; returns the loss tensor (not synchronised)."""
    out = model(**inputs)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return out.loss.detach()


def memory_breakdown(model, opt, inputs: dict, top: int = 14, depth: int = 3) -> dict:
    """One recorded step: what is resident when it starts (weights, optimizer state), the peak of each phase, and the
    allocations made in the step that are still alive at its peak, grouped by the Python frames that made them."""
    import torch

    gib = 2**30
    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    phases = {}
    torch.cuda.memory._record_memory_history(enabled="all", context="alloc", stacks="python", max_entries=2_000_000)
    try:
        torch.cuda.reset_peak_memory_stats()
        out = model(**inputs)
        torch.cuda.synchronize()
        phases["forward"] = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out.loss.backward()
        torch.cuda.synchronize()
        phases["backward"] = torch.cuda.max_memory_allocated()
        del out
        torch.cuda.reset_peak_memory_stats()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        phases["optimizer"] = torch.cuda.max_memory_allocated()
        snap = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    live, total, peak, at_peak = {}, 0, 0, {}
    for ev in snap["device_traces"][torch.cuda.current_device()]:
        if ev["action"] == "alloc":
            live[ev["addr"]] = (ev["size"], ev.get("frames", []))
            total += ev["size"]
            if total > peak:
                peak, at_peak = total, dict(live)
        elif ev["action"] == "free_requested" and ev["addr"] in live:
            total -= live.pop(ev["addr"])[0]

    def where(frames) -> str:
        # the innermost frames outside torch's own module machinery say which code asked for the memory
        mine = [f for f in frames if "/torch/nn/modules/" not in f["filename"] and "/torch/_" not in f["filename"]
                and not f["filename"].startswith("<")]
        return " < ".join(f"{Path(f['filename']).name}:{f['line']}:{f['name']}" for f in mine[:depth]) or "?"

    groups: dict[str, list] = {}
    for size, frames in at_peak.values():
        g = groups.setdefault(where(frames), [0, 0, []])
        g[0] += size
        g[1] += 1
        g[2].append(round(size / 2**20, 1))
    return {"resident_at_step_start_gib": round(start / gib, 3),
            "phase_peak_gib": {k: round(v / gib, 3) for k, v in phases.items()},
            "step_peak_above_start_gib": round(peak / gib, 3),
            "alive_at_peak": [[k, round(v[0] / 2**20, 1), v[1], sorted(v[2])[-8:]] for k, v in
                              sorted(groups.items(), key=lambda kv: -kv[1][0])[:top]]}


def host_profile(model, opt, batches, packed: bool, device: str, out: Path) -> None:
    """Python functions by own and cumulative time over a few steps (cProfile), and a gzipped Chrome trace of one
    step with host and GPU activity: where the host keeps the GPU waiting."""
    import cProfile
    import pstats

    import torch
    from torch.profiler import ProfilerActivity, profile

    out.mkdir(parents=True, exist_ok=True)

    prof = cProfile.Profile()
    prof.enable()
    for batch in batches[:-1]:
        train_step(model, opt, collate(batch, packed, device))
        torch.cuda.synchronize()
    prof.disable()
    with open(out / "cprofile.txt", "w") as f:
        st = pstats.Stats(prof, stream=f)
        st.sort_stats("tottime").print_stats(60)
        st.sort_stats("cumulative").print_stats(80)
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as tp:
        train_step(model, opt, collate(batches[-1], packed, device))
        torch.cuda.synchronize()
    tp.export_chrome_trace(str(out / "trace.json.gz"))  # gzipped by the profiler (the .gz suffix)


def kernel_profile(model, opt, batches, packed: bool, device: str) -> dict:
    """GPU time per step by kernel family and the top kernels, over two profiled training steps."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for batch in batches:
            train_step(model, opt, collate(batch, packed, device))
        torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - t0) * 1e3 / len(batches)
    kernels, host = {}, {}
    for evt in prof.key_averages():
        t = getattr(evt, "device_time_total", 0) or getattr(evt, "cuda_time_total", 0)
        if t > 0 and evt.key not in kernels and str(evt.device_type).endswith("CUDA"):  # kernels, not aten ops
            kernels[evt.key] = t / len(batches) / 1e3  # ms per step
        if evt.self_cpu_time_total > 0:  # host side: what keeps the GPU waiting when steps are short (MoE)
            host[evt.key] = (evt.self_cpu_time_total / len(batches) / 1e3, evt.count // len(batches))
    families = {}
    for name, ms in kernels.items():
        low = name.lower()
        fam = ("gemm" if any(k in low for k in ("gemm", "cutlass", "sm90_", "nvjet", "cublas", "matmul")) else
               "attention" if any(k in low for k in ("flash", "fmha", "attention")) else
               "triton" if low.startswith("triton") else
               "copy" if any(k in low for k in ("memcpy", "memset", "copy")) else
               "elementwise" if any(k in low for k in ("elementwise", "vectorized", "reduce", "unrolled")) else "other")
        families[fam] = families.get(fam, 0) + ms
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:25]
    report = {"families_ms": {k: round(v, 2) for k, v in sorted(families.items(), key=lambda kv: -kv[1])},
              "top_ms": [[k[:110], round(v, 3)] for k, v in top],
              "wall_ms_profiled": round(wall_ms, 1),
              "host_top_self_ms": [[k[:80], round(ms, 2), n] for k, (ms, n) in
                                   sorted(host.items(), key=lambda kv: -kv[1][0])[:30]],
              "host_syncs": {k: [round(ms, 2), n] for k, (ms, n) in host.items()
                             if any(w in k for w in ("Synchronize", "Memcpy", "item", "_local_scalar_dense", "nonzero"))}}
    print(json.dumps(report, indent=1), file=sys.stderr)
    return report


def profile_inductor_codegen(folder: Path) -> None:
    """SEEKTUNE_BENCH_PROFILE_CODEGEN=DIR: each call of Inductor's Scheduler.codegen under cProfile, in whichever thread
    it runs (on a GPU the recomputation compiles in the autograd engine's thread, which a profiler started in the
    main thread does not see); the functions by inclusive and own time go to DIR/<tool>/codegen-N.txt."""
    import cProfile
    import io
    import pstats

    from torch._inductor.scheduler import Scheduler

    folder.mkdir(parents=True, exist_ok=True)
    codegen, calls, busy = Scheduler.codegen, [0], [False]

    def profiled(self):
        if busy[0]:  # a subgraph's code generation inside another's: one profiler at a time (Python 3.12)
            return codegen(self)
        calls[0] += 1
        prof, t0 = cProfile.Profile(), time.perf_counter()
        busy[0] = True
        try:
            return prof.runcall(codegen, self)
        finally:
            busy[0] = False
            seconds, text = time.perf_counter() - t0, io.StringIO()
            stats = pstats.Stats(prof, stream=text)
            stats.sort_stats("cumulative").print_stats(45)
            stats.sort_stats("tottime").print_stats(30)
            (folder / f"codegen-{calls[0]}.txt").write_text(f"Scheduler.codegen {seconds:.1f} s\n{text.getvalue()}")
            print(f"Scheduler.codegen call {calls[0]}: {seconds:.1f} s", file=sys.stderr, flush=True)

    Scheduler.codegen = profiled


def first_step_profiler(tool: str):
    """SEEKTUNE_BENCH_STACK_SAMPLES=DIR: where the first step (the one that compiles) spends its time, in every thread.
    cProfile would see only this thread, but on a GPU the recomputation, and so its compilation, runs in the autograd
    engine's own thread. A sampler thread therefore reads every thread's Python stack every 20 ms; the returned
    function stops it and writes DIR/<tool>.txt: per thread (by name; threads started outside Python, like the
    autograd engine's, are `native-1`, `native-2`, ...), the share of that thread's samples each function was on its
    stack (inclusive) and at its top (own time, which shows waiting too: a thread blocked on a pipe, a lock or a
    future)."""
    folder = os.environ.get("SEEKTUNE_BENCH_STACK_SAMPLES")
    if not folder:
        return None
    import collections
    import threading

    inclusive, own = collections.defaultdict(collections.Counter), collections.defaultdict(collections.Counter)
    seen = collections.Counter()  # samples per thread
    natives = {}  # threads started outside Python: ident -> native-1, native-2, ...
    done = threading.Event()

    def sample():
        me = threading.get_ident()
        while not done.wait(0.02):
            names_by_ident = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                thread = names_by_ident.get(ident) or natives.setdefault(ident, f"native-{len(natives) + 1}")
                stack = []
                while frame is not None:
                    code = frame.f_code
                    stack.append(f"{Path(code.co_filename).name}:{code.co_firstlineno}({code.co_name})")
                    frame = frame.f_back
                seen[thread] += 1
                own[thread][stack[0]] += 1
                inclusive[thread].update(set(stack))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def stop():
        done.set()
        sampler.join()
        lines = ["Every thread's Python stack, sampled every 20 ms; shares of each thread's own samples", ""]
        for thread, n in seen.most_common():
            lines += [f"== thread {thread}: {n} samples", "inclusive:"]
            lines += [f"{c / n:7.1%}  {name}" for name, c in inclusive[thread].most_common(40)]
            lines += ["own (top of the stack):"]
            lines += [f"{c / n:7.1%}  {name}" for name, c in own[thread].most_common(25)]
            lines.append("")
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{tool}.txt").write_text("\n".join(lines))

    return stop


def wait_for_compile_pool() -> float:
    """Wait until Inductor's compile worker processes are up; returns the seconds waited. Until they are, Inductor
    compiles each new Triton kernel in the training process itself, one at a time (AsyncCompile.use_process_pool)."""
    from torch._inductor.async_compile import AsyncCompile

    t0 = time.perf_counter()
    AsyncCompile.wait_pool_ready()
    return round(time.perf_counter() - t0, 2)


def compile_counters() -> dict:
    """torch.compile's counters so far (graphs, recompilations, cache hits) and its seconds per phase; also printed,
    so that a worker that times out still shows them (stderr_tail)."""
    from torch._dynamo.utils import compilation_time_metrics, counters
    from torch._inductor.async_compile import AsyncCompile
    from torch._inductor.config import compile_threads

    out = {group: dict(counters[group]) for group in ("stats", "frames", "recompiles", "aot_autograd", "inductor")
           if counters.get(group)}
    ready = AsyncCompile._ready_future
    # False: the workers were still starting, so Inductor built new kernels in this process; None: no pool was asked for
    out["compile_pool_ready"] = ready.done() if ready is not None else None
    out["compile_threads"] = compile_threads  # 1: no pool, every kernel built in this process
    out["seconds"] = {name: round(sum(values), 1) for name, values in compilation_time_metrics.items()
                      if sum(values) >= 0.5}  # the phases that took time
    print(f"compile after step 1: {json.dumps(out)[:4000]}", file=sys.stderr, flush=True)
    return out


def build(tool: str, folder: Path, dtype, device: str, ckpt: bool, seed: int):
    """(model with LoRA attached, whether it takes packed rows)."""
    import torch

    if tool.startswith("unsloth"):
        return build_unsloth(folder, dtype, ckpt, seed, four_bit=tool.endswith("-4bit")), False
    from transformers import AutoModelForCausalLM

    four_bit = tool.endswith("-4bit")
    if four_bit:  # the QLoRA recipe: NF4 with double quantization, bf16 compute (as seektune's model.load_in=4bit)
        from seektune.infer.quantized import quantization_kwargs

        load = quantization_kwargs("4bit", dtype)
    else:
        load = {"dtype": dtype, "device_map": device}
    model = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="sdpa", **load)
    model.config.use_cache = False
    packed = False
    if tool == "liger":
        from liger_kernel.transformers.monkey_patch import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=model)
    if tool.startswith("seektune"):
        from seektune.config import TrainSection
        from seektune.training.speed import decide, prepare_model_for_fast_path

        # "seektune" = every switch on auto (packing, varlen FlashAttention, compiled layers, fused loss); the
        # variants take one switch away or add Liger's full set, to show what each is worth.
        variant = {"seektune-nocompile": dict(compile=False), "seektune-liger": dict(liger=True),
                   "seektune-nofl": dict(fused_loss=False), "seektune-nofused": dict(fused_lora=False),
                   "seektune-nooffload": dict(offload_checkpoints=False), "seektune-offload": dict(offload_checkpoints=True),
                   "seektune-graphs": dict(cuda_graphs=True), "seektune-nographs": dict(cuda_graphs=False),
                   "seektune-graphs-compiled": dict(cuda_graphs=True, compile=True),
                   "seektune-cudnn": dict(attention="seektune_cudnn"),  # needs nvidia-cudnn-frontend (.whl/cudnn)
                   "seektune-nomlp": {}, "seektune-varlenonly": {},
                   "seektune-skipdown": dict(lean_recompute=True)}  # the recomputation skips the MLP's down proj
        import seektune.training.speed as speed_module

        # seektune-varlenonly: rows of equal samples through the varlen kernel too, not batched through sdpa
        speed_module.BATCH_EQUAL_SAMPLES = tool != "seektune-varlenonly"
        fast = decide(TrainSection(gradient_checkpointing=ckpt, **variant.get(tool.removesuffix("-4bit"), {})),
                      model.config, device)
        prepare_model_for_fast_path(model, fast)
        print(f"seektune fast path: {fast.describe()} {fast.notes}", file=sys.stderr)
        packed = fast.packing
    if four_bit and not tool.startswith("seektune"):
        from peft import prepare_model_for_kbit_training

        # What QLoRA guides do: also upcasts the norms and embeddings to fp32.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=ckpt,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        if tool.startswith("seektune") and fast.offload_checkpoints:
            from seektune.training.offload import offload_layer_inputs

            assert offload_layer_inputs(model, skip_unused_mlp_output=fast.lean_recompute)
    torch.manual_seed(seed)
    targets = lora_targets(model.config)
    if tool.startswith("seektune"):
        from seektune.adapters.lora import attach_lora
        from seektune.config import LoraSection

        model = attach_lora(model, LoraSection(r=16, alpha=32, dropout=0.0, targets=targets))
        if fast.fused_lora:
            from seektune.training.lora_fused import fuse_lora_linears, fuse_lora_mlps

            linears = fuse_lora_linears(model)
            mlps = 0 if "nomlp" in tool else fuse_lora_mlps(model)  # seektune-nomlp: the per-linear nodes alone
            print(f"{linears} LoRA linears fused, {mlps} MLPs", file=sys.stderr)
        if fast.cuda_graphs:
            from seektune.training.layer_graphs import graph_layers

            graph_layers(model)
        if fast.compile:
            from seektune.training.speed import compile_layers

            compile_layers(model)
    else:
        from peft import LoraConfig, get_peft_model

        from seektune.adapters.lora import native_v5_targets

        # The same modules as seektune: without this PEFT 0.21 moves DeepSeek MLP targets onto the routed experts
        # (peft#3711); a no-op for other model types.
        with native_v5_targets(model.config.model_type):
            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets))
    return model, packed


def describe(model) -> str:
    cfg = getattr(model, "config", None)
    return (f"attention={getattr(cfg, '_attn_implementation', '?')} "
            f"experts={getattr(cfg, '_experts_implementation', '-')} "
            f"quantized={getattr(getattr(model, 'get_base_model', lambda: model)(), 'is_loaded_in_4bit', False)}")


def build_unsloth(folder: Path, dtype, ckpt: bool, seed: int, four_bit: bool = False, max_seq_length: int = 2048):
    from unsloth import FastLanguageModel  # must come before transformers is imported

    model, _ = FastLanguageModel.from_pretrained(
        model_name=str(folder), max_seq_length=max_seq_length, dtype=dtype, load_in_4bit=four_bit,
        fix_tokenizer=False, use_gradient_checkpointing="unsloth" if ckpt else False,
    )
    return FastLanguageModel.get_peft_model(
        model, r=16, lora_alpha=32, lora_dropout=0, target_modules=DENSE_TARGETS, bias="none",
        use_gradient_checkpointing="unsloth" if ckpt else False, random_state=seed, max_seq_length=max_seq_length,
    )


def samples(kind: str, n: int) -> list[dict]:
    """`real`: the prepared conversations (assistant-only labels, variable lengths). `synthetic`: full 2048-token
    rows of random tokens, every token supervised, like ../shared/GPU-ANCHORS.md."""
    if kind == "real":
        return json.loads(SAMPLES.read_text())["samples"][:n]
    import random

    rng = random.Random(0)
    rows = []
    for _ in range(n):
        ids = [rng.randrange(100, 32000) for _ in range(2048)]
        rows.append({"input_ids": ids, "labels": list(ids)})
    return rows


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
        folder = make_weights(name, Path(args.weights_root), args.layers)
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
                for said in res.get("stderr_tail", []):  # what the worker was doing when it was stopped
                    print(f"    {said[:240]}", flush=True)
                (out / "speed.json").write_text(json.dumps({"ceiling_tflops": ceiling, "results": results,
                                                            "versions": versions()}, indent=1))
    table = render_table(results, ceiling)
    print(table)
    (out / "speed.md").write_text(table)


def run_worker(name, tool, ckpt, folder, args) -> dict:
    cmd = [sys.executable, __file__, "worker", "--model", name, "--tool", tool, "--ckpt", ckpt, "--weights",
           str(folder), "--steps", str(args.steps), "--warmup", str(args.warmup), "--seed", str(args.seed),
           "--cycle", str(args.cycle),
           "--data", args.data] + (["--profile"] if getattr(args, "profile", False) else [])
    if args.cmd == "maxlen":
        cmd[2] = "maxlen-worker"
        cmd += ["--cap-gib", str(args.cap_gib), "--lengths", args.lengths, "--step-limit", str(args.step_limit)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired as exc:
        # keep what the worker said it got through (the maxlen ladder prints each length that fit)
        said = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        done = [line for line in said.splitlines() if " fit (" in line]
        tail = said.splitlines()[-int(os.environ.get("SEEKTUNE_BENCH_TAIL", 12)):]
        return {"model": name, "tool": tool, "ckpt": ckpt, "error": f"timed out after {args.timeout} s",
                "stderr_tail": tail, **({"progress": done} if done else {})}
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


# ---- the longest sequence that trains ------------------------------------------------------------------------


def maxlen_worker(args) -> dict:
    """Climb a ladder of single-sequence lengths (batch 1) under a memory cap; one full training step each."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib * 2**30 / total))
    lengths = [int(x) for x in args.lengths.split(",")]
    if args.tool.startswith("unsloth"):
        model, packed = build_unsloth(Path(args.weights), dtype, True, args.seed, max_seq_length=max(lengths)), False
    else:
        model, packed = build(args.tool, Path(args.weights), dtype, device, True, args.seed)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, fused=device == "cuda")
    # One untimed step first: compilation (seektune, Unsloth) must not count against the step-time limit.
    row = samples("synthetic", 1)[0]["input_ids"]  # 2048 tokens, repeated to each length
    out = model(**collate([{"input_ids": row, "labels": row}], packed, device))
    out.loss.backward()
    opt.zero_grad(set_to_none=True)
    rows, fits, stopped = [], 0, "end of ladder"
    for n in lengths:
        ids = (row * (n // len(row) + 1))[:n]
        batch = collate([{"input_ids": ids, "labels": ids}], packed, device)
        t0 = time.perf_counter()
        try:
            out = model(**batch)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss = out.loss.item()
        except torch.OutOfMemoryError:
            del batch
            opt.zero_grad(set_to_none=True)
            stopped = f"out of memory at {n}"
            rows.append({"length": n, "fits": False})
            break
        took = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
        rows.append({"length": n, "fits": True, "seconds": round(took, 1), "peak_gib": round(peak, 2),
                     "loss": round(loss, 4)})
        fits = n
        print(f"{args.tool}: {n} tokens fit ({took:.1f} s, {peak:.1f} GiB)", file=sys.stderr, flush=True)
        if took > args.step_limit:
            stopped = f"step time above {args.step_limit} s at {n}"
            break
    return {"model": args.model, "tool": args.tool, "cap_gib": args.cap_gib, "longest": fits, "stopped": stopped,
            "ladder": rows}


def run_maxlen(args) -> None:
    out = Path(args.out or os.environ.get("OUT") or HERE / ".results")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.models.split(","):
        folder = make_weights(name, Path(args.weights_root), args.layers)
        for tool in args.tools.split(","):
            res = run_worker(name, tool, "on", folder, args)
            results.append(res)
            print(f"[{name} maxlen, {args.cap_gib:.0f} GiB] {tool}: "
                  f"{res.get('error') or str(res['longest']) + ' tokens (' + res['stopped'] + ')'}", flush=True)
            (out / "maxlen.json").write_text(json.dumps({"results": results, "versions": versions()}, indent=1))


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
    for name in ("run", "worker", "maxlen", "maxlen-worker"):
        q = sub.add_parser(name)
        q.add_argument("--steps", type=int, default=17)
        q.add_argument("--warmup", type=int, default=3)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--cycle", type=int, default=0,
                       help="go round this many batches (0: every step a new batch); with --warmup >= it, the "
                       "timed steps measure the steady state of compiled/graphed row lengths")
        q.add_argument("--data", choices=["real", "synthetic"], default="real")
        q.add_argument("--profile", action="store_true",
                       help="after the timed steps, profile two more and report the top GPU kernels")
        if name.startswith("maxlen"):
            q.add_argument("--cap-gib", type=float, default=80.0, help="GPU memory budget (an 80 GB card)")
            q.add_argument("--lengths", default="8192,16384,32768,49152,65536,98304,131072")
            q.add_argument("--step-limit", type=float, default=60.0,
                           help="stop climbing once one step takes longer than this (seconds)")
        if name in ("run", "maxlen"):
            q.add_argument("--models", default="qwen1.5b,llm7b")
            q.add_argument("--tools", default="hf,liger,seektune,unsloth")
            q.add_argument("--ckpt", default="on,off" if name == "run" else "on")
            q.add_argument("--weights-root", default="/tmp/seektune-bench-models")
            q.add_argument("--layers", type=int, default=0, help="override the layer count (quick profiles)")
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
    elif args.cmd == "maxlen":
        run_maxlen(args)
    elif args.cmd == "maxlen-worker":
        print("RESULT " + json.dumps(maxlen_worker(args)), flush=True)
    else:
        print("RESULT " + json.dumps(worker(args)), flush=True)


if __name__ == "__main__":
    main()
