"""Causal attention forward+backward time per kernel on one GPU, for the shapes the speed benchmark trains:
PyTorch's FlashAttention varlen kernel (what seektune's packed rows use) next to SDPA's backends on the same
equal-length batch. Tells whether another kernel would pay before anything is switched.

  python bench/attention_kernels.py            # on the GPU machine; prints one line per shape and kernel
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

SHAPES = {  # (batch, heads, seq, qk dim, v dim)
    "llm7b": (2, 32, 2048, 128, 128),
    "qwen1.5b": (4, 12, 2048, 128, 128),
    "v2lite-mla": (2, 16, 2048, 192, 128),
}


def timed(fn, reps: int = 20) -> float:
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def main() -> None:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from seektune.training.speed import _causal_kwargs, torch_varlen_attn

    varlen = torch_varlen_attn()
    rows = []
    for name, (b, h, s, dqk, dv) in SHAPES.items():
        q, k = (torch.randn(b, h, s, dqk, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
        v = torch.randn(b, h, s, dv, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        flops = 4 * b * h * s * s * (dqk + dv) / 2 / 2 * 3.5  # causal; backward ~2.5x forward

        def sdpa(backend):
            def step():
                with sdpa_kernel(backend):
                    F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
            return step

        def packed():
            cu = torch.arange(0, (b + 1) * s, s, device="cuda", dtype=torch.int32)
            qq, kk = (t.transpose(1, 2).reshape(b * s, h, dqk) for t in (q, k))
            vv = v.transpose(1, 2).reshape(b * s, h, dv)
            if dv != dqk:
                vv = F.pad(vv, (0, dqk - dv))
            varlen(qq, kk, vv, cu, cu, s, s, **dict(_causal_kwargs(varlen)))[..., :dv].sum().backward()

        kernels = {"varlen (seektune)": packed, "sdpa flash": sdpa(SDPBackend.FLASH_ATTENTION),
                   "sdpa cudnn": sdpa(SDPBackend.CUDNN_ATTENTION),
                   "sdpa efficient": sdpa(SDPBackend.EFFICIENT_ATTENTION),
                   "sdpa default": sdpa([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                                         SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])}
        for kname, fn in kernels.items():
            try:
                ms = timed(fn)
                rows.append({"shape": name, "kernel": kname, "ms": round(ms, 3), "tflops": round(flops / ms / 1e9, 1)})
            except Exception as e:  # a backend that refuses this shape
                rows.append({"shape": name, "kernel": kname, "error": repr(e)[:160]})
            print(json.dumps(rows[-1]), flush=True)
    print("RESULT " + json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "rows": rows}))


if __name__ == "__main__":
    main()
