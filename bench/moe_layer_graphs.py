"""Is a CUDA graph the cure for the MoE step's host time? One DeepSeek-V2-Lite MoE decoder layer with seektune's
LoRA (one-node linears and MLPs), on one packed row of ~1 900 tokens like the training benchmark's steps, forward +
backward (input and LoRA gradients) timed four ways in one process:

  eager          the layer as PyTorch runs it
  compiled       torch.compile(dynamic=True), as seektune's fast path does today
  graphed        the eager layer captured by torch.cuda.make_graphed_callables (one replay per pass)
  graphed+comp   the compiled layer captured the same way

The GPU time of a pass is the same in every variant up to fusion; what differs is the host's time between kernels.
Session 5's traces put the MoE step at ~4.8 ms of GPU work per layer against ~7.6 ms of host work, so a graph that
removes the host work would make the step GPU-bound. Prints one JSON object: ms per forward+backward (median of
timed loops without synchronisation inside, i.e. the throughput a training loop sees), and the largest gradient
difference of each variant against eager.

  python bench/moe_layer_graphs.py            # on the GPU machine; on a CPU only eager and compiled run
  python bench/moe_layer_graphs.py --kernels  # instead: where the GPU time of one pass goes, eager and compiled

With --kernels the JSON holds, for eager and compiled code, the GPU time of one forward+backward pass summed by
kind of kernel (GEMMs, grouped GEMMs, attention, Triton-fused, element-wise, copies, routing) and the heaviest
kernels by name. A graph of the eager code runs the eager kernels, so its GPU time is the eager column's total.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

LENGTHS = [1100, 800]  # one packed row, two samples: about one training step of the V2-Lite benchmark


def build(device: str, dtype, width: dict | None = None):
    """(MoE decoder layer with fused LoRA, rotary module) from a 2-layer V2-Lite-shaped model (layer 1 is MoE)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    import train_speed
    from seektune.adapters.lora import attach_lora
    from seektune.config import LoraSection, TrainSection
    from seektune.training.lora_fused import fuse_lora_linears, fuse_lora_mlps
    from seektune.training.speed import decide, prepare_model_for_fast_path

    spec = dict(train_speed.MODELS["v2lite"])
    spec.pop("batch")
    model_type = spec.pop("model_type")
    spec.update(num_hidden_layers=2, **(width or {}))
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **spec), dtype=dtype)
    model.config.use_cache = False
    prepare_model_for_fast_path(model, decide(TrainSection(fused_loss=False), model.config, device))
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("grouped_mm")
    model = attach_lora(model, LoraSection(r=16, alpha=32, dropout=0.0, targets=train_speed.lora_targets(model.config)))
    fuse_lora_linears(model)
    fuse_lora_mlps(model)
    inner = model.base_model.model.model
    return inner.layers[1].train(), inner.rotary_emb


class PackedLayer(torch.nn.Module):
    """The decoder layer as a function of tensors only (what CUDA-graph capture needs); the packed row's boundaries
    are fixed buffers."""

    def __init__(self, layer, lengths: list[int], device: str):
        super().__init__()
        self.layer = layer
        self.position_ids = torch.cat([torch.arange(n) for n in lengths])[None].to(device)
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
        self.kwargs = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(lengths), max_length_k=max(lengths))

    def forward(self, hidden, *rotary):
        # DeepSeek-V2's rotary embedding is one complex tensor; Llama-style ones are (cos, sin)
        position_embeddings = rotary[0] if len(rotary) == 1 else tuple(rotary)
        out = self.layer(hidden, attention_mask=None, position_ids=self.position_ids,
                         position_embeddings=position_embeddings, **self.kwargs)
        return out[0] if isinstance(out, tuple) else out


def lora_params(module):
    return [p for p in module.parameters() if p.requires_grad]


def timed(fn, hidden, go, iters: int, sync) -> float:
    """ms per forward+backward: loops of `iters` passes, synchronised only at each loop's ends."""
    samples = []
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn(hidden).backward(go)
        sync()
        samples.append((time.perf_counter() - t0) / iters * 1e3)
    return round(statistics.median(samples), 3)


KINDS = (  # first match wins; names as cuBLAS, CUTLASS, FlashAttention, Inductor and ATen give them
    ("grouped_gemm", ("grouped", "group_gemm", "_mm_grouped")),
    ("gemm", ("gemm", "nvjet", "cutlass", "sm90_xmma", "wgmma", "cublas", "splitk")),
    ("attention", ("flash", "fmha", "attention")),
    ("triton_fused", ("triton_",)),
    ("copy", ("copy", "memcpy", "memset", "cat", "transpose")),
    ("routing", ("sort", "topk", "scatter", "gather", "index", "histc", "bincount", "cumsum", "nonzero", "argsort")),
    ("reduce", ("reduce", "softmax", "norm")),
    ("elementwise", ("elementwise", "vectorized", "unrolled")),
)


def kernel_breakdown(fn, hidden, go, passes: int = 5) -> dict:
    """GPU microseconds of one forward+backward pass, by kind of kernel, and the 12 heaviest kernels."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(passes):
            fn(hidden).backward(go)
        torch.cuda.synchronize()
    by_name: dict[str, float] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            by_name[event.name] = by_name.get(event.name, 0.0) + event.time_range.elapsed_us() / passes
    kinds: dict[str, float] = {}
    for name, us in by_name.items():
        low = name.lower()
        kind = next((k for k, keys in KINDS if any(key in low for key in keys)), "other")
        kinds[kind] = kinds.get(kind, 0.0) + us
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
    return {"total_us": round(sum(by_name.values()), 1), "kernels": len(by_name),
            "by_kind_us": {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "top_us": {name[:120]: round(us, 1) for name, us in top}}


def main() -> None:

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    width = None if cuda else dict(hidden_size=64, intermediate_size=128, moe_intermediate_size=32, kv_lora_rank=16,
                                   qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, num_attention_heads=4,
                                   num_key_value_heads=4, vocab_size=512)
    lengths = LENGTHS if cuda else [40, 24]
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    layer, rotary = build(device, dtype, width)
    packed = PackedLayer(layer, lengths, device)
    hidden_size = layer.input_layernorm.weight.shape[0]
    g = torch.Generator(device=device).manual_seed(0)
    hidden = (torch.randn(1, sum(lengths), hidden_size, device=device, dtype=dtype, generator=g) * 0.5).requires_grad_()
    go = torch.randn(1, sum(lengths), hidden_size, device=device, dtype=dtype, generator=g)
    rot = rotary(hidden, packed.position_ids)
    rot = tuple(t.detach() for t in (rot if isinstance(rot, tuple) else (rot,)))
    report = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
              "tokens": sum(lengths), "lora_parameters": sum(p.numel() for p in lora_params(layer)), "ms": {},
              "max_grad_diff_vs_eager": {}}

    def grads_of(fn):
        hidden.grad = None
        for p in lora_params(layer):
            p.grad = None
        fn(hidden).backward(go)
        return [hidden.grad.clone()] + [p.grad.clone() for p in lora_params(layer)]

    def eager(h):
        return packed(h, *rot)

    reference = grads_of(eager)
    variants = {"eager": lambda: eager}

    def compiled_fn():
        fn = torch.compile(packed, dynamic=True)
        return lambda h: fn(h, *rot)

    variants["compiled"] = compiled_fn
    if "--kernels" in sys.argv:
        for name in ("eager", "compiled"):
            try:
                fn = variants[name]()
                for _ in range(3):
                    fn(hidden).backward(go)
                report["ms"][name] = kernel_breakdown(fn, hidden, go) if cuda else "needs a GPU"
            except Exception:
                report["ms"][name] = "error: " + traceback.format_exc(limit=4)[-1200:]
            print(f"{name}: {report['ms'][name]}", file=sys.stderr, flush=True)
        print(json.dumps(report, indent=1))
        return
    if cuda:
        def graphed(compile_first: bool):
            def make():
                module = torch.compile(packed, dynamic=False) if compile_first else packed
                if compile_first:  # compile outside the capture
                    for _ in range(3):
                        module(hidden, *rot).backward(go)
                sample = (hidden.detach().clone().requires_grad_(), *rot)
                graph = torch.cuda.make_graphed_callables(packed if not compile_first else _Wrapped(module, packed),
                                                          sample, allow_unused_input=True)
                return lambda h: graph(h, *rot)
            return make

        variants["graphed"] = graphed(False)
        variants["graphed+comp"] = graphed(True)
    for name, make in variants.items():
        try:
            fn = make()
            for _ in range(3):  # warm-up (and compilation)
                fn(hidden).backward(go)
            got = grads_of(fn)
            report["max_grad_diff_vs_eager"][name] = max(
                float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))
                for a, b in zip(got, reference))
            report["ms"][name] = timed(fn, hidden, go, 20 if cuda else 3, sync)
        except Exception:
            report["ms"][name] = "error: " + traceback.format_exc(limit=4)[-1200:]
        print(f"{name}: {report['ms'][name]}", file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


class _Wrapped(torch.nn.Module):
    """A compiled module for make_graphed_callables: the compiled call, with the original's parameters registered."""

    def __init__(self, compiled, original):
        super().__init__()
        self.original = original
        self._compiled = [compiled]  # a list, so the compiled wrapper is not registered as a second submodule

    def forward(self, *args):
        return self._compiled[0](*args)


if __name__ == "__main__":
    main()
