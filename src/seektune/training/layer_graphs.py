"""Checkpointed decoder layers replayed as CUDA graphs.

A MoE step is bound by the host: each V2-Lite layer launches ~280 kernels per step, and the GPU waits on Python
between them (bench/RESULTS.md, session 5). One layer's forward+backward took 7.7 ms compiled and 4.5 ms as a CUDA
graph of the same eager code (bench/moe_layer_graphs.py, session 6). This wraps every decoder layer in a reentrant
checkpoint whose two halves are graphs:

  forward   the layer without autograd, input x[i] -> output x[i+1]
  backward  the layer recomputed with autograd, then back-propagated: (x[i], dy) -> (dx, LoRA gradients)

Graphs need fixed shapes and addresses, packed rows change length every step. So a row of T tokens runs in a bucket
of T_b >= T tokens: the T_b - T pad tokens form one extra sample at the end (zeros, their own attention block, zero
gradient), and the sample boundaries (cu_seq_lens) are padded with empty samples to a power of two. Graphs are
captured once per (bucket, boundary count) and layer, all in one memory pool. The layer inputs x[0..L] live in
buffers that outlast the forward pass: they are the checkpoints, as torch's checkpointing would keep them. Layer
i's output buffer is layer i+1's input, and gradients between layers go through two alternating buffers, so
consecutive graphed layers pass tensors without copies.

Limits, checked per call (the layer then runs under torch's checkpointing instead): packed rows with sample
boundaries (no attention mask), no dropout, no cache. Two forward passes before one backward would overwrite the
checkpoints, so that raises instead of computing wrong gradients.
"""

from __future__ import annotations

import traceback
import warnings
from contextlib import contextmanager, nullcontext
from typing import Optional

import torch

from seektune.training.layer_wrap import CheckpointedLayer, layer_wrappers, wrap_layer_forwards

_BOUNDARY_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k")
_LENGTH_KEYS = ("max_length_q", "max_length_k")
# Loss arguments that transformers passes down through every layer unused: a graph must neither read nor key on
# them (the Trainer's token count changes every step).
_UNUSED_BY_LAYERS = ("num_items_in_batch",)


def bucket_length(tokens: int) -> int:
    """Round up to 8 buckets per power of two (at most 12.5% pad tokens, 6% on average); 128 at least."""
    step = max(16, 1 << max(0, (tokens - 1).bit_length() - 4))
    return max(128, -(-tokens // step) * step)


def bucket_boundaries(samples: int) -> int:
    """Samples per packed row incl. the pad sample, rounded up to a power of two."""
    return 1 << samples.bit_length() if samples & (samples - 1) else samples


class _EagerReplay:
    """What a CUDA graph does, without CUDA: capture runs the function once, replay runs it again on the same
    buffers. Lets the buffer logic run (and be tested) on a CPU."""

    def __init__(self):
        self.fn = None

    def capture(self, fn, pool) -> None:
        self.fn = fn
        fn()

    def replay(self) -> None:
        self.fn()


class _CudaReplay:
    def __init__(self):
        self.graph = torch.cuda.CUDAGraph()

    def capture(self, fn, pool) -> None:
        with torch.cuda.graph(self.graph, pool=pool):
            fn()

    def replay(self) -> None:
        self.graph.replay()


class _Entry:
    """One layer's two graphs for one bucket."""

    __slots__ = ("forward", "backward")

    def __init__(self, forward, backward):
        self.forward, self.backward = forward, backward


class GraphBook:
    """What the graphed layers of one model share: the checkpoint and gradient buffers, the padded per-step inputs,
    the memory pool and counters."""

    def __init__(self):
        self.layers: list = []  # the GraphedLayer of every decoder layer, in order
        self.capacity = 0  # tokens the buffers hold
        self.x: list[torch.Tensor] = []  # x[i]: layer i's input (its checkpoint); x[L]: the last output
        self.grads: list[torch.Tensor] = []  # two, alternating between layers
        self.steps: dict = {}  # bucket key -> padded per-step inputs (kwargs for the layer)
        self.sources: dict = {}  # bucket key -> the unpadded inputs last copied in (so one copy serves every layer)
        self.pool = None
        self.captures = 0
        self.pad_tokens = 0
        self.tokens = 0
        self.owner: dict = {}  # layer index -> the forward pass its checkpoint belongs to
        self.failed: dict = {}  # bucket key -> why its capture failed (that bucket runs without graphs)
        self.noted: set = set()

    def note(self, reason: str) -> None:
        """Say once per reason why layers run under torch's checkpointing instead of as graphs."""
        if reason not in self.noted:
            self.noted.add(reason)
            warnings.warn(f"graphed decoder layers: {reason}; running those calls under torch's checkpointing",
                          stacklevel=3)

    # ---- buffers ----

    def ensure_capacity(self, tokens: int, like: torch.Tensor) -> None:
        if tokens <= self.capacity and self.x and self.x[0].dtype == like.dtype:
            return
        # A larger bucket: new buffers (25% headroom), and every graph captured on the old ones goes.
        capacity = max(tokens, self.capacity * 5 // 4) if self.capacity else tokens
        hidden = like.shape[-1]
        self.x = [like.new_zeros(1, capacity, hidden) for _ in range(len(self.layers) + 1)]
        self.grads = [like.new_zeros(1, capacity, hidden) for _ in range(2)]
        self.capacity = capacity
        self.steps.clear()
        self.sources.clear()
        for wrapper in self.layers:
            wrapper.entries.clear()
        self.pool = torch.cuda.graph_pool_handle() if like.is_cuda else None

    def step_inputs(self, key, tokens: int, kwargs: dict) -> dict:
        """The layer kwargs padded to the bucket, in buffers every graph of the bucket reads; copied in once per
        step (every layer of a step gets the same tensors)."""
        padded_len, samples = key[:2]
        static = self.steps.get(key)
        if static is None:
            static = self.steps[key] = {name: _empty_like_padded(value, name, padded_len, samples)
                                        for name, value in kwargs.items()}
        sources = self.sources.get(key)
        if sources is None or any(sources.get(n) is not v for n, v in kwargs.items() if _is_tensors(v)):
            for name, value in kwargs.items():
                _copy_padded(static[name], value, name, tokens, padded_len)
            self.sources[key] = {n: v for n, v in kwargs.items() if _is_tensors(v)}  # kept: their ids stay unique
        return static


def _is_tensors(value) -> bool:
    return isinstance(value, torch.Tensor) or (isinstance(value, tuple) and any(isinstance(v, torch.Tensor) for v in value))


def _empty_like_padded(value, name: str, padded_len: int, samples: int):
    if name in _BOUNDARY_KEYS:
        return value.new_zeros(samples + 1)
    if name in _LENGTH_KEYS:
        return padded_len  # an upper bound: the kernel's grid covers it, blocks past a sample's end return at once
    if isinstance(value, tuple):
        return tuple(_empty_like_padded(v, name, padded_len, samples) for v in value)
    if isinstance(value, torch.Tensor) and value.dim() == 0:  # a scalar some model passes to its layers
        return value.new_zeros(())
    if isinstance(value, torch.Tensor):  # (1, tokens, ...): position ids and rotary embeddings
        return value.new_zeros(value.shape[0], padded_len, *value.shape[2:])
    return value


def _copy_padded(static, value, name: str, tokens: int, padded_len: int) -> None:
    if name in _BOUNDARY_KEYS:
        n = value.shape[0]
        static[:n].copy_(value)
        static[n:].fill_(padded_len)  # the pad sample, then empty ones
    elif isinstance(value, tuple):
        for s, v in zip(static, value):
            _copy_padded(s, v, name, tokens, padded_len)
    elif isinstance(value, torch.Tensor) and value.dim() == 0:
        static.copy_(value)
    elif isinstance(value, torch.Tensor):
        static[:, :tokens].copy_(value)
        if name == "position_ids":
            static[:, tokens:].copy_(torch.arange(padded_len - tokens, device=static.device))
        else:  # rotary tables of the pad tokens: zeros keep them finite
            static[:, tokens:].zero_()


def unsupported(hidden, kwargs: dict) -> Optional[str]:
    """Why this call cannot run as a graph, or None."""
    if hidden.dim() != 3 or hidden.shape[0] != 1:
        return "not one packed row"
    if kwargs.get("attention_mask") is not None:
        return "an attention mask (padded batches)"
    if kwargs.get("past_key_values") is not None:
        return "a KV cache"
    if not isinstance(kwargs.get("cu_seq_lens_q"), torch.Tensor):
        return "no sample boundaries (cu_seq_lens_q)"
    tokens = hidden.shape[1]
    for name, value in kwargs.items():
        if name in _BOUNDARY_KEYS or name in _LENGTH_KEYS or name == "attention_mask":
            continue
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, torch.Tensor) and v.dim() > 0 and (v.dim() < 2 or v.shape[0] != 1 or v.shape[1] != tokens):
                return f"input {name!r} of shape {tuple(v.shape)}"
            if not isinstance(v, (torch.Tensor, int, float, bool, str, type(None))):
                return f"input {name!r} of type {type(v).__name__}"
    return None


class GraphedLayer(CheckpointedLayer):
    """The forward of one decoder layer: graphed checkpointing while training, plain otherwise."""

    kind = "graphed"

    def __init__(self, layer, index: int, book: GraphBook):
        super().__init__(layer)
        self.index = index
        self.book = book
        self.entries: dict = {}
        self.params: Optional[list] = None
        self.slots: list = []  # (module, attribute, index into params) for every place a trainable tensor sits
        self.param_grads: list = []
        self.dropout: Optional[str] = None  # why dropout rules graphs out, if it does

    def checkpointed(self, hidden, kwargs: dict):
        for name in _UNUSED_BY_LAYERS:
            kwargs.pop(name, None)
        if self.params is None:  # the layer's modules are fixed once training starts
            self.params, self.slots = _trainable_slots(self.layer)
            self.param_grads = [torch.zeros_like(p) for p in self.params]
            self.dropout = _active_dropout(self.layer)
        reason = unsupported(hidden, kwargs) or self.dropout
        if not reason:
            try:
                with torch.no_grad():  # copies into the buffers must not join the autograd graph
                    key, copied = self.prepare(hidden, kwargs)
            except _CaptureFailed as e:
                reason = str(e)
        if reason:
            self.book.note(reason)
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self.run, hidden, use_reentrant=False, **kwargs)
        return _GraphedCheckpoint.apply(self, key, copied, hidden, *self.params)

    def prepare(self, hidden, kwargs: dict):
        """Bucket the row, copy this step's inputs into the bucket's buffers, capture the graphs on first use.
        Returns (bucket key, whether the row was copied in)."""
        book, i = self.book, self.index
        tokens = hidden.shape[1]
        padded = bucket_length(tokens)
        # Graphs bake in plain values (flags, ints), which tensors they read and the autocast state: all part of
        # the key. cu_seq_lens has samples + 1 entries, which is also the sample count with the pad sample.
        kind = hidden.device.type
        plain = tuple(sorted((n, "<tensor>" if _is_tensors(v) else v) for n, v in kwargs.items()
                             if n not in _LENGTH_KEYS))
        amp = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
        key = (padded, bucket_boundaries(kwargs["cu_seq_lens_q"].shape[0]), plain, amp)
        if key in book.failed:
            raise _CaptureFailed(book.failed[key])
        book.ensure_capacity(padded, hidden)
        static = book.step_inputs(key, tokens, kwargs)
        x_in = book.x[i][:, :padded]
        copied = hidden.data_ptr() != x_in.data_ptr()
        if copied:  # the row comes from outside (the embeddings, or a layer that is not graphed)
            x_in[:, :tokens].copy_(hidden)
            x_in[:, tokens:].zero_()
        if key not in self.entries:
            try:
                self.entries[key] = self._capture(key, static)
            except _CaptureFailed as e:
                book.failed[key] = str(e)  # every layer runs this bucket under torch's checkpointing from now on
                raise
        return key, copied

    # ---- called from the autograd node ----

    def forward_pass(self, tokens: int, key, token):
        book, i = self.book, self.index
        self.entries[key].forward.replay()
        book.owner[i] = token
        if i == 0:
            book.tokens += tokens
            book.pad_tokens += key[0] - tokens
        return book.x[i + 1][:, :tokens]

    def backward_pass(self, grad, key, copied: bool, token):
        book, i = self.book, self.index
        if book.owner.get(i) is not token:
            raise RuntimeError("graphed decoder layers: a second forward pass ran before this one's backward and "
                               "overwrote its checkpoints; set train.cuda_graphs=false for this training loop")
        tokens, padded = grad.shape[1], key[0]
        g_out = book.grads[(i + 1) % 2][:, :padded]
        if grad.data_ptr() != g_out.data_ptr():
            g_out[:, :tokens].copy_(grad)
            g_out[:, tokens:].zero_()
        self.entries[key].backward.replay()
        g_in = book.grads[i % 2][:, :tokens]
        # A gradient leaving the graphed stack may end in a leaf's .grad: it must not alias a buffer.
        return g_in.clone() if copied else g_in

    def _capture(self, key, static: dict) -> _Entry:
        book, i = self.book, self.index
        padded = key[0]
        x_in, x_out = book.x[i][:, :padded], book.x[i + 1][:, :padded]
        g_out, g_in = book.grads[(i + 1) % 2][:, :padded], book.grads[i % 2][:, :padded]
        kind = x_in.device.type
        amp = (torch.autocast(kind, dtype=torch.get_autocast_dtype(kind)) if torch.is_autocast_enabled(kind)
               else nullcontext())
        run, params, param_grads, slots = self.run, self.params, self.param_grads, self.slots

        def forward():
            with torch.no_grad(), amp:
                x_out.copy_(_first(run(x_in, **static)))

        def backward():
            x = x_in.detach().requires_grad_(True)
            # Gradients for stand-ins that share the weights' memory: the weights' own gradient nodes were made on
            # the default stream by earlier steps, and a capture must not touch that stream.
            stand_ins = [torch.nn.Parameter(p.detach()) for p in params]
            with torch.enable_grad(), _swapped(slots, stand_ins):
                with amp:
                    out = _first(run(x, **static))
                grads = torch.autograd.grad(out, [x, *stand_ins], g_out, allow_unused=True)
            g_in.copy_(grads[0])
            for buf, g in zip(param_grads, grads[1:]):
                if g is None:
                    buf.zero_()
                else:
                    buf.copy_(g)

        make = _CudaReplay if x_in.is_cuda else _EagerReplay
        if x_in.is_cuda:
            # Lazy initialisation (cuBLAS workspaces, kernel choices) must not happen inside a capture: warm up
            # on a side stream first, as torch.cuda.make_graphed_callables does. The warm-up writes only buffers
            # that hold nothing during a forward pass: layer i's output and the gradient buffers.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                forward()
                backward()
            torch.cuda.current_stream().wait_stream(side)
        fwd, bwd = make(), make()
        try:
            fwd.capture(forward, book.pool)
            bwd.capture(backward, book.pool)
        except Exception as e:  # an operation a graph cannot hold (a host sync, say)
            cause = e  # the end of a failed capture raises its own error over the one that broke it
            while cause.__context__ is not None:
                cause = cause.__context__
            where = "".join(traceback.format_tb(cause.__traceback__)[-3:])
            raise _CaptureFailed(f"CUDA graph capture of layer {i} failed for rows of {padded} tokens, "
                                 f"{key[1]} samples ({(str(cause).splitlines() or [repr(cause)])[0]}) in\n{where}") from e
        book.captures += 1
        return _Entry(fwd, bwd)


def _trainable_slots(layer):
    """The layer's trainable tensors (each once) and every (module, attribute) that holds one."""
    params, index, slots = [], {}, []
    for module in layer.modules():
        for name, p in module._parameters.items():
            if p is None or not p.requires_grad:
                continue
            if id(p) not in index:
                index[id(p)] = len(params)
                params.append(p)
            slots.append((module, name, index[id(p)]))
    return params, slots


@contextmanager
def _swapped(slots, tensors):
    """The module attributes in `slots` hold `tensors` inside the block."""
    old = [module._parameters[name] for module, name, _ in slots]
    for module, name, i in slots:
        module._parameters[name] = tensors[i]
    try:
        yield
    finally:
        for (module, name, _), p in zip(slots, old):
            module._parameters[name] = p


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _active_dropout(layer) -> Optional[str]:
    for m in layer.modules():
        if isinstance(m, torch.nn.Dropout) and m.p > 0 and m.training:
            return "dropout in the layer (a graph would replay one mask); set lora.dropout=0"
    for name in ("attention_dropout", "dropout"):
        attn = getattr(layer, "self_attn", None)
        if attn is not None and getattr(attn, name, 0.0) and attn.training:
            return "attention dropout (a graph would replay one mask)"
    return None


class _CaptureFailed(RuntimeError):
    pass


class _GraphedCheckpoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, wrapper: GraphedLayer, key, copied: bool, hidden, *params):
        ctx.wrapper, ctx.key, ctx.copied, ctx.token = wrapper, key, copied, object()
        return wrapper.forward_pass(hidden.shape[1], key, ctx.token)

    @staticmethod
    def backward(ctx, grad):
        wrapper = ctx.wrapper
        g_in = wrapper.backward_pass(grad, ctx.key, ctx.copied, ctx.token)
        # The held buffers themselves, not views: autograd then adds/copies them into .grad instead of adopting them
        return (None, None, None, g_in if ctx.needs_input_grad[3] else None,
                *(g for g in wrapper.param_grads))


def graph_layers(model) -> int:
    """Replace torch's checkpointing of each decoder layer by the graphed one. Returns how many layers."""
    book = GraphBook()
    book.layers = wrap_layer_forwards(model, lambda layer, index: GraphedLayer(layer, index, book))
    return len(book.layers)


def graph_stats(model) -> Optional[dict]:
    """Captures and pad-token share so far (for the run summary), or None when no layer is graphed."""
    graphed = [w for w in layer_wrappers(model) if isinstance(w, GraphedLayer)]
    if not graphed:
        return None
    book = graphed[0].book
    return {"captures": book.captures, "tokens": book.tokens, "pad_tokens": book.pad_tokens,
            "failed": sorted(book.failed.values())}
