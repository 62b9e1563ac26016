"""Gradient checkpointing inside each compiled decoder layer.

transformers checkpoints a layer from the outside: torch.utils.checkpoint runs the (compiled) layer, drops what it
saved through saved-tensor hooks, and on the backward pass calls the compiled layer a second time before its
compiled backward runs. That is three trips through the compiled-code machinery per layer and step (guards, wrapper
code, one hook call per saved tensor), which is what a MoE step spends its time on: its layers launch hundreds of
small kernels on a few thousand tokens, so the host, not the GPU, sets the pace.

Here torch.compile traces the checkpoint itself. The forward graph keeps only the layer's inputs; the backward
graph recomputes the layer and back-propagates through it in one call. Same arithmetic, same memory; two trips
instead of three, and no hooks.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from seektune.training.speed import decoder_layers, plain_forward, split_layer_call


class CheckpointedCompiledLayer:
    """A decoder layer's forward: compiled with the checkpoint inside while training, compiled plain otherwise."""

    def __init__(self, layer):
        self.layer = layer
        run = plain_forward(layer)

        def checkpointed(hidden_states, **kwargs):
            return checkpoint(run, hidden_states, use_reentrant=False, **kwargs)

        self.train_step = torch.compile(checkpointed, dynamic=True)
        self.plain = torch.compile(run, dynamic=True)

    def __call__(self, *args, **kwargs):
        training = self.layer.training and torch.is_grad_enabled()
        hidden, kwargs = split_layer_call(self.layer, args, kwargs, recomputed=training)
        return (self.train_step if training else self.plain)(hidden, **kwargs)


def compile_checkpointed_layers(model) -> int:
    """Compile every decoder layer that transformers checkpoints with the checkpoint inside the graph (after LoRA is
    attached). Returns how many layers; 0 when gradient checkpointing is off."""
    layers = [layer for layer in decoder_layers(model) if getattr(layer, "gradient_checkpointing", False)]
    for layer in layers:
        layer.gradient_checkpointing = False  # transformers' own wrapper steps aside
        layer.forward = CheckpointedCompiledLayer(layer)
    return len(layers)
