"""cuDNN's fused attention on seektune's packed rows, through NVIDIA's cudnn frontend. A GPU probe (one call, ~4-6 min).

torch 2.11's own varlen entry to cuDNN is unusable: its backward sizes cuDNN's graph from the head-dim axis (pytorch
PR 186142; bench/cudnn_varlen_probe.py, bench/results/2026-11-29-s6-cudnn-probe.json). This goes around torch and
builds the graphs itself with the cudnn frontend's Python API (pip nvidia-cudnn-frontend 1.32.0, carried in
.whl/cudnn), on the libcudnn that torch loads (9.19). A packed row is several samples one after another, T tokens,
q/k (T, heads, d_qk) and v (T, heads, d_v) bf16, boundaries as cumulative lengths; to cuDNN that is the THD layout:
tensors declared (B, heads, S_max, d) with token-major strides plus per-sample lengths (seq_len_q/kv) and ragged
offsets (cumulative lengths times each tensor's token stride, int64, shape (B+1, 1, 1, 1)), as in NVIDIA's tests
(test/python/sdpa/fp16.py in NVIDIA/cudnn-frontend) and the wheel's own THD op (cudnn/sdpa/fwd/torch_op.py).

  1. forward (causal, scale 1/sqrt(d_qk), softmax stats generated) on the row [700, 1000, 348] at the 7B width
     (32 heads, d 128): output against per-sample causal attention in fp32, and the stats against its log-sum-exp;
  2. backward with the same ragged offsets: dq, dk, dv against autograd of that reference, with the stats as the
     forward wrote them (ragged, token-major) and padded to (B, heads, S_max, 1) (what the wheel's op passes); and the
     same with q, k, v as seektune's attention hands them (views of (heads, T, d), not token-major);
  3. both at the DeepSeek-V2-Lite width (16 heads, d_qk 192, d_v 128: cuDNN takes d_qk != d_v, no padding of v);
  4. time of forward+backward, ms, median of 5 loops of 20 (synchronised only at loop ends): cuDNN graphs built once
     (execute only; and as an op would run it: lengths and offsets from cu, outputs allocated, every call) vs the
     varlen FlashAttention kernel seektune uses (torch.nn.attention.varlen.varlen_attn, v padded for MLA), rows
     7B 2x2048, 7B [700,1000,348], V2-Lite 2x2048, V2-Lite [700,1000,348];
  5. what a new length pattern costs: time to build a graph pair for a new (B, S_max), and whether ONE graph pair,
     built for a bucket (B_max samples, S_max = the row's length, token total fixed), gives right answers for other
     lengths passed only at execute time (seq_len and ragged-offset tensors), missing samples as zero-length ones;
     its time against a graph of the exact shape; and whether a kernel cache makes a rebuild cheap;
  6. the wheel's own torch ops (cudnn.sdpa_torch: THD forward with autograd to its backward) and its
     override of torch's varlen_attn ops (cudnn.torch.install_sdpa_overrides): right? how fast?

Each part runs in a child process (a CUDA fault there cannot poison the others: the s6 probe's long row walked past
cuDNN's dQ buffer) and each step reports its error instead of stopping the next. Prints one JSON object; on a machine
without CUDA, {"skipped": ...}.

  python bench/cudnn_frontend_probe.py            # bash bench/calls/next_s7_cudnn.sh installs the wheel first
  python bench/cudnn_frontend_probe.py --summary OUT.json   # the answers in a few lines
"""

import itertools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
import traceback

from cudnn_varlen_probe import varlen_flash  # the same FlashAttention baseline as the ATen probe (bench/ is on the path)

LONG = [700, 1000, 348]  # the row of steps 1-3 (2048 tokens)
WIDTHS = {"7B": (32, 128, 128), "V2-Lite": (16, 192, 128)}  # heads, d_qk, d_v
TOL = 0.05  # max error relative to the reference's largest value; bf16 gives ~0.01 (torch's cuDNN forward: 0.0025)
STATS_MODES = ("ragged", "padded")  # how the backward reads the forward's stats, tried in this order

# (name, width, lengths) for step 4.
TIMING_ROWS = (("7B 2x2048", "7B", [2048, 2048]),
               ("7B 700/1000/348", "7B", LONG),
               ("V2-Lite 2x2048", "V2-Lite", [2048, 2048]),
               ("V2-Lite 700/1000/348", "V2-Lite", LONG))

# Step 5: a bucket graph for up to BUCKET_B samples in a row of BUCKET_T tokens, and the patterns run through it.
BUCKET_B, BUCKET_T = 8, 2048
BUCKET_PATTERNS = (LONG, [1000, 1000, 48], [48, 1000, 1000], [2048], [1024, 1024], [512] * 4, [256] * 8,
                   [100] * 7 + [1348], [600, 400])  # the last: 1000 tokens, fewer than the graph was built for
EXACT_B_PATTERNS = (LONG, [1000, 1000, 48], [48, 1000, 1000])  # through a graph of B=3, S_max=2048: no padding
BUILD_SHAPES = ((3, 1000), (2, 1048), (4, 512), (8, 256), (3, 1000))  # (B, S_max); the last repeats the first

# CUDNN_PROBE_DRY_RUN=1: on CPU, timings one call each, for checking the bookkeeping against a stand-in for cudnn
# (a module on PYTHONPATH that interprets the graphs' strides and offsets), not for numbers.
DRY_RUN = os.environ.get("CUDNN_PROBE_DRY_RUN") == "1"
DEVICE = "cpu" if DRY_RUN else "cuda"
DEADLINE_S = 520  # no part runs past this many seconds from the start (the call's limit is 600 s, less the prelude)
CHILD_TIMEOUT_S = 240  # the most one part may take


def sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def tb(limit=3) -> str:
    """The current exception, short: its innermost `limit` frames as file:line, then its message (head only: torch's
    dispatcher errors end in pages of registrations)."""
    etype, exc, trace = sys.exc_info()
    frames = traceback.extract_tb(trace)[-limit:]
    where = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(frames))
    return f"{etype.__name__}: {str(exc)[:700]} [at {where}]"


# ----------------------------------------------------------------------------------------------------------------
# Loading the frontend on torch's libcudnn
# ----------------------------------------------------------------------------------------------------------------

def loaded_libraries(pattern: str) -> list:
    """Paths of the shared objects mapped into this process whose file names match `pattern`, in map order."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split()
                path = fields[-1] if len(fields) >= 6 else ""
                if re.search(pattern, os.path.basename(path)) and path not in found:
                    found.append(path)
    except OSError:
        pass
    return found


def loaded_library(pattern: str):
    found = loaded_libraries(pattern)
    return found[0] if found else None


def load_frontend() -> tuple:
    """-> (cudnn module, facts). Imports torch first (it loads libcudnn.so.9 and libcudart.so.13), then points the
    frontend at those same files: `cudnn/__init__.py` (_dlopen_cudnn) dlopens the first libcudnn.so.9 found on
    LD_LIBRARY_PATH, else the one in sysconfig's site-packages (nvidia/cudnn/lib), else by name; its native module
    dlopens libcudart by CUDNN_FRONTEND_CUDART_LIB_NAME if set, else tries .so.12 and .so.13."""
    import torch

    facts = {"torch_cudnn": torch.backends.cudnn.version()}  # loads libcudnn if torch had not yet
    lib = loaded_library(r"^libcudnn\.so(\.\d+)*$")
    if lib is None:
        try:
            import nvidia.cudnn

            cand = os.path.join(list(nvidia.cudnn.__path__)[0], "lib", "libcudnn.so.9")
            lib = cand if os.path.exists(cand) else None
        except Exception:
            lib = None
    if lib is not None:
        lib_dir = os.path.dirname(os.path.realpath(lib))
        paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([lib_dir] + [p for p in paths if p != lib_dir])
    cudart = loaded_library(r"^libcudart\.so\.\d+")
    if cudart is not None and "CUDNN_FRONTEND_CUDART_LIB_NAME" not in os.environ:
        os.environ["CUDNN_FRONTEND_CUDART_LIB_NAME"] = cudart
    import cudnn

    facts.update(libcudnn_torch=lib, libcudart=cudart, frontend=getattr(cudnn, "__version__", None),
                 frontend_path=os.path.dirname(cudnn.__file__), backend_version=cudnn.backend_version(),
                 backend_version_string=cudnn.backend_version_string(),
                 libcudnn_mapped_after=loaded_libraries(r"^libcudnn\.so(\.\d+)*$"))
    facts["same_libcudnn_as_torch"] = facts["backend_version"] == facts["torch_cudnn"]
    return cudnn, facts


def make_handle(cudnn):
    import torch

    handle = cudnn.create_handle()
    if DEVICE == "cuda":  # graphs run on the handle's stream: torch's current one, as the tests bind it
        cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream().cuda_stream)
    return handle


# ----------------------------------------------------------------------------------------------------------------
# Rows and the fp32 reference
# ----------------------------------------------------------------------------------------------------------------

def packed(lengths, heads, dqk, dv, seed=0, layout="token_major"):
    """q, k (T, heads, dqk), v (T, heads, dv) bf16 and cu (n+1,) int32. layout "head_major": q, k, v are (T, heads, d)
    views of contiguous (heads, T, d) tensors, as seektune's attention gets them from (1, heads, T, d)."""
    import torch

    g = torch.Generator(device=DEVICE).manual_seed(seed)
    total = sum(lengths)
    mk = (lambda d: torch.randn(total, heads, d, device=DEVICE, dtype=torch.bfloat16, generator=g)) \
        if layout == "token_major" else \
        (lambda d: torch.randn(heads, total, d, device=DEVICE, dtype=torch.bfloat16, generator=g).transpose(0, 1))
    q, k, v = mk(dqk), mk(dqk), mk(dv)
    cu = torch.tensor([0, *itertools.accumulate(lengths)], device=DEVICE, dtype=torch.int32)
    return q, k, v, cu


def reference(q, k, v, cu, scale):
    """Per-sample causal attention in fp32 -> (out (T, heads, dv), lse (T, heads), natural log)."""
    import torch

    outs, lses = [], []
    bounds = cu.tolist()
    for a, b in zip(bounds, bounds[1:]):
        if a == b:
            continue
        s = torch.einsum("qhd,khd->hqk", q[a:b].float(), k[a:b].float()) * scale
        s = s.masked_fill(torch.ones(b - a, b - a, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        lses.append(s.logsumexp(-1).t())
        outs.append(torch.einsum("hqk,khd->qhd", torch.softmax(s, -1), v[a:b].float()))
    return torch.cat(outs), torch.cat(lses)


class Case:
    """A packed row with its fp32 reference: output, log-sum-exp, and gradients for the output gradient `go`."""

    def __init__(self, lengths, width, seed=0, layout="token_major"):
        import torch

        self.lengths, self.width = list(lengths), width
        self.heads, self.dqk, self.dv = WIDTHS[width]
        self.scale = self.dqk ** -0.5
        self.q, self.k, self.v, self.cu = packed(lengths, self.heads, self.dqk, self.dv, seed, layout)
        qr, kr, vr = (t.detach().float().requires_grad_(True) for t in (self.q, self.k, self.v))
        out, lse = reference(qr, kr, vr, self.cu, self.scale)
        g = torch.Generator(device=DEVICE).manual_seed(seed + 1)
        self.go = torch.randn(out.shape, device=DEVICE, dtype=torch.bfloat16, generator=g)
        out.backward(self.go.float())
        self.ref, self.lse = out.detach(), lse.detach()
        self.grads = (qr.grad, kr.grad, vr.grad)


def err(a, b) -> float:
    a, b = a.detach().float(), b.detach().float()
    return sig(float((a - b).abs().max() / b.abs().max().clamp_min(1e-6)))


def sig(x: float) -> float:
    return float(f"{x:.3g}")  # three significant digits keep the printed report short


def right(errors: dict) -> bool:
    return all(isinstance(e, float) and e < TOL for e in errors.values())  # NaN compares False: not right


def bench(fn, loops=20, reps=5) -> float:
    """ms per call: median over `reps` loops of `loops` calls, synchronised only at loop ends."""
    if DRY_RUN:
        fn()
        return 0.0
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / loops * 1e3)
    return round(statistics.median(times), 3)


# ----------------------------------------------------------------------------------------------------------------
# cuDNN graphs (modelled on NVIDIA/cudnn-frontend test/python/sdpa/fp16.py create_forward_graph /
# create_backward_graph, and the wheel's cudnn/sdpa/fwd/torch_op.py _build_graph / _build_bwd_graph)
# ----------------------------------------------------------------------------------------------------------------

class U:
    """Tensor uids of the graphs (one namespace for forward and backward)."""
    Q, K, V, O, STATS, DO, DQ, DK, DV = 1, 2, 3, 4, 5, 6, 7, 8, 9
    SEQ_Q, SEQ_KV = 10, 11
    OFF_Q, OFF_K, OFF_V, OFF_O, OFF_STATS, OFF_DQ, OFF_DK, OFF_DV = 12, 13, 14, 15, 16, 17, 18, 19


def round64(n: int) -> int:
    return max(64, (n + 63) // 64 * 64)


def causal_kwargs(cudnn) -> dict:
    # The preferred causal mask of the frontend's docstrings: top-left diagonal, nothing right of it. With
    # use_padding_mask and ragged offsets the diagonal is each sample's own.
    return dict(diagonal_alignment=cudnn.diagonal_alignment.TOP_LEFT, diagonal_band_right_bound=0)


def desc_stride(token_stride: int, head_stride: int, s_max: int) -> list:
    """(B, H, S, D) descriptor strides of a packed (T, H, D) buffer: the batch stride is a placeholder (the ragged
    offsets give each sample's start), as torch_op._thd_desc_stride."""
    return [s_max * token_stride, head_stride, token_stride, 1]


def finish(g, cudnn) -> dict:
    """validate -> build_operation_graph -> plans (heuristics A, then FALLBACK) -> check_support -> build_plans, as
    the tests do; -> facts about the plan that was built."""
    t0 = time.perf_counter()
    g.validate()
    g.build_operation_graph()
    g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    g.check_support()
    g.build_plans()
    build_ms = (time.perf_counter() - t0) * 1e3
    facts = {"build_ms": round(build_ms, 1), "workspace_bytes": int(g.get_workspace_size())}
    try:
        engine = g.selected_engine
        facts["engine"] = "cudnn backend" if engine is None else engine.name
        facts["plan"] = g.get_plan_name_at_index(getattr(g, "_plan_index", 0))
    except Exception as e:
        facts["plan"] = f"unknown: {e!r}"[:200]
    return facts


class Graphs:
    """A forward and a backward graph for one bucket: at most B samples, each at most S tokens, at most t_max
    tokens in the row; heads H, head dims dqk/dv. `in_strides`: (token, head) strides of q, k, v as passed (all
    three alike); outputs (o, stats, dq, dk, dv) are always token-major contiguous."""

    def __init__(self, cudnn, handle, B, H, S, dqk, dv, t_max, stats_mode="ragged", in_strides=None,
                 build_backward=True, **graph_kwargs):
        import torch

        self.cudnn, self.handle = cudnn, handle
        self.B, self.H, self.S, self.dqk, self.dv, self.t_max = B, H, S, dqk, dv, t_max
        self.stats_mode, self.scale = stats_mode, dqk ** -0.5
        self.in_strides = in_strides or {"qk": (H * dqk, dqk), "v": (H * dv, dv)}
        self.graph_kwargs = graph_kwargs
        self.fwd, self.fwd_facts = self._forward()
        self.bwd, self.bwd_facts = self._backward() if build_backward else (None, None)
        ws = max(self.fwd_facts["workspace_bytes"], (self.bwd_facts or {}).get("workspace_bytes", 0), 1)
        self.workspace = torch.empty(ws, dtype=torch.uint8, device=DEVICE)

    def _graph(self):
        c = self.cudnn
        return c.pygraph(io_data_type=c.data_type.BFLOAT16, intermediate_data_type=c.data_type.FLOAT,
                         compute_data_type=c.data_type.FLOAT, handle=self.handle, **self.graph_kwargs)

    def _inputs(self, g):
        """q, k, v, seq_len_q, seq_len_kv, and a ragged-offset tensor maker."""
        c, B, H, S = self.cudnn, self.B, self.H, self.S
        bf16, i32, i64 = c.data_type.BFLOAT16, c.data_type.INT32, c.data_type.INT64
        (qt, qh), (vt, vh) = self.in_strides["qk"], self.in_strides["v"]
        q = g.tensor(name="q", uid=U.Q, dim=[B, H, S, self.dqk], stride=desc_stride(qt, qh, S), data_type=bf16)
        k = g.tensor(name="k", uid=U.K, dim=[B, H, S, self.dqk], stride=desc_stride(qt, qh, S), data_type=bf16)
        v = g.tensor(name="v", uid=U.V, dim=[B, H, S, self.dv], stride=desc_stride(vt, vh, S), data_type=bf16)
        seq_q = g.tensor(name="seq_len_q", uid=U.SEQ_Q, dim=[B, 1, 1, 1], stride=[1, 1, 1, 1], data_type=i32)
        seq_kv = g.tensor(name="seq_len_kv", uid=U.SEQ_KV, dim=[B, 1, 1, 1], stride=[1, 1, 1, 1], data_type=i32)

        def offset(uid, name):
            return g.tensor(name=name, uid=uid, dim=[B + 1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=i64)

        q.set_ragged_offset(offset(U.OFF_Q, "ragged_q"))
        k.set_ragged_offset(offset(U.OFF_K, "ragged_k"))
        v.set_ragged_offset(offset(U.OFF_V, "ragged_v"))
        return q, k, v, seq_q, seq_kv, offset

    def _forward(self):
        c, B, H, S, dv = self.cudnn, self.B, self.H, self.S, self.dv
        g = self._graph()
        q, k, v, seq_q, seq_kv, offset = self._inputs(g)
        o, stats = g.sdpa(name="sdpa_forward", q=q, k=k, v=v, generate_stats=True, attn_scale=self.scale,
                          use_padding_mask=True, seq_len_q=seq_q, seq_len_kv=seq_kv, **causal_kwargs(c))
        o.set_uid(U.O).set_output(True).set_dim([B, H, S, dv]).set_stride(desc_stride(H * dv, dv, S))
        o.set_ragged_offset(offset(U.OFF_O, "ragged_o"))
        stats.set_uid(U.STATS).set_output(True).set_data_type(c.data_type.FLOAT).set_dim([B, H, S, 1]) \
            .set_stride([S * H, 1, H, 1])  # token-major (T, H, 1), like the s6 probe found torch's cuDNN lse
        stats.set_ragged_offset(offset(U.OFF_STATS, "ragged_stats"))
        return g, finish(g, c)

    def _backward(self):
        c, B, H, S, dqk, dv = self.cudnn, self.B, self.H, self.S, self.dqk, self.dv
        bf16 = c.data_type.BFLOAT16
        g = self._graph()
        q, k, v, seq_q, seq_kv, offset = self._inputs(g)
        o = g.tensor(name="o", uid=U.O, dim=[B, H, S, dv], stride=desc_stride(H * dv, dv, S), data_type=bf16)
        do = g.tensor(name="dO", uid=U.DO, dim=[B, H, S, dv], stride=desc_stride(H * dv, dv, S), data_type=bf16)
        off_o = offset(U.OFF_O, "ragged_o")
        o.set_ragged_offset(off_o)
        do.set_ragged_offset(off_o)  # the tests share O's offsets with dO, Q's with dQ
        if self.stats_mode == "ragged":
            stats = g.tensor(name="stats", uid=U.STATS, dim=[B, H, S, 1], stride=[S * H, 1, H, 1],
                             data_type=c.data_type.FLOAT)
            stats.set_ragged_offset(offset(U.OFF_STATS, "ragged_stats"))
        else:  # padded dense BHS1, what the wheel's THD backward takes ("non-ragged Stats must be packed BHSD")
            stats = g.tensor(name="stats", uid=U.STATS, dim=[B, H, S, 1], stride=[H * S, S, 1, 1],
                             data_type=c.data_type.FLOAT)
        dq, dk, dvt = g.sdpa_backward(name="sdpa_backward", q=q, k=k, v=v, o=o, dO=do, stats=stats,
                                      attn_scale=self.scale, use_padding_mask=True, seq_len_q=seq_q,
                                      seq_len_kv=seq_kv, max_total_seq_len_q=round64(self.t_max),
                                      max_total_seq_len_kv=round64(self.t_max), **causal_kwargs(c))
        dq.set_uid(U.DQ).set_output(True).set_dim([B, H, S, dqk]).set_stride(desc_stride(H * dqk, dqk, S))
        dk.set_uid(U.DK).set_output(True).set_dim([B, H, S, dqk]).set_stride(desc_stride(H * dqk, dqk, S))
        dvt.set_uid(U.DV).set_output(True).set_dim([B, H, S, dv]).set_stride(desc_stride(H * dv, dv, S))
        dq.set_ragged_offset(offset(U.OFF_DQ, "ragged_dq"))
        dk.set_ragged_offset(offset(U.OFF_DK, "ragged_dk"))
        dvt.set_ragged_offset(offset(U.OFF_DV, "ragged_dv"))
        return g, finish(g, c)

    def metadata(self, cu) -> dict:
        """The execute-time tensors for boundaries `cu` (n+1,): lengths (B,1,1,1) int32 and ragged offsets
        (B+1,1,1,1) int64 in elements of each tensor; samples past n are zero-length ones at the row's end."""
        import torch

        n = cu.numel() - 1
        if n > self.B:
            raise ValueError(f"{n} samples, the graph holds {self.B}")
        if n < self.B:
            cu = torch.cat([cu, cu[-1:].expand(self.B - n)])
        cu64 = cu.to(torch.int64)
        lens = (cu[1:] - cu[:-1]).to(torch.int32).reshape(-1, 1, 1, 1)
        H, dqk, dv = self.H, self.dqk, self.dv
        col = lambda x: x.reshape(-1, 1, 1, 1).contiguous()  # noqa: E731
        return {U.SEQ_Q: lens, U.SEQ_KV: lens,
                U.OFF_Q: col(cu64 * self.in_strides["qk"][0]), U.OFF_K: col(cu64 * self.in_strides["qk"][0]),
                U.OFF_V: col(cu64 * self.in_strides["v"][0]), U.OFF_O: col(cu64 * H * dv),
                U.OFF_STATS: col(cu64 * H), U.OFF_DQ: col(cu64 * H * dqk), U.OFF_DK: col(cu64 * H * dqk),
                U.OFF_DV: col(cu64 * H * dv), "cu": cu}

    def forward(self, q, k, v, meta, o=None, stats=None):
        import torch

        T = q.shape[0]
        o = torch.empty(T, self.H, self.dv, device=DEVICE, dtype=torch.bfloat16) if o is None else o
        stats = torch.empty(T, self.H, 1, device=DEVICE, dtype=torch.float32) if stats is None else stats
        pack = {U.Q: q, U.K: k, U.V: v, U.O: o, U.STATS: stats}
        pack.update({u: meta[u] for u in (U.SEQ_Q, U.SEQ_KV, U.OFF_Q, U.OFF_K, U.OFF_V, U.OFF_O, U.OFF_STATS)})
        self.fwd.execute(pack, self.workspace, handle=self.handle)
        return o, stats

    def padded_stats(self, stats, cu):
        """Token-major (T, H, 1) stats -> (B, H, S, 1), zeros past each sample (as the wheel's _torch_repad)."""
        import torch

        T = stats.shape[0]
        cu64 = cu.to(torch.int64)
        token = torch.arange(T, device=DEVICE)
        sample = torch.searchsorted(cu64[1:], token, right=True)
        out = torch.zeros(self.B, self.H, self.S, 1, device=DEVICE, dtype=torch.float32)
        out[sample, :, token - cu64[sample], 0] = stats[:, :, 0]
        return out

    def backward(self, q, k, v, o, stats, do, meta, grads=None):
        import torch

        if self.stats_mode == "padded":
            stats = self.padded_stats(stats, meta["cu"])
        if grads is None:
            T = q.shape[0]
            grads = (torch.empty(T, self.H, self.dqk, device=DEVICE, dtype=torch.bfloat16),
                     torch.empty(T, self.H, self.dqk, device=DEVICE, dtype=torch.bfloat16),
                     torch.empty(T, self.H, self.dv, device=DEVICE, dtype=torch.bfloat16))
        pack = {U.Q: q, U.K: k, U.V: v, U.O: o, U.DO: do, U.STATS: stats,
                U.DQ: grads[0], U.DK: grads[1], U.DV: grads[2]}
        uids = [U.SEQ_Q, U.SEQ_KV, U.OFF_Q, U.OFF_K, U.OFF_V, U.OFF_O, U.OFF_DQ, U.OFF_DK, U.OFF_DV]
        if self.stats_mode == "ragged":
            uids.append(U.OFF_STATS)
        pack.update({u: meta[u] for u in uids})
        self.bwd.execute(pack, self.workspace, handle=self.handle)
        return grads


def graphs_for(cudnn, handle, case, stats_mode="ragged", B=None, S=None, t_max=None, **kw):
    """Graphs of the exact shape of `case` unless B/S/t_max say otherwise."""
    (qt, qh), (vt, vh) = case.q.stride()[:2], case.v.stride()[:2]
    return Graphs(cudnn, handle, B or len(case.lengths), case.heads, S or max(case.lengths), case.dqk, case.dv,
                  t_max or case.q.shape[0], stats_mode, {"qk": (qt, qh), "v": (vt, vh)}, **kw)


def run_case(graphs, case, with_backward=True) -> dict:
    """Forward (and backward) of `case` through `graphs`: errors against the reference."""
    meta = graphs.metadata(case.cu)
    o, stats = graphs.forward(case.q, case.k, case.v, meta)
    sync()
    res = {"out": err(o, case.ref)}
    if with_backward:
        grads = graphs.backward(case.q, case.k, case.v, o, stats, case.go, meta)
        sync()
        res.update({n: err(g, r) for n, g, r in zip(("dq", "dk", "dv"), grads, case.grads)})
    res["right"] = right({k: v for k, v in res.items() if k != "right"})
    return res


# ----------------------------------------------------------------------------------------------------------------
# Parts (each in a child process)
# ----------------------------------------------------------------------------------------------------------------

def part_check(spec, emit) -> dict:
    """Steps 1-3 for one width on LONG."""
    cudnn, _ = load_frontend()
    handle = make_handle(cudnn)
    case = Case(LONG, spec["width"])
    res = {"lengths": LONG, "heads": case.heads, "d_qk": case.dqk, "d_v": case.dv}
    emit(res)
    try:
        graphs = graphs_for(cudnn, handle, case, build_backward=False)
        res["forward"] = {"graph": graphs.fwd_facts}
        meta = graphs.metadata(case.cu)
        o, stats = graphs.forward(case.q, case.k, case.v, meta)
        sync()
        lse = stats[:, :, 0]
        res["forward"].update(out_max_rel_err=err(o, case.ref), out_nan=bool(o.isnan().any()),
                              lse_max_abs_err=sig(float((lse - case.lse).abs().max())),
                              lse_max_abs_err_if_log2=sig(float((lse - case.lse / math.log(2)).abs().max())))
        res["forward"]["right"] = res["forward"]["out_max_rel_err"] < TOL and res["forward"]["lse_max_abs_err"] < 0.05
    except Exception:
        res["forward"] = {"error": tb(), "last_cudnn_error": last_error(cudnn)}
        return res
    emit(res)

    res["backward"] = {}
    for mode in STATS_MODES:
        try:
            graphs = graphs_for(cudnn, handle, case, stats_mode=mode)
            res["backward"][mode] = {"graph": graphs.bwd_facts, **run_case(graphs, case)}
        except Exception:
            res["backward"][mode] = {"error": tb(), "last_cudnn_error": last_error(cudnn)}
        emit(res)
    res["stats_mode"] = next((m for m in STATS_MODES if res["backward"][m].get("right")), None)

    # seektune's own layout: (T, heads, d) views of (heads, T, d); the ragged offsets are cu * d then.
    try:
        hm = Case(LONG, spec["width"], layout="head_major")
        graphs = graphs_for(cudnn, handle, hm, stats_mode=res["stats_mode"] or "ragged")
        res["head_major_views"] = {"strides_q": list(hm.q.stride()), **run_case(graphs, hm)}
    except Exception:
        res["head_major_views"] = {"error": tb(), "last_cudnn_error": last_error(cudnn)}
    return res


def last_error(cudnn):
    try:
        return cudnn.get_last_error_string()[-600:]
    except Exception:
        return None


def part_time(spec, emit) -> dict:
    """Step 4 for one row: varlen FlashAttention, then cuDNN (execute only, and as an op)."""
    import torch

    name, width, lengths = next(r for r in TIMING_ROWS if r[0] == spec["row"])
    heads, dqk, dv = WIDTHS[width]
    q, k, v, cu = packed(lengths, heads, dqk, dv, seed=1)
    go = torch.randn(q.shape[0], heads, dv, device=DEVICE, dtype=torch.bfloat16)
    res = {}
    try:
        res["varlen_flash"] = bench(varlen_flash(q, k, v, cu, max(lengths), go))
    except Exception:
        res["varlen_flash"] = {"error": tb()}
    emit(res)
    try:
        cudnn, _ = load_frontend()
        handle = make_handle(cudnn)
        graphs = Graphs(cudnn, handle, len(lengths), heads, max(lengths), dqk, dv, q.shape[0],
                        spec.get("stats_mode") or "ragged")
        res["graph_build_ms"] = {"forward": graphs.fwd_facts["build_ms"], "backward": graphs.bwd_facts["build_ms"]}
        res["plans"] = [graphs.fwd_facts.get("plan"), graphs.bwd_facts.get("plan")]
        meta = graphs.metadata(cu)
        o, stats = graphs.forward(q, k, v, meta)
        grads = graphs.backward(q, k, v, o, stats, go, meta)

        def execute_only():
            graphs.forward(q, k, v, meta, o, stats)
            graphs.backward(q, k, v, o, stats, go, meta, grads)

        def as_op():  # what a custom op would do per call: boundaries -> metadata, fresh outputs
            m = graphs.metadata(cu)
            oo, ss = graphs.forward(q, k, v, m)
            graphs.backward(q, k, v, oo, ss, go, m)

        res["cudnn_execute_only"] = bench(execute_only)
        emit(res)
        res["cudnn_as_op"] = bench(as_op)
        res["cudnn_forward_only"] = bench(lambda: graphs.forward(q, k, v, meta, o, stats))
    except Exception:
        res["cudnn_error"] = tb()
    return res


def pattern_name(lengths) -> str:
    return "/".join(map(str, lengths)) if len(set(lengths)) > 1 else f"{len(lengths)}x{lengths[0]}"


def part_reuse(spec, emit) -> dict:
    """Step 5 at the 7B width."""
    import torch

    cudnn, _ = load_frontend()
    handle = make_handle(cudnn)
    heads, dqk, dv = WIDTHS["7B"]
    mode = spec.get("stats_mode") or "ragged"
    res = {"stats_mode": mode}

    builds = []  # fresh graph pairs for new (B, S_max); the first pays for anything done once per process
    for B, S in BUILD_SHAPES:
        try:
            gr = Graphs(cudnn, handle, B, heads, S, dqk, dv, BUCKET_T, mode)
            builds.append({"B": B, "S_max": S, "forward_ms": gr.fwd_facts["build_ms"],
                           "backward_ms": gr.bwd_facts["build_ms"]})
        except Exception:
            builds.append({"B": B, "S_max": S, "error": tb(2)})
    res["build"] = builds
    emit(res)

    def through(name, graphs_args, patterns):
        """res[name]: each pattern's errors through one graph pair built with `graphs_args` (B, S_max); emitted
        after every pattern, so a fault keeps what came before it."""
        B, S = graphs_args
        try:
            graphs = Graphs(cudnn, handle, B, heads, S, dqk, dv, BUCKET_T, mode)
            res[name] = {"B": B, "S_max": S, "t_max": BUCKET_T, "patterns": {}}
        except Exception:
            res[name] = {"B": B, "S_max": S, "error": tb()}
            return None
        for lengths in patterns:
            try:
                out = run_case(graphs, Case(lengths, "7B", seed=2))
            except Exception:
                out = {"error": tb(2)}
            res[name]["patterns"][pattern_name(lengths)] = out
            emit(res)
        return graphs

    # Same B, other lengths first (no zero-length samples), then the bucket (zero-length samples pad B).
    through("same_B_graph", (3, BUCKET_T), EXACT_B_PATTERNS)
    bucket = through("bucket_graph", (BUCKET_B, BUCKET_T), BUCKET_PATTERNS)

    # Time: a row through its exact-shape graphs vs through the bucket's.
    timing = {}
    for lengths in (LONG, [256] * 8):
        row = {}
        try:
            q, k, v, cu = packed(lengths, heads, dqk, dv, seed=3)
            go = torch.randn(q.shape[0], heads, dv, device=DEVICE, dtype=torch.bfloat16)
            exact = Graphs(cudnn, handle, len(lengths), heads, max(lengths), dqk, dv, q.shape[0], mode)
            for label, gr in (("exact_graph", exact), ("bucket_graph", bucket)):
                if gr is None:
                    continue
                meta = gr.metadata(cu)
                o, stats = gr.forward(q, k, v, meta)
                grads = gr.backward(q, k, v, o, stats, go, meta)

                def fn(gr=gr, meta=meta, o=o, stats=stats, grads=grads):
                    gr.forward(q, k, v, meta, o, stats)
                    gr.backward(q, k, v, o, stats, go, meta, grads)

                row[label] = bench(fn)
        except Exception:
            row["error"] = tb(2)
        try:
            row["varlen_flash"] = bench(varlen_flash(q, k, v, cu, max(lengths), go))
        except Exception:
            row["varlen_flash"] = {"error": tb(2)}
        timing[pattern_name(lengths)] = row
    res["timing_ms"] = timing
    emit(res)

    # A kernel cache with dynamic shapes enabled (cuDNN >= 9.4): does a rebuild for another shape get cheap?
    try:
        kc = cudnn.create_kernel_cache()
        kbuilds = []
        for B, S in BUILD_SHAPES[:3]:
            try:
                gr = Graphs(cudnn, handle, B, heads, S, dqk, dv, BUCKET_T, mode, is_dynamic_shape_enabled=True,
                            kernel_cache=kc)
                kbuilds.append({"B": B, "S_max": S, "forward_ms": gr.fwd_facts["build_ms"],
                                "backward_ms": gr.bwd_facts["build_ms"]})
            except Exception:
                kbuilds.append({"B": B, "S_max": S, "error": tb(2)})
        res["kernel_cache_build"] = kbuilds
        try:  # the last graph built with the cache, (4, 512), on another row
            if "error" not in kbuilds[-1]:
                res["kernel_cache_right"] = run_case(gr, Case([300, 200, 500], "7B", seed=4))
        except Exception:
            res["kernel_cache_right"] = {"error": tb(2)}
    except Exception:
        res["kernel_cache_build"] = {"error": tb(2)}
    return res


def part_torch_op(spec, emit) -> dict:
    """Step 6: the wheel's torch ops (cudnn.sdpa_torch) and its varlen_attn override."""
    cudnn, _ = load_frontend()
    res = {}
    for width in WIDTHS:
        row = {}
        try:
            case = Case(LONG, width)
            sdpa = cudnn.sdpa_torch
            m = max(case.lengths)
            qs, ks, vs = (x.detach().clone().requires_grad_(True) for x in (case.q, case.k, case.v))

            def call(qs=qs, ks=ks, vs=vs, case=case, m=m):
                o, _lse = sdpa(qs, ks, vs, scale=case.scale, is_causal=True, cu_seqlens_q=case.cu,
                               cu_seqlens_kv=case.cu, max_seqlen_q=m, max_seqlen_kv=m, return_lse=True)
                return o

            o = call()
            o.backward(case.go)
            sync()
            errors = {"out": err(o, case.ref), **{n: err(x.grad, r) for n, x, r in
                                                 zip(("dq", "dk", "dv"), (qs, ks, vs), case.grads)}}
            row["sdpa_torch"] = {**errors, "right": right(errors)}

            def fwd_bwd(call=call, case=case):
                call().backward(case.go)

            row["sdpa_torch"]["ms"] = bench(fwd_bwd)
        except Exception:
            row["sdpa_torch"] = {"error": tb()}
        res[width] = row
        emit(res)
    try:
        import cudnn.torch as cudnn_torch
        from torch.nn.attention.varlen import varlen_attn

        overrides = cudnn_torch.install_sdpa_overrides()
        try:
            for width in WIDTHS:
                try:
                    case = Case(LONG, width)
                    m = max(case.lengths)
                    qs, ks, vs = (x.detach().clone().requires_grad_(True) for x in (case.q, case.k, case.v))

                    def call(qs=qs, ks=ks, vs=vs, case=case, m=m):
                        try:
                            return varlen_attn(qs, ks, vs, case.cu, case.cu, m, m, is_causal=True)
                        except TypeError:
                            return varlen_attn(qs, ks, vs, case.cu, case.cu, m, m, window_size=(-1, 0))

                    before = dict(cudnn_torch.calls)
                    o = call()
                    o.backward(case.go)
                    sync()
                    errors = {"out": err(o, case.ref), **{n: err(x.grad, r) for n, x, r in
                                                         zip(("dq", "dk", "dv"), (qs, ks, vs), case.grads)}}
                    served = {k: cudnn_torch.calls[k] - before.get(k, 0) for k in cudnn_torch.calls}
                    row = {**errors, "right": right(errors), "calls": served}

                    def fwd_bwd(call=call, case=case):
                        call().backward(case.go)

                    row["ms"] = bench(fwd_bwd)
                except Exception:
                    row = {"error": tb()}
                res[width]["varlen_attn_overridden"] = row
                emit(res)
        finally:
            overrides.remove()
    except Exception:
        res["override_error"] = tb()
    return res


PARTS = {"check": part_check, "time": part_time, "reuse": part_reuse, "torch_op": part_torch_op}


def child_main(spec: dict) -> None:
    def emit(partial):  # every line is the result so far: a crash loses only what came after it
        print(json.dumps(partial), flush=True)

    try:
        result = PARTS[spec["part"]](spec, emit)
    except Exception:
        result = {"error": tb()}
    emit(result)


def child(spec: dict, timeout: float) -> dict:
    """Runs one part in a fresh process; -> its last JSON line (plus how it ended when that was not cleanly)."""
    if timeout < 20:
        return {"skipped": "out of time"}
    timeout = int(timeout)
    t0 = time.perf_counter()
    try:
        res = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                             capture_output=True, text=True, timeout=timeout)
        out, rc, stderr = res.stdout, res.returncode, res.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc, stderr = f"timed out after {timeout} s", (e.stderr.decode() if isinstance(e.stderr, bytes)
                                                      else (e.stderr or ""))
    lines = [line for line in out.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    if rc != 0 or not lines:
        result["child_exit"] = rc
        result["stderr_tail"] = "\n".join(line for line in stderr.splitlines() if "warn" not in line.lower())[-1500:]
    result["part_s"] = round(time.perf_counter() - t0, 1)
    return result


def summary(report: dict) -> list:
    """A few lines with the answers, for a call's printed output (the JSON has the rest)."""
    def ok(d):
        if not isinstance(d, dict):
            return "?"
        return "error" if "error" in d else ("right" if d.get("right") else "WRONG")

    def num(v):  # a number as it is, anything else (an error, a skip) in one word
        return v if isinstance(v, (int, float)) or v is None else ("error" if "error" in str(v) else str(v)[:40])

    fe = report.get("frontend", {})
    lines = [f"frontend {fe.get('frontend')} on cuDNN {fe.get('backend_version')} (torch's {fe.get('torch_cudnn')})"
             + (f": {fe['error'][:300]}" if "error" in fe else "")]
    for width, c in report.get("checks", {}).items():
        f, b = c.get("forward", {}), c.get("backward", {})
        lines.append(f"{width}: forward {ok(f)} (out {f.get('out_max_rel_err')}, lse {f.get('lse_max_abs_err')}, "
                     f"build {f.get('graph', {}).get('build_ms')} ms, {f.get('graph', {}).get('plan')}); backward "
                     + ", ".join(f"{m} stats {ok(b.get(m))}" for m in STATS_MODES)
                     + f"; head-major views {ok(c.get('head_major_views'))}")
    for row, t in report.get("timing_ms", {}).items():
        lines.append(f"{row}: flash {num(t.get('varlen_flash'))}, cuDNN execute {num(t.get('cudnn_execute_only'))}, "
                     f"as op {num(t.get('cudnn_as_op'))} ms" + (" (cuDNN error)" if "cudnn_error" in t else ""))
    r = report.get("reuse", {})
    for name in ("same_B_graph", "bucket_graph"):
        pats = r.get(name, {}).get("patterns", {})
        lines.append(f"{name}: " + (", ".join(f"{p} {ok(v)}" for p, v in pats.items()) or str(r.get(name))[:200]))
    lines.append("builds (fwd/bwd ms): " + ", ".join(f"{b.get('B')}x{b.get('S_max')} {b.get('forward_ms')}/"
                                                      f"{b.get('backward_ms')}" for b in r.get("build", [])))
    for row, t in (r.get("timing_ms") or {}).items():
        lines.append(f"{row} ms: " + ", ".join(f"{k} {num(v)}" for k, v in t.items()))
    for width, t in (report.get("torch_op") or {}).items():
        if isinstance(t, dict) and width in WIDTHS:
            lines.append(f"{width} wheel ops: " + ", ".join(f"{k} {ok(v)} {num(v.get('ms'))} ms" for k, v in t.items()))
    return lines


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child_main(json.loads(sys.argv[2]))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--summary":
        with open(sys.argv[2]) as f:
            print("\n".join(summary(json.load(f))))
        return
    import torch

    if not (DRY_RUN or torch.cuda.is_available()):
        print(json.dumps({"skipped": "needs a CUDA GPU (cuDNN attention through the cudnn frontend)"}))
        return
    start = time.perf_counter()
    report: dict = {"torch": torch.__version__, "device": "dry run" if DRY_RUN else torch.cuda.get_device_name()}
    try:
        cudnn, facts = load_frontend()
        report["frontend"] = facts
        try:
            report["frontend"]["sdpa_capabilities"] = sorted(cudnn.sdpa_capabilities())
        except Exception:
            pass
    except Exception:
        report["frontend"] = {"error": tb()}
        print(json.dumps(report, indent=1))
        return

    def left(most=CHILD_TIMEOUT_S) -> float:
        return min(most, DEADLINE_S - (time.perf_counter() - start))

    report["checks"] = {}
    for width in WIDTHS:
        report["checks"][width] = child({"part": "check", "width": width}, left(180))
    # The stats layout that came out right; failing that "padded": the check tries "ragged" first, and if that faulted
    # the CUDA context, "padded" could not show there whether it works, but it gets a fresh process here.
    stats_mode = report["stats_mode_used"] = {w: report["checks"][w].get("stats_mode") or "padded" for w in WIDTHS}

    report["timing_ms"] = {}
    for name, width, _ in TIMING_ROWS:
        report["timing_ms"][name] = child({"part": "time", "row": name, "stats_mode": stats_mode[width]}, left(90))
    report["reuse"] = child({"part": "reuse", "stats_mode": stats_mode["7B"]}, left())
    report["torch_op"] = child({"part": "torch_op"}, left(150))
    report["total_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
