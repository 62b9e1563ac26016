"""LoRA linear layers in one autograd node: the frozen product and the low-rank update share one output buffer.

PEFT computes `base(x) + lora_B(lora_A(x)) * scaling` as separate operations: x is cast to the adapter's fp32 dtype,
the update is written to its own fp32 output, scaled, added and cast back, and autograd sums the input gradients of
the two branches with yet another pass. On the large projections of a 7B model those extra passes over
(tokens x features) tensors cost about as much as the adapter's matmuls themselves. Here the update is added by the
matmul's epilogue (`addmm_`) in the activations' dtype, and the backward pass accumulates the input gradient the same
way. The arithmetic is PEFT's; only where the sums happen changes (and the low-rank products run in bf16 with fp32
accumulation, as under autocast).

Only plain LoRA on an nn.Linear or bitsandbytes 4-bit base is fused; anything else (dropout, DoRA, several active
adapters, merged or disabled adapters, 8-bit bases) keeps PEFT's own forward, checked on every call.
"""

from __future__ import annotations

import torch


class _LoraLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float, dequantize=None):
        # A 4-bit base passes `dequantize` instead of a weight: the bf16 weight exists only during each product, and
        # the backward pass dequantizes again (as bitsandbytes' own matmul does), so it is never kept.
        if dequantize is not None:
            weight = dequantize()
        # One compute dtype for every product: autocast's if it is on (it would cast each matmul anyway), else x's.
        kind = x.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
        with torch.autocast(kind, enabled=False):
            flat = x.reshape(-1, x.shape[-1]).to(dtype)
            w, a, b = weight.to(dtype), lora_a.to(dtype), lora_b.to(dtype)
            xa = flat @ a.t()  # (tokens, r): tiny, kept for lora_B's gradient
            out = flat @ w.t() if bias is None else torch.addmm(bias.to(dtype), flat, w.t())
            out.addmm_(xa, b.t(), alpha=scaling)
        ctx.save_for_backward(flat, None if dequantize is not None else w, a, b, xa)
        ctx.dequantize = dequantize
        ctx.scaling = scaling
        ctx.dtypes = (x.dtype, bias.dtype if bias is not None else None, lora_a.dtype, lora_b.dtype)
        ctx.x_shape = x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        flat, w, a, b, xa = ctx.saved_tensors
        if ctx.dequantize is not None:
            w = ctx.dequantize().to(flat.dtype)
        s = ctx.scaling
        x_dtype, bias_dtype, a_dtype, b_dtype = ctx.dtypes
        g = grad_out.reshape(-1, grad_out.shape[-1]).to(flat.dtype)
        gb = g @ b  # (tokens, r)
        grad_x = grad_a = grad_b = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = g @ w
            grad_x.addmm_(gb, a, alpha=s)
            grad_x = grad_x.view(ctx.x_shape).to(x_dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = g.sum(0).to(bias_dtype)
        if ctx.needs_input_grad[3]:
            grad_a = (gb.t() @ flat).mul_(s).to(a_dtype)
        if ctx.needs_input_grad[4]:
            grad_b = (g.t() @ xa).mul_(s).to(b_dtype)
        return grad_x, None, grad_bias, grad_a, grad_b, None, None


def _is_4bit(base) -> bool:
    return type(base).__name__ == "Linear4bit" and hasattr(base.weight, "quant_state")


def _fusable(layer) -> bool:
    """Plain LoRA (no dropout, no variant, no bias on the adapter) on a plain nn.Linear or a bitsandbytes 4-bit
    Linear, one adapter."""
    base = layer.get_base_layer()
    if not (type(base) is torch.nn.Linear or _is_4bit(base)) or getattr(layer, "fan_in_fan_out", False):
        return False
    names = list(layer.lora_A.keys())
    if len(names) != 1:
        return False
    name = names[0]
    return (isinstance(layer.lora_dropout[name], torch.nn.Identity) and name not in getattr(layer, "lora_variant", {})
            and layer.lora_A[name].bias is None and layer.lora_B[name].bias is None)


def fuse_lora_linears(model) -> int:
    """Give every fusable PEFT LoRA Linear the one-node forward. Returns how many layers changed."""
    from peft.tuners.lora.layer import LoraLayer

    count = 0
    for module in model.modules():
        if isinstance(module, LoraLayer) and hasattr(module, "lora_A") and _fusable(module):
            module.forward = _fused_forward(module)
            count += 1
    return count


def _fused_forward(layer):
    peft_forward = type(layer).forward.__get__(layer)  # PEFT's own: every case this file does not fuse
    name = next(iter(layer.lora_A.keys()))
    base = layer.get_base_layer()
    dequantize = _dequantizer(base)

    def forward(x, *args, **kwargs):
        if (args or kwargs or layer.disable_adapters or layer.merged or layer.active_adapters != [name]
                or base.weight.requires_grad or not torch.is_floating_point(x)):
            return peft_forward(x, *args, **kwargs)
        weight = None if dequantize is not None else base.weight
        return _LoraLinearFn.apply(x, weight, base.bias, layer.lora_A[name].weight, layer.lora_B[name].weight,
                                   layer.scaling[name], dequantize)

    return forward


def _dequantizer(base):
    if not _is_4bit(base):
        return None
    from bitsandbytes.functional import dequantize_4bit

    return lambda: dequantize_4bit(base.weight.data, base.weight.quant_state)
