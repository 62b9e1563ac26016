"""Can cuDNN's attention run seektune's packed rows? A probe for the GPU machine (one call, ~1 min).

Session 4 measured cuDNN's SDPA at 2.2x the varlen FlashAttention kernel that packed rows use today (bench/RESULTS.md),
but PyTorch's own varlen entry point has its cuDNN branch switched off. This calls the ATen ops directly on a packed
row (three samples of different lengths, causal, sample boundaries as cumulative lengths) and checks, against
per-sample SDPA:

  1. forward: `aten._cudnn_attention_forward` with cum_seq_q/cum_seq_k: shapes of output and log-sum-exp, max error;
  2. backward: `aten._cudnn_attention_backward` with the same boundaries: dq, dk, dv errors;
  3. a torch.library custom op around both (fake shapes from step 1), under torch.compile: same numbers, no graph break;
  4. time of forward+backward, cuDNN packed vs the varlen FlashAttention kernel, at the 7B and V2-Lite shapes.

Each step reports what went wrong instead of stopping the next. Prints one JSON object.

  python bench/cudnn_varlen_probe.py
"""

from __future__ import annotations

import itertools
import json
import time
import traceback


def packed(lengths, heads, dim_qk, dim_v, device, seed=0):
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    total = sum(lengths)
    q, k = (torch.randn(total, heads, dim_qk, device=device, dtype=torch.bfloat16, generator=g) for _ in range(2))
    v = torch.randn(total, heads, dim_v, device=device, dtype=torch.bfloat16, generator=g)
    cu = torch.tensor([0, *itertools.accumulate(lengths)], device=device, dtype=torch.int32)
    return q, k, v, cu


def reference(q, k, v, cu, scale):
    """Per-sample causal SDPA in fp32: (tokens, heads, dim_v)."""
    import torch

    outs = []
    bounds = cu.tolist()
    for a, b in zip(bounds, bounds[1:]):
        qs, ks, vs = (t[a:b].transpose(0, 1).float() for t in (q, k, v))
        outs.append(torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale)
                    .transpose(0, 1))
    return torch.cat(outs)


def cudnn_forward(q, k, v, cu, max_len, scale):
    import torch

    res = torch.ops.aten._cudnn_attention_forward(q, k, v, None, cu, cu, max_len, max_len, True, 0.0, True, False,
                                                  scale=scale)
    return res[0], res[1], res[6], res[7]  # output, logsumexp, philox seed, philox offset


def cudnn_backward(go, q, k, v, out, lse, seed, offset, cu, max_len, scale):
    import torch

    empty = torch.empty(0, device=q.device)
    return torch.ops.aten._cudnn_attention_backward(go, q, k, v, out, lse, seed, offset, empty, cu, cu, max_len,
                                                    max_len, 0.0, True, scale=scale)


def err(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6))


def main() -> None:
    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "needs a CUDA GPU (cuDNN attention)"}))
        return
    report: dict = {"torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
                    "device": torch.cuda.get_device_name()}
    dev = "cuda"
    lengths, heads, dqk, dv = [700, 1000, 348], 32, 128, 128
    scale = dqk ** -0.5
    q, k, v, cu = packed(lengths, heads, dqk, dv, dev)
    max_len = max(lengths)
    qr, kr, vr = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    ref = reference(qr, kr, vr, cu, scale)
    go = torch.randn_like(ref)
    ref.backward(go)

    try:
        out, lse, seed, offset = cudnn_forward(q, k, v, cu, max_len, scale)
        report["forward"] = {"out_shape": list(out.shape), "out_stride": list(out.stride()),
                             "lse_shape": list(lse.shape), "lse_dtype": str(lse.dtype),
                             "seed": [list(seed.shape), str(seed.dtype)], "offset": [list(offset.shape), str(offset.dtype)],
                             "max_rel_err": err(out, ref)}
    except Exception:
        report["forward"] = {"error": traceback.format_exc(limit=3)[-1500:]}
        print(json.dumps(report, indent=1))
        return

    try:
        dq, dk, dvv = cudnn_backward(go.to(q.dtype), q, k, v, out, lse, seed, offset, cu, max_len, scale)
        report["backward"] = {"dq": err(dq, qr.grad), "dk": err(dk, kr.grad), "dv": err(dvv, vr.grad)}
    except Exception:
        report["backward"] = {"error": traceback.format_exc(limit=3)[-1500:]}

    try:
        report["custom_op"] = custom_op_check(q, k, v, cu, max_len, scale, ref, go, (qr.grad, kr.grad, vr.grad),
                                              list(lse.shape), lse.dtype, (tuple(seed.shape), seed.dtype),
                                              (tuple(offset.shape), offset.dtype))
    except Exception:
        report["custom_op"] = {"error": traceback.format_exc(limit=3)[-1500:]}

    try:
        report["timing_ms"] = timings()
    except Exception:
        report["timing_ms"] = {"error": traceback.format_exc(limit=3)[-1500:]}
    print(json.dumps(report, indent=1))


def define_op(lse_shape_of, lse_dtype, seed_meta, offset_meta):
    """seektune_probe::cudnn_varlen: (q, k, v, cu, max_len, scale) -> (out, lse), with autograd."""
    import torch

    @torch.library.custom_op("seektune_probe::cudnn_varlen", mutates_args=())
    def op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int,
           scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out, lse, seed, offset = cudnn_forward(q, k, v, cu, max_len, scale)
        return out, lse, seed, offset

    @op.register_fake
    def _(q, k, v, cu, max_len, scale):
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        return (out, q.new_empty(lse_shape_of(q), dtype=lse_dtype), q.new_empty(seed_meta[0], dtype=seed_meta[1]),
                q.new_empty(offset_meta[0], dtype=offset_meta[1]))

    def setup(ctx, inputs, output):
        q, k, v, cu, max_len, scale = inputs
        out, lse, seed, offset = output
        ctx.save_for_backward(q, k, v, cu, out, lse, seed, offset)
        ctx.max_len, ctx.scale = max_len, scale

    def backward(ctx, g_out, g_lse, g_seed, g_offset):
        q, k, v, cu, out, lse, seed, offset = ctx.saved_tensors
        dq, dk, dv = cudnn_backward(g_out.contiguous(), q, k, v, out, lse, seed, offset, cu, ctx.max_len, ctx.scale)
        return dq, dk, dv, None, None, None

    op.register_autograd(backward, setup_context=setup)
    return op


def custom_op_check(q, k, v, cu, max_len, scale, ref, go, ref_grads, lse_shape, lse_dtype, seed_meta,
                    offset_meta) -> dict:
    import torch
    import torch._dynamo.utils as dynamo_utils

    # The log-sum-exp's shape as a function of q's, from what step 1 returned: (H, T), (T, H) or (T, H, 1).
    t, h = q.shape[0], q.shape[1]
    layout = {(h, t): lambda x: (x.shape[1], x.shape[0]), (t, h): lambda x: (x.shape[0], x.shape[1]),
              (t, h, 1): lambda x: (x.shape[0], x.shape[1], 1), (1, h, t): lambda x: (1, x.shape[1], x.shape[0])}
    shape_of = layout.get(tuple(lse_shape))
    if shape_of is None:
        return {"error": f"unexpected log-sum-exp shape {lse_shape}"}
    op = define_op(shape_of, lse_dtype, seed_meta, offset_meta)

    def attn(q, k, v):
        return op(q, k, v, cu, max_len, scale)[0]

    result = {}
    for name, fn in (("eager", attn), ("compiled", torch.compile(attn, dynamic=True))):
        qs, ks, vs = (x.detach().clone().requires_grad_(True) for x in (q, k, v))
        dynamo_utils.counters.clear()
        out = fn(qs, ks, vs)
        out.backward(go.to(out.dtype))
        result[name] = {"out": err(out, ref), "dq": err(qs.grad, ref_grads[0]), "dk": err(ks.grad, ref_grads[1]),
                        "dv": err(vs.grad, ref_grads[2]), "graph_breaks": sum(dynamo_utils.counters["graph_break"].values())}
    return result


def timings() -> dict:
    """Forward+backward, ms, cuDNN packed vs varlen FlashAttention, two samples of 2048 (7B) and MLA widths."""
    import torch
    from torch.nn.attention.varlen import varlen_attn

    rows = {}
    for name, heads, dqk, dv in (("7B 2x2048 h32 d128", 32, 128, 128), ("V2-Lite 2x2048 h16 d192/128", 16, 192, 128)):
        q, k, v, cu = packed([2048, 2048], heads, dqk, dv, "cuda", seed=1)
        scale = dqk ** -0.5
        go = torch.randn(q.shape[0], heads, dv, device="cuda", dtype=torch.bfloat16)

        def cudnn():
            out, lse, seed, offset = cudnn_forward(q, k, v, cu, 2048, scale)
            cudnn_backward(go, q, k, v, out, lse, seed, offset, cu, 2048, scale)

        v_pad = torch.nn.functional.pad(v, (0, dqk - dv)) if dv != dqk else v  # FlashAttention needs one width
        qs, ks, vs = (x.detach().clone().requires_grad_(True) for x in (q, k, v_pad))
        go_pad = torch.nn.functional.pad(go, (0, dqk - dv)) if dv != dqk else go

        def flash():
            try:
                out = varlen_attn(qs, ks, vs, cu, cu, 2048, 2048, is_causal=True)
            except TypeError:  # later torch: causal is a (-1, 0) window
                out = varlen_attn(qs, ks, vs, cu, cu, 2048, 2048, window_size=(-1, 0))
            out.backward(go_pad)

        row = {}
        for label, fn in (("cudnn_packed", cudnn), ("varlen_flash", flash)):
            try:
                for _ in range(3):
                    fn()
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(20):
                    fn()
                torch.cuda.synchronize()
                row[label] = round((time.perf_counter() - t0) / 20 * 1e3, 3)
            except Exception as e:
                row[label] = f"error: {e!r}"[:300]
        rows[name] = row
    return rows


if __name__ == "__main__":
    main()
