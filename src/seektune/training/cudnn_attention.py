"""cuDNN's fused attention on packed rows (`train.attention: seektune_cudnn`), through NVIDIA's cudnn frontend
(`pip install nvidia-cudnn-frontend`) on the libcudnn that torch has already loaded.

torch 2.11's own varlen route into cuDNN sizes its backward pass from the wrong axis (pytorch PR 186142), so the
graphs are built here. To cuDNN a packed row is the THD layout: q/k (T, heads, d_qk) and v/out (T, heads, d_v),
token-major, each sample's start given as a ragged offset and its length as seq_len. One forward and one backward
graph serve every row of a bucket: up to B samples (a power of two; missing samples are zero-length ones at the
row's end) in up to T tokens (a power of two). Probed on an H200 (bench/cudnn_frontend_probe.py, bench/RESULTS.md
session 7): right for every length pattern tried, for both the 7B (128/128) and the MLA (192/128) head dims, in
0.61x the time of varlen FlashAttention on a 2 x 2048 row. Sample-major views gave a wrong dq there, so q and k are
made token-major contiguous before the call.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
from typing import Optional

import torch

from seektune.training.speed import (CUDNN, _boundaries, is_packed_row, register_packed_attention, repeat_kv_heads,
                                     sdpa_fallback)

# Tensor uids, one namespace for both graphs.
Q, K, V, O, STATS, DO, DQ, DK, DV, SEQ_Q, SEQ_KV = range(1, 12)
OFF_Q, OFF_K, OFF_V, OFF_O, OFF_STATS, OFF_DQ, OFF_DK, OFF_DV = range(12, 20)


def _mapped_library(pattern: str) -> Optional[str]:
    """The first shared object mapped into this process whose file name matches `pattern`."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                if re.search(pattern, os.path.basename(path)):
                    return path
    except OSError:
        pass
    return None


@functools.cache
def frontend():
    """The cudnn frontend module, on torch's own libcudnn and libcudart (two copies of cuDNN in one process would
    each keep their own state). ImportError says what to install."""
    torch.backends.cudnn.version()  # torch loads libcudnn now if it had not yet
    lib = _mapped_library(r"^libcudnn\.so(\.\d+)*$")
    if lib is not None:  # the frontend dlopens the first libcudnn.so.9 on LD_LIBRARY_PATH: make it torch's
        lib_dir = os.path.dirname(os.path.realpath(lib))
        rest = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != lib_dir]
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([lib_dir, *rest])
    cudart = _mapped_library(r"^libcudart\.so\.\d+")
    if cudart is not None:
        os.environ.setdefault("CUDNN_FRONTEND_CUDART_LIB_NAME", cudart)
    try:
        import cudnn
    except ImportError as e:
        raise ImportError("train.attention=seektune_cudnn needs NVIDIA's cudnn frontend: "
                          "pip install nvidia-cudnn-frontend (or use train.attention=seektune_varlen)") from e
    if cudnn.backend_version() != torch.backends.cudnn.version():
        raise ImportError(f"the cudnn frontend loaded cuDNN {cudnn.backend_version()}, torch uses "
                          f"{torch.backends.cudnn.version()}; use train.attention=seektune_varlen")
    return cudnn


def unavailable() -> Optional[str]:
    """Why cuDNN attention cannot run here, or None."""
    if not torch.cuda.is_available():
        return "a CUDA GPU"
    try:
        frontend()
    except ImportError as e:
        return str(e)
    return None


def _pow2(n: int, least: int) -> int:
    return max(least, 1 << max(n - 1, 0).bit_length())


def _round64(n: int) -> int:
    return max(64, (n + 63) // 64 * 64)


@functools.cache
def _handle(device_index: int):
    cudnn = frontend()
    with torch.cuda.device(device_index):
        return cudnn.create_handle()


class _Graphs:
    """The forward and backward graphs of one bucket: `samples` (B) sequences in rows of at most `tokens` (T)
    tokens, `heads` heads, head dims d_qk/d_v, softmax scale `scale`, dtype bf16 or fp16."""

    def __init__(self, samples: int, tokens: int, heads: int, d_qk: int, d_v: int, scale: float, dtype, device: int):
        self.B, self.T, self.H, self.d_qk, self.d_v, self.scale = samples, tokens, heads, d_qk, d_v, scale
        self.cudnn, self.handle = frontend(), _handle(device)
        self.io_type = {torch.bfloat16: self.cudnn.data_type.BFLOAT16, torch.float16: self.cudnn.data_type.HALF}[dtype]
        self.forward_graph = self._forward()
        self.backward_graph = self._backward()
        self.workspace_bytes = max(1, self.forward_graph.get_workspace_size(), self.backward_graph.get_workspace_size())

    # Descriptors are (B, H, S, d) with S = T: the batch stride is a placeholder, the ragged offsets place samples.
    def _stride(self, width: int) -> list:
        return [self.T * self.H * width, width, self.H * width, 1]

    def _new_graph(self):
        c = self.cudnn
        return c.pygraph(io_data_type=self.io_type, intermediate_data_type=c.data_type.FLOAT,
                         compute_data_type=c.data_type.FLOAT, handle=self.handle)

    def _offset(self, g, uid: int):
        return g.tensor(name=f"offset{uid}", uid=uid, dim=[self.B + 1, 1, 1, 1], stride=[1, 1, 1, 1],
                        data_type=self.cudnn.data_type.INT64)

    def _qkv(self, g):
        c, B, H, S = self.cudnn, self.B, self.H, self.T
        q = g.tensor(name="q", uid=Q, dim=[B, H, S, self.d_qk], stride=self._stride(self.d_qk), data_type=self.io_type)
        k = g.tensor(name="k", uid=K, dim=[B, H, S, self.d_qk], stride=self._stride(self.d_qk), data_type=self.io_type)
        v = g.tensor(name="v", uid=V, dim=[B, H, S, self.d_v], stride=self._stride(self.d_v), data_type=self.io_type)
        for t, uid in ((q, OFF_Q), (k, OFF_K), (v, OFF_V)):
            t.set_ragged_offset(self._offset(g, uid))
        lens = [g.tensor(name=f"seq{uid}", uid=uid, dim=[B, 1, 1, 1], stride=[1, 1, 1, 1],
                         data_type=c.data_type.INT32) for uid in (SEQ_Q, SEQ_KV)]
        return q, k, v, lens

    def _mask(self) -> dict:
        # causal within each sample: the diagonal starts at each sample's first token (top-left), nothing right of it
        c = self.cudnn
        return dict(attn_scale=self.scale, use_padding_mask=True,
                    diagonal_alignment=c.diagonal_alignment.TOP_LEFT, diagonal_band_right_bound=0)

    def _stats_stride(self) -> list:
        return [self.T * self.H, 1, self.H, 1]  # fp32 log-sum-exp per token and head, token-major (T, H, 1)

    def _build(self, g):
        g.validate()
        g.build_operation_graph()
        g.create_execution_plans([self.cudnn.heur_mode.A, self.cudnn.heur_mode.FALLBACK])
        g.check_support()
        g.build_plans()
        return g

    def _forward(self):
        g = self._new_graph()
        q, k, v, (seq_q, seq_kv) = self._qkv(g)
        o, stats = g.sdpa(name="attention", q=q, k=k, v=v, generate_stats=True, seq_len_q=seq_q, seq_len_kv=seq_kv,
                          **self._mask())
        o.set_uid(O).set_output(True).set_dim([self.B, self.H, self.T, self.d_v]).set_stride(self._stride(self.d_v))
        o.set_ragged_offset(self._offset(g, OFF_O))
        stats.set_uid(STATS).set_output(True).set_data_type(self.cudnn.data_type.FLOAT)
        stats.set_dim([self.B, self.H, self.T, 1]).set_stride(self._stats_stride())
        stats.set_ragged_offset(self._offset(g, OFF_STATS))
        return self._build(g)

    def _backward(self):
        g = self._new_graph()
        q, k, v, (seq_q, seq_kv) = self._qkv(g)
        o = g.tensor(name="o", uid=O, dim=[self.B, self.H, self.T, self.d_v], stride=self._stride(self.d_v),
                     data_type=self.io_type)
        do = g.tensor(name="do", uid=DO, dim=[self.B, self.H, self.T, self.d_v], stride=self._stride(self.d_v),
                      data_type=self.io_type)
        o_offset = self._offset(g, OFF_O)
        o.set_ragged_offset(o_offset)
        do.set_ragged_offset(o_offset)  # dO is laid out as O
        stats = g.tensor(name="stats", uid=STATS, dim=[self.B, self.H, self.T, 1], stride=self._stats_stride(),
                         data_type=self.cudnn.data_type.FLOAT)  # as the forward wrote it
        stats.set_ragged_offset(self._offset(g, OFF_STATS))
        dq, dk, dv = g.sdpa_backward(name="attention_backward", q=q, k=k, v=v, o=o, dO=do, stats=stats,
                                     seq_len_q=seq_q, seq_len_kv=seq_kv, max_total_seq_len_q=_round64(self.T),
                                     max_total_seq_len_kv=_round64(self.T), **self._mask())
        for t, uid, off, width in ((dq, DQ, OFF_DQ, self.d_qk), (dk, DK, OFF_DK, self.d_qk), (dv, DV, OFF_DV, self.d_v)):
            t.set_uid(uid).set_output(True).set_dim([self.B, self.H, self.T, width]).set_stride(self._stride(width))
            t.set_ragged_offset(self._offset(g, off))
        return self._build(g)

    def boundaries(self, cu: torch.Tensor) -> dict:
        """Execute-time tensors for sample boundaries `cu` (n+1,): lengths and, per tensor, ragged offsets in
        elements; samples past n are zero-length ones at the row's end."""
        n = cu.shape[0] - 1
        if n < self.B:
            cu = torch.cat([cu, cu[-1:].expand(self.B - n)])
        starts = cu.to(torch.int64).view(-1, 1, 1, 1)
        lens = (cu[1:] - cu[:-1]).to(torch.int32).view(-1, 1, 1, 1)
        qk, v = starts * (self.H * self.d_qk), starts * (self.H * self.d_v)
        return {SEQ_Q: lens, SEQ_KV: lens, OFF_Q: qk, OFF_K: qk, OFF_V: v, OFF_O: v, OFF_STATS: starts * self.H,
                OFF_DQ: qk, OFF_DK: qk, OFF_DV: v}

    def _run(self, graph, tensors: dict, device) -> None:
        self.cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream(device).cuda_stream)
        workspace = torch.empty(self.workspace_bytes, dtype=torch.uint8, device=device)
        graph.execute(tensors, workspace, handle=self.handle)

    def forward(self, q, k, v, cu):
        T = q.shape[0]
        o = q.new_empty(T, self.H, self.d_v)
        stats = q.new_empty(T, self.H, 1, dtype=torch.float32)
        meta = self.boundaries(cu)
        self._run(self.forward_graph, {Q: q, K: k, V: v, O: o, STATS: stats, **{u: meta[u] for u in (
            SEQ_Q, SEQ_KV, OFF_Q, OFF_K, OFF_V, OFF_O, OFF_STATS)}}, q.device)
        return o, stats

    def backward(self, q, k, v, o, stats, do, cu):
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        self._run(self.backward_graph, {Q: q, K: k, V: v, O: o, DO: do, STATS: stats, DQ: dq, DK: dk, DV: dv,
                                        **self.boundaries(cu)}, q.device)
        return dq, dk, dv


_GRAPHS: dict[tuple, _Graphs] = {}


def graphs_for(q: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, scale: float) -> _Graphs:
    """The bucket's graphs, built on first use (~0.05-1.5 s, once per process and bucket)."""
    key = (_pow2(cu.shape[0] - 1, 1), _pow2(q.shape[0], 64), q.shape[1], q.shape[2], v.shape[2], float(scale),
           q.dtype, q.device.index)
    graphs = _GRAPHS.get(key)
    if graphs is None:
        try:
            graphs = _GRAPHS[key] = _Graphs(*key[:7], device=key[7])
        except Exception as e:
            raise RuntimeError(f"cuDNN cannot build attention for {key[0]} samples in rows of {key[1]} tokens, "
                               f"{key[2]} heads, head dims {key[3]}/{key[4]}, {q.dtype}: {e}; "
                               "use train.attention=seektune_varlen") from e
    return graphs


def built_buckets() -> int:
    return len(_GRAPHS)


@atexit.register
def _release_graphs() -> None:
    # Free the graphs and handles before the interpreter tears the binding down; otherwise nanobind reports
    # hundreds of "leaked instances" at every exit (seen on the GPU, session 8).
    _GRAPHS.clear()
    _handle.cache_clear()


@torch.library.custom_op("seektune::cudnn_packed_attention", mutates_args=())
def packed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor,
                     scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention within each sample of a packed row: q, k (T, heads, d_qk), v (T, heads, d_v), token-major
    and contiguous; cu (n+1,) int32 sample boundaries -> (out (T, heads, d_v), log-sum-exp (T, heads, 1) fp32)."""
    return graphs_for(q, v, cu, scale).forward(q, k, v, cu)


@packed_attention.register_fake
def _(q, k, v, cu, scale):
    return q.new_empty(q.shape[0], q.shape[1], v.shape[2]), q.new_empty(q.shape[0], q.shape[1], 1,
                                                                         dtype=torch.float32)


@torch.library.custom_op("seektune::cudnn_packed_attention_backward", mutates_args=())
def packed_attention_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                              stats: torch.Tensor, do: torch.Tensor, cu: torch.Tensor,
                              scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return graphs_for(q, v, cu, scale).backward(q, k, v, o, stats, do, cu)


@packed_attention_backward.register_fake
def _(q, k, v, o, stats, do, cu, scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _save(ctx, inputs, output):
    q, k, v, cu, scale = inputs
    ctx.save_for_backward(q, k, v, output[0], output[1], cu)
    ctx.scale = scale


def _backward(ctx, grad_out, _grad_stats):
    q, k, v, o, stats, cu = ctx.saved_tensors
    dq, dk, dv = packed_attention_backward(q, k, v, o, stats, grad_out.contiguous(), cu, ctx.scale)
    return dq, dk, dv, None, None


packed_attention.register_autograd(_backward, setup_context=_save)


def cudnn_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' attention interface: query/key/value (1, heads, total_tokens, dim) for one packed row ->
    (1, total_tokens, heads, dim). Anything else (padded batches, decoding against a cache) goes to sdpa."""
    if (not is_packed_row(query, key, attention_mask) or dropout
            or query.dtype not in (torch.bfloat16, torch.float16) or not query.is_cuda):
        return sdpa_fallback(module, query, key, value, attention_mask, dropout, scaling, kwargs)
    cu, _ = _boundaries(kwargs, query.shape[2], query.device)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, dim)
    k, v = repeat_kv_heads(k, v, q.shape[1], dim=1)
    scale = float(scaling) if scaling is not None else q.shape[-1] ** -0.5
    out, _ = packed_attention(q.contiguous(), k.contiguous(), v.contiguous(), cu, scale)
    return out.unsqueeze(0), None


def register_cudnn_attention() -> None:
    """Make `attn_implementation="seektune_cudnn"` available to every transformers model."""
    register_packed_attention(CUDNN, cudnn_attention_forward)
