"""Can cuDNN's attention run seektune's packed rows? A probe for the GPU machine (one call, ~2 min).

Session 4 measured cuDNN's SDPA at 2.2x the varlen FlashAttention kernel that packed rows use today (bench/RESULTS.md),
but PyTorch's own varlen entry point has its cuDNN branch switched off. This calls the ATen ops directly on a packed
row (three samples of different lengths, causal, sample boundaries as cumulative lengths) and checks, against
per-sample SDPA:

  1. forward: `aten._cudnn_attention_forward` with cum_seq_q/cum_seq_k: shapes of output and log-sum-exp, max error
     of both;
  2. backward: `aten._cudnn_attention_backward` with the same boundaries: dq, dk, dv errors, for each way of calling
     it in BACKWARD_VARIANTS, on a row whose samples are no longer than the head dim; then, with the first variant
     that is right, on the long row in a child process;
  3. a torch.library custom op around both (fake shapes from step 1, the backward an op of its own), using that
     variant, under torch.compile: same numbers, no graph break (long row if step 2's child was right, else short);
  4. time of forward+backward, cuDNN packed (each row in a child process) vs the varlen FlashAttention kernel, at the
     7B and V2-Lite widths, with two samples of 2048 and with 32 samples of 128.

Why the short row and the child processes: torch 2.11's varlen backward (attention_backward.cu) sizes cuDNN's graph
with `query.size(2)` and `key.size(2)` as the longest sample, which on a packed (tokens, heads, dim) row is the head
dim; the max_q/max_k it is given go unused (pytorch/pytorch PR 186142). A sample longer than the head dim then, per
that PR, walks past cuDNN's dQ buffer (an illegal address: it poisons the whole CUDA context), so only a child
risks it.

Each step reports what went wrong instead of stopping the next. Prints one JSON object.

  python bench/cudnn_varlen_probe.py
"""

import itertools
import json
import math
import os
import subprocess
import sys
import time
import traceback

LONG = [700, 1000, 348]  # the packed row of steps 1-3
SHORT = [96, 128, 40]  # every sample no longer than the head dim (128): what torch 2.11's backward sizes for
HEADS, DQK, DV = 32, 128, 128
TOL = 0.05  # a right answer in bf16 is ~0.01 (the forward's was 0.0025)

# Ways to call the backward, tried in this order on the short row; the first right one is used from then on.
#   bias_none: no bias as None, which reaches C++ as an undefined tensor. The varlen branch of
#     _cudnn_attention_backward takes any *defined* attn_bias as a bias to expand and reads its size(1) before its
#     4-D check: the empty tensor passed at first gave "Dimension out of range ... got 1".
#   bias_none_lse_th: the same with the log-sum-exp as (tokens, heads); cuDNN's nested graph reads it only through
#     its pointer, token-major, so this should be the same numbers.
#   bias_none_lse_ht: (heads, tokens), FlashAttention's layout; expected wrong (a control for the layout).
#   bias_empty: the first call, kept to show its error.
BACKWARD_VARIANTS = ("bias_none", "bias_none_lse_th", "bias_none_lse_ht", "bias_empty")

# (name, lengths, heads, dim q/k, dim v). The 32x128 rows stay within what torch 2.11's backward handles.
TIMING_ROWS = (("7B 2x2048 h32 d128", [2048, 2048], 32, 128, 128),
               ("V2-Lite 2x2048 h16 d192/128", [2048, 2048], 16, 192, 128),
               ("7B 32x128 h32 d128", [128] * 32, 32, 128, 128),
               ("V2-Lite 32x128 h16 d192/128", [128] * 32, 16, 192, 128))


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


def reference_lse(q, k, cu, scale):
    """Per-sample causal log-sum-exp of the scaled scores in fp32, natural log: (tokens, heads)."""
    import torch

    outs = []
    bounds = cu.tolist()
    for a, b in zip(bounds, bounds[1:]):
        s = torch.einsum("qhd,khd->hqk", q[a:b].float(), k[a:b].float()) * scale
        s = s.masked_fill(torch.ones(b - a, b - a, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        outs.append(s.logsumexp(-1).t())
    return torch.cat(outs)


class Case:
    """A packed row with its fp32 reference output and gradients."""

    def __init__(self, lengths, seed=0):
        import torch

        self.lengths, self.max_len, self.scale = lengths, max(lengths), DQK ** -0.5
        self.q, self.k, self.v, self.cu = packed(lengths, HEADS, DQK, DV, "cuda", seed)
        qr, kr, vr = (t.detach().clone().requires_grad_(True) for t in (self.q, self.k, self.v))
        self.ref = reference(qr, kr, vr, self.cu, self.scale)
        self.go = torch.randn_like(self.ref)
        self.ref.backward(self.go)
        self.ref = self.ref.detach()
        self.grads = (qr.grad, kr.grad, vr.grad)


def cudnn_forward(q, k, v, cu, max_len, scale):
    import torch

    res = torch.ops.aten._cudnn_attention_forward(q, k, v, None, cu, cu, max_len, max_len, True, 0.0, True, False,
                                                  scale=scale)
    return res[0], res[1], res[6], res[7]  # output, logsumexp, philox seed, philox offset


def cudnn_backward(go, q, k, v, out, lse, seed, offset, cu, max_len, scale, variant="bias_none"):
    """-> (dq, dk, dv); `variant` is one of BACKWARD_VARIANTS."""
    import torch

    bias = torch.empty(0, device=q.device) if variant == "bias_empty" else None
    t, h = q.shape[0], q.shape[1]
    if variant == "bias_none_lse_th":
        lse = lse.reshape(t, h)
    elif variant == "bias_none_lse_ht":
        lse = lse.reshape(t, h).t().contiguous()
    return torch.ops.aten._cudnn_attention_backward(go, q, k, v, out, lse, seed, offset, bias, cu, cu, max_len,
                                                    max_len, 0.0, True, scale=scale)


def err(a, b) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))


def layout_of(lse_shape, q):
    """The log-sum-exp's shape in words, e.g. "T,H,1" (tokens, heads), or None if it is none of those expected."""
    t, h = q.shape[0], q.shape[1]
    names = {(h, t): "H,T", (t, h): "T,H", (t, h, 1): "T,H,1", (1, h, t): "1,H,T"}
    return names.get(tuple(lse_shape))


def lse_check(lse, lse_layout, case) -> dict:
    """Max abs error of the forward's log-sum-exp against the per-sample one, natural log and log2 (the stats of
    some cuDNN engines): which one the numbers match, and that the layout is read right."""
    t, h = case.q.shape[0], case.q.shape[1]
    lse_th = lse.reshape(t, h) if lse_layout in ("T,H", "T,H,1") else lse.reshape(h, t).t()
    lse_ref = reference_lse(case.q, case.k, case.cu, case.scale)
    return {"lse_max_abs_err": float((lse_th - lse_ref).abs().max()),
            "lse_max_abs_err_if_log2": float((lse_th - lse_ref / math.log(2)).abs().max())}


def grad_errors(grads, ref_grads) -> dict:
    return {name: err(g, r) for name, g, r in zip(("dq", "dk", "dv"), grads, ref_grads)}


def right(errors: dict) -> bool:
    return all(e < TOL for e in errors.values())  # NaN compares False: not right


def backward_check(case, variant) -> dict:
    import torch

    out, lse, seed, offset = cudnn_forward(case.q, case.k, case.v, case.cu, case.max_len, case.scale)
    grads = cudnn_backward(case.go.to(case.q.dtype), case.q, case.k, case.v, out, lse, seed, offset, case.cu,
                           case.max_len, case.scale, variant)
    torch.cuda.synchronize()
    return grad_errors(grads, case.grads)


def child(spec: dict, timeout=180) -> dict:
    """Runs one part of the probe in a fresh process: a CUDA fault there cannot end this one."""
    env = dict(os.environ)
    if spec["part"] == "backward":
        env["CUDA_LAUNCH_BLOCKING"] = "1"  # a fault surfaces at the op that made it
    try:
        res = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                             capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"child timed out after {timeout} s"}
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    return {"error": f"child exited {res.returncode} with no result", "stderr_tail": res.stderr[-1500:]}


def child_main(spec: dict) -> None:
    try:
        if spec["part"] == "backward":
            errors = backward_check(Case(spec["lengths"]), spec["variant"])
            result = {**errors, "right": right(errors)}
        else:
            result = {"ms": time_one(spec["row"], spec["label"], spec["variant"])}
    except Exception:
        result = {"error": traceback.format_exc(limit=3)[-1500:]}
    print(json.dumps(result), flush=True)


def main() -> None:
    import torch

    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child_main(json.loads(sys.argv[2]))
        return
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "needs a CUDA GPU (cuDNN attention)"}))
        return
    report: dict = {"torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
                    "device": torch.cuda.get_device_name()}
    long_case, short_case = Case(LONG), Case(SHORT)

    try:
        case = long_case
        out, lse, seed, offset = cudnn_forward(case.q, case.k, case.v, case.cu, case.max_len, case.scale)
        report["forward"] = {"out_shape": list(out.shape), "out_stride": list(out.stride()),
                             "lse_shape": list(lse.shape), "lse_stride": list(lse.stride()),
                             "lse_dtype": str(lse.dtype),
                             "seed": [list(seed.shape), str(seed.dtype)], "offset": [list(offset.shape), str(offset.dtype)],
                             "max_rel_err": err(out, case.ref)}
        lse_layout = layout_of(lse.shape, case.q)
        report["forward"]["lse_layout"] = lse_layout
    except Exception:
        report["forward"] = {"error": traceback.format_exc(limit=3)[-1500:]}
        print(json.dumps(report, indent=1))
        return
    try:
        report["forward"].update(lse_check(lse, lse_layout, case))
        report["forward"]["short_row_max_rel_err"] = err(
            cudnn_forward(short_case.q, short_case.k, short_case.v, short_case.cu, short_case.max_len,
                          short_case.scale)[0], short_case.ref)
    except Exception:
        report["forward"]["checks_error"] = traceback.format_exc(limit=3)[-1500:]

    variants, variant = {}, None
    for name in BACKWARD_VARIANTS:
        try:
            errors = backward_check(short_case, name)
            variants[name] = {**errors, "right": right(errors)}
            variant = variant or (name if right(errors) else None)
        except Exception:
            variants[name] = {"error": traceback.format_exc(limit=3)[-1500:]}
    report["backward"] = {"short_row": SHORT, "variants": variants, "variant": variant}
    long_right = False
    if variant is not None:
        report["backward"]["long_row"] = {"lengths": LONG, **child({"part": "backward", "lengths": LONG,
                                                                    "variant": variant})}
        long_right = bool(report["backward"]["long_row"].get("right"))

    if variant is None:
        report["custom_op"] = {"skipped": "no backward variant was right"}
    else:
        case = long_case if long_right else short_case
        try:
            report["custom_op"] = {"row": case.lengths,
                                   **custom_op_check(case, lse_layout, lse.dtype, (tuple(seed.shape), seed.dtype),
                                                     (tuple(offset.shape), offset.dtype), variant)}
        except Exception:
            report["custom_op"] = {"error": traceback.format_exc(limit=3)[-1500:]}

    try:
        report["timing_ms"] = timings(variant)
    except Exception:
        report["timing_ms"] = {"error": traceback.format_exc(limit=3)[-1500:]}
    print(json.dumps(report, indent=1))


def define_op(lse_shape_of, lse_dtype, seed_meta, offset_meta, variant):
    """seektune_probe::cudnn_varlen: (q, k, v, cu, max_len, scale) -> (out, lse, seed, offset), with autograd
    through seektune_probe::cudnn_varlen_backward, which calls the backward the way `variant` says."""
    import torch

    @torch.library.custom_op("seektune_probe::cudnn_varlen", mutates_args=())
    def op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int,
           scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out, lse, seed, offset = cudnn_forward(q, k, v, cu, max_len, scale)
        return out, lse, seed.clone(), offset.clone()  # a custom op's outputs may not alias one another

    @op.register_fake
    def _(q, k, v, cu, max_len, scale):
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        return (out, q.new_empty(lse_shape_of(q), dtype=lse_dtype), q.new_empty(seed_meta[0], dtype=seed_meta[1]),
                q.new_empty(offset_meta[0], dtype=offset_meta[1]))

    # An op of its own, as torch's varlen_attn has for its backward: torch.compile traces the backward with fake
    # tensors of symbolic shape, and aten._cudnn_attention_backward has no fake (meta) kernel, which FakeTensor's
    # fallback to the real kernel refuses for symbolic shapes.
    @torch.library.custom_op("seektune_probe::cudnn_varlen_backward", mutates_args=())
    def op_backward(go: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                    lse: torch.Tensor, seed: torch.Tensor, offset: torch.Tensor, cu: torch.Tensor, max_len: int,
                    scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dq, dk, dv = cudnn_backward(go, q, k, v, out, lse, seed, offset, cu, max_len, scale, variant)
        return dq, dk, dv

    @op_backward.register_fake
    def _(go, q, k, v, out, lse, seed, offset, cu, max_len, scale):
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    def setup(ctx, inputs, output):
        q, k, v, cu, max_len, scale = inputs
        out, lse, seed, offset = output
        ctx.save_for_backward(q, k, v, cu, out, lse, seed, offset)
        ctx.max_len, ctx.scale = max_len, scale

    def backward(ctx, g_out, g_lse, g_seed, g_offset):
        q, k, v, cu, out, lse, seed, offset = ctx.saved_tensors
        dq, dk, dv = op_backward(g_out.contiguous(), q, k, v, out, lse, seed, offset, cu, ctx.max_len, ctx.scale)
        return dq, dk, dv, None, None, None

    op.register_autograd(backward, setup_context=setup)
    return op


def custom_op_check(case, lse_layout, lse_dtype, seed_meta, offset_meta, variant) -> dict:
    import torch
    import torch._dynamo.utils as dynamo_utils

    # The log-sum-exp's shape as a function of q's, from the layout step 1 returned.
    shape_of = {"H,T": lambda x: (x.shape[1], x.shape[0]), "T,H": lambda x: (x.shape[0], x.shape[1]),
                "T,H,1": lambda x: (x.shape[0], x.shape[1], 1), "1,H,T": lambda x: (1, x.shape[1], x.shape[0])
                }.get(lse_layout)
    if shape_of is None:
        return {"error": f"unexpected log-sum-exp layout {lse_layout}"}
    op = define_op(shape_of, lse_dtype, seed_meta, offset_meta, variant)
    cu, max_len, scale = case.cu, case.max_len, case.scale

    def attn(q, k, v):
        return op(q, k, v, cu, max_len, scale)[0]

    result = {}
    for name, fn in (("eager", attn), ("compiled", torch.compile(attn, dynamic=True))):
        qs, ks, vs = (x.detach().clone().requires_grad_(True) for x in (case.q, case.k, case.v))
        dynamo_utils.counters.clear()
        out = fn(qs, ks, vs)
        out.backward(case.go.to(out.dtype))
        result[name] = {"out": err(out, case.ref), **grad_errors((qs.grad, ks.grad, vs.grad), case.grads),
                        "graph_breaks": sum(dynamo_utils.counters["graph_break"].values())}
    return result


def varlen_flash(q, k, v, cu, max_len, go):
    """-> fn() running torch's varlen FlashAttention forward+backward as seektune does (v padded to d_qk)."""
    import torch
    from torch.nn.attention.varlen import varlen_attn

    dqk, dv = q.shape[-1], v.shape[-1]
    v_pad = torch.nn.functional.pad(v, (0, dqk - dv)) if dv != dqk else v  # FlashAttention needs one width
    qs, ks, vs = (x.detach().clone().requires_grad_(True) for x in (q, k, v_pad))
    go_pad = torch.nn.functional.pad(go, (0, dqk - dv)) if dv != dqk else go

    def flash():
        try:
            out = varlen_attn(qs, ks, vs, cu, cu, max_len, max_len, is_causal=True)
        except TypeError:  # later torch: causal is a (-1, 0) window
            out = varlen_attn(qs, ks, vs, cu, cu, max_len, max_len, window_size=(-1, 0))
        out.backward(go_pad)

    return flash


def time_one(row_name, label, variant):
    """Forward+backward of one TIMING_ROWS row, ms, or the error as a string."""
    import torch
    name, lengths, heads, dqk, dv = next(r for r in TIMING_ROWS if r[0] == row_name)
    q, k, v, cu = packed(lengths, heads, dqk, dv, "cuda", seed=1)
    max_len, scale = max(lengths), dqk ** -0.5
    go = torch.randn(q.shape[0], heads, dv, device="cuda", dtype=torch.bfloat16)

    def cudnn():
        out, lse, seed, offset = cudnn_forward(q, k, v, cu, max_len, scale)
        cudnn_backward(go, q, k, v, out, lse, seed, offset, cu, max_len, scale, variant)

    fn = {"cudnn_packed": cudnn, "varlen_flash": varlen_flash(q, k, v, cu, max_len, go)}[label]
    try:
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        return round((time.perf_counter() - t0) / 20 * 1e3, 3)
    except Exception as e:
        return f"error: {e!r}"[:300]


def timings(variant) -> dict:
    """Forward+backward, ms, cuDNN packed (in a child process each: a long sample can fault, see the module's
    docstring) vs varlen FlashAttention (here), for each of TIMING_ROWS."""
    rows = {}
    for name, *_ in TIMING_ROWS:
        row = {}
        if variant is None:
            row["cudnn_packed"] = "skipped: no backward variant was right"
        else:
            res = child({"part": "time", "row": name, "label": "cudnn_packed", "variant": variant})
            row["cudnn_packed"] = res.get("ms", res)
        row["varlen_flash"] = time_one(name, "varlen_flash", variant)
        rows[name] = row
    return rows


if __name__ == "__main__":
    main()
