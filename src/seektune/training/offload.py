"""Gradient checkpointing that keeps each decoder layer's input in pinned CPU memory.

With checkpointing, what stays on the GPU between the forward and the backward pass is each layer's input: one
(tokens x hidden) tensor per layer, 1 GiB for a 30-layer 7B model at 4k tokens and 22 GiB at 96k. Here the forward
pass runs each layer without building a graph, copies its input to the host on a side stream (the copy overlaps the
next layers' compute), and frees it on the GPU; the backward pass brings it back, recomputes the layer with
gradients and back-propagates through it. While layer i runs its backward, the input of layer i-1 is already on its
way back, so the copies hide behind compute in both directions.

torch.utils.checkpoint cannot do this: it keeps the layer inputs by reference. This is the reentrant scheme
(recompute inside a custom autograd node) with the RNG and autocast state restored for the recomputation, as
torch.utils.checkpoint does, so dropout masks are the same both times.
"""

from __future__ import annotations

import weakref
from contextlib import nullcontext

import torch

from seektune.training.layer_wrap import CheckpointedLayer, wrap_layer_forwards
from seektune.training.lora_fused import mark_residual_mlp, recomputing_for_backward


class _Slot:
    """One layer input between its forward and its backward: on the host (with the copy's event) or, on CPU-only
    machines and for inputs that are not CUDA tensors, the tensor itself."""

    __slots__ = ("tensor", "host", "device", "copied", "back", "ready", "__weakref__")

    def __init__(self, tensor=None, host=None, device=None, copied=None):
        self.tensor, self.host, self.device, self.copied = tensor, host, device, copied
        self.back = self.ready = None


class HostLedger:
    """Layer inputs parked in pinned host memory, in forward order, so the backward pass can prefetch the next one."""

    def __init__(self):
        self._stream = None
        self._pending: list[weakref.ref] = []  # slots not yet fetched, forward order; dead graphs drop out

    def store(self, t: torch.Tensor) -> _Slot:
        if not t.is_cuda:
            return _Slot(tensor=t)
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=t.device)
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)  # from torch's caching host allocator
        self._stream.wait_stream(torch.cuda.current_stream(t.device))
        with torch.cuda.stream(self._stream):
            host.copy_(t, non_blocking=True)
            copied = self._stream.record_event()
        t.record_stream(self._stream)  # its GPU memory is reused only after the copy has read it
        slot = _Slot(host=host, device=t.device, copied=copied)
        self._pending = [r for r in self._pending if r() is not None] + [weakref.ref(slot)]
        return slot

    def fetch(self, slot: _Slot) -> torch.Tensor:
        if slot.tensor is not None:
            return slot.tensor
        self._bring_back(slot)
        current = torch.cuda.current_stream(slot.device)
        current.wait_event(slot.ready)
        t = slot.back
        t.record_stream(current)
        slot.back = slot.host = None
        self._pending = [r for r in self._pending if r() is not None and r() is not slot]
        if self._pending:  # the layer below runs its backward next
            self._bring_back(self._pending[-1]())
        return t

    def _bring_back(self, slot: _Slot) -> None:
        if slot.back is not None:
            return
        with torch.cuda.stream(self._stream):
            self._stream.wait_event(slot.copied)
            slot.back = slot.host.to(slot.device, non_blocking=True)
            slot.ready = self._stream.record_event()


class _OffloadedCheckpoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run, ledger, kwargs, _anchor, hidden):
        ctx.run, ctx.ledger, ctx.kwargs = run, ledger, kwargs
        ctx.cpu_rng = torch.get_rng_state()
        ctx.cuda_rng = torch.cuda.get_rng_state(hidden.device) if hidden.is_cuda else None
        kind = hidden.device.type
        ctx.autocast = (kind, torch.get_autocast_dtype(kind)) if torch.is_autocast_enabled(kind) else None
        with torch.no_grad():
            out = run(hidden, **kwargs)
        ctx.slot = ledger.store(hidden.detach())
        return out

    @staticmethod
    def backward(ctx, *grads):
        hidden = ctx.ledger.fetch(ctx.slot).detach().requires_grad_(True)
        devices = [hidden.device] if ctx.cuda_rng is not None else []
        with torch.random.fork_rng(devices=devices, device_type="cuda"):
            torch.set_rng_state(ctx.cpu_rng)
            if ctx.cuda_rng is not None:
                torch.cuda.set_rng_state(ctx.cuda_rng, hidden.device)
            amp = torch.autocast(ctx.autocast[0], dtype=ctx.autocast[1]) if ctx.autocast else nullcontext()
            with torch.enable_grad(), amp, recomputing_for_backward():
                out = ctx.run(hidden, **ctx.kwargs)
        outs = out if isinstance(out, tuple) else (out,)
        pairs = [(o, g) for o, g in zip(outs, grads)
                 if isinstance(o, torch.Tensor) and o.requires_grad and g is not None]
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        return None, None, None, None, hidden.grad if ctx.needs_input_grad[4] else None


class OffloadedLayer(CheckpointedLayer):
    """The forward of one decoder layer: checkpointed through the host while training, plain otherwise."""

    kind = "offloaded"

    def __init__(self, layer, ledger: HostLedger, skip_unused_mlp_output: bool = False):
        super().__init__(layer)
        self.ledger = ledger
        if skip_unused_mlp_output:
            mark_residual_mlp(layer)  # the recomputation then leaves out the MLP's down projection
        self.anchor = torch.empty(0, requires_grad=True)  # the node gets a backward even if no input needs one

    def checkpointed(self, hidden, kwargs: dict):
        return _OffloadedCheckpoint.apply(self.run, self.ledger, kwargs, self.anchor, hidden)


def offload_layer_inputs(model, skip_unused_mlp_output: bool = False) -> int:
    """Replace transformers' checkpointing of each decoder layer by the offloaded one. Returns how many layers.

    skip_unused_mlp_output: the recomputation leaves out the one-node MLP's down projection, whose output it never
    reads (lora_fused.recomputing_for_backward; train.lean_recompute). Same gradients, 1.06x the step speed on the 7B
    shape, but the first step compiled 30-90 s longer on an H100 (bench/RESULTS.md, sessions 11-12), hence off by
    default."""
    ledger = HostLedger()
    return len(wrap_layer_forwards(model, lambda layer, _index: OffloadedLayer(layer, ledger, skip_unused_mlp_output)))
