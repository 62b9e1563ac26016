"""Decoder layers whose forward seektune replaces by its own checkpointing node (offloaded or CUDA-graphed).

Both wrappers take over from transformers' checkpointing wrapper, run the layer class's own forward inside their
autograd node, and can compile what they run; this is the part they share.
"""

from __future__ import annotations

import torch

from seektune.training.speed import compiled, decoder_layers

WRAPPER = "_seektune_checkpointing"  # the attribute of a layer that holds its wrapper


def plain_forward(layer):
    """The layer class's forward without transformers' checkpointing wrapper (transformers >= 5.2x wraps forward)."""
    forward = type(layer).forward
    if forward.__name__ == "forward_with_checkpointing":
        forward = forward.__wrapped__
    return forward.__get__(layer)


class CheckpointedLayer:
    """The forward of one decoder layer, as a wrapper installs it: plain outside training, the subclass's own
    checkpointing (`checkpointed`) while training. `run` is the layer's own forward, or its compiled version
    (compile_wrapped)."""

    kind = "seektune"  # named in errors

    def __init__(self, layer):
        self.layer = layer
        self.run = plain_forward(layer)

    def __call__(self, *args, **kwargs):
        if args:
            hidden, args = args[0], args[1:]
        else:
            hidden = kwargs.pop("hidden_states")
        if args:  # positional extras are not part of the decoder-layer protocol this wraps
            raise TypeError(f"{type(self.layer).__name__}: unexpected positional arguments for {self.kind} "
                            "checkpointing")
        if not (self.layer.training and torch.is_grad_enabled()):
            return self.run(hidden, **kwargs)
        kwargs.pop("past_key_values", None)  # the recomputation must not write the cache a second time
        if "use_cache" in kwargs:
            kwargs["use_cache"] = False
        return self.checkpointed(hidden, kwargs)

    def checkpointed(self, hidden, kwargs: dict):
        raise NotImplementedError


def wrap_layer_forwards(model, make) -> list:
    """Replace each decoder layer's forward by `make(layer, index)`; returns the wrappers."""
    wrappers = []
    for index, layer in enumerate(decoder_layers(model)):
        layer.gradient_checkpointing = False  # transformers' own wrapper steps aside
        wrapper = make(layer, index)
        setattr(layer, WRAPPER, wrapper)
        layer.forward = wrapper
        wrappers.append(wrapper)
    return wrappers


def layer_wrappers(model) -> list:
    """The wrappers installed by wrap_layer_forwards ([] when the layers run as transformers made them)."""
    return [w for w in (getattr(layer, WRAPPER, None) for layer in decoder_layers(model)) if w is not None]


def compile_wrapped(model, joint_cse: bool = True) -> int:
    """Compile what each wrapper runs (its checkpointing node stays outside the graph). Returns how many."""
    wrappers = layer_wrappers(model)
    for wrapper in wrappers:
        wrapper.run = compiled(wrapper.run, joint_cse)
    return len(wrappers)
