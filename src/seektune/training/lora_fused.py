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

import contextlib
import functools
import types

import torch


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """One dtype for every product: autocast's if it is on (it would cast each matmul anyway), else x's."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


@torch.library.custom_op("seektune::addmm_into", mutates_args=("out",))
def _addmm_into(out: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor, alpha: float) -> None:
    out.addmm_(m1, m2, alpha=alpha)


@_addmm_into.register_fake
def _(out, m1, m2, alpha):
    return None


def _add_product_(out: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """out += alpha * m1 @ m2 in place, also inside torch.compile. Compiled, a plain `addmm_` is functionalized into
    an out-of-place addmm, which on CUDA first copies `out` into a new buffer: one more pass over every LoRA
    linear's output and input gradient, 18 ms of a 350 ms step on the 7B shape (bench/RESULTS.md, session 9). As a
    mutating custom op it is re-inplaced by Inductor instead."""
    if torch.compiler.is_compiling():
        torch.ops.seektune.addmm_into(out, m1, m2, alpha)
    else:
        out.addmm_(m1, m2, alpha=alpha)
    return out


def _lora_product(flat, w, a, b, scaling: float, bias=None):
    """flat @ w.T (+ bias) + scaling * (flat @ a.T) @ b.T, the update added in the matmul's epilogue.
    Returns (out, flat @ a.T); the latter is (tokens, r), kept for lora_B's gradient."""
    xa = flat @ a.t()
    out = flat @ w.t() if bias is None else torch.addmm(bias.to(flat.dtype), flat, w.t())
    return _add_product_(out, xa, b.t(), scaling), xa


def _lora_product_backward(g, flat, w, a, b, xa, scaling: float, grad_x=None, need_x: bool = True):
    """Gradients of _lora_product for grad_out `g`: (grad_x, grad_a, grad_b). The input gradient is accumulated
    into `grad_x` when one is given (the MLP's gate and up projections share their input)."""
    gb = g @ b  # (tokens, r)
    if need_x:
        grad_x = g @ w if grad_x is None else _add_product_(grad_x, g, w)
        _add_product_(grad_x, gb, a, scaling)
    grad_a = (gb.t() @ flat).mul_(scaling)
    grad_b = (g.t() @ xa).mul_(scaling)
    return grad_x, grad_a, grad_b


class _LoraLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight_of, bias, lora_a, lora_b, scaling: float):
        # `weight_of()` gives the frozen weight: the parameter itself, or for a 4-bit base its dequantized bf16 copy,
        # which then exists only during each product (the backward pass dequantizes again, as bitsandbytes' own
        # matmul does).
        dtype = _compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            flat = x.reshape(-1, x.shape[-1]).to(dtype)
            a, b = lora_a.to(dtype), lora_b.to(dtype)
            out, xa = _lora_product(flat, weight_of().to(dtype), a, b, scaling, bias)
        ctx.save_for_backward(flat, a, b, xa)
        ctx.weight_of, ctx.scaling = weight_of, scaling
        ctx.dtypes = (x.dtype, bias.dtype if bias is not None else None, lora_a.dtype, lora_b.dtype)
        ctx.x_shape = x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        flat, a, b, xa = ctx.saved_tensors
        x_dtype, bias_dtype, a_dtype, b_dtype = ctx.dtypes
        g = grad_out.reshape(-1, grad_out.shape[-1]).to(flat.dtype)
        grad_x, grad_a, grad_b = _lora_product_backward(g, flat, ctx.weight_of().to(flat.dtype), a, b, xa,
                                                        ctx.scaling, need_x=ctx.needs_input_grad[0])
        if grad_x is not None:
            grad_x = grad_x.view(ctx.x_shape).to(x_dtype)
        grad_bias = g.sum(0).to(bias_dtype) if ctx.needs_input_grad[2] else None
        return grad_x, None, grad_bias, grad_a.to(a_dtype), grad_b.to(b_dtype), None


class _LoraSwiGLUFn(torch.autograd.Function):
    """down(silu(gate(x)) * up(x)) with LoRA on all three, as one node that keeps x and the gate and up outputs but
    not their product: the backward pass recomputes silu(gate) * up (one element-wise pass) instead of holding a third
    (tokens x intermediate) tensor per layer, as Unsloth's fused MLP does."""

    @staticmethod
    def forward(ctx, x, weights_of, scalings, output_unused: bool, a_g, b_g, a_u, b_u, a_d, b_d):
        dtype = _compute_dtype(x)
        s_g, s_u, s_d = scalings
        w_g, w_u, w_d = weights_of
        with torch.autocast(x.device.type, enabled=False):
            flat = x.reshape(-1, x.shape[-1]).to(dtype)
            lora = [t.to(dtype) for t in (a_g, b_g, a_u, b_u, a_d, b_d)]
            e, xa_g = _lora_product(flat, w_g().to(dtype), lora[0], lora[1], s_g)
            g, xa_u = _lora_product(flat, w_u().to(dtype), lora[2], lora[3], s_u)
            if output_unused:
                # A recomputation for the backward pass (see recomputing_for_backward): nothing reads the output, so
                # the down projection, the largest product of a recomputed layer, is not run. Its low-rank input
                # product is made in the backward pass from the h it recomputes there anyway.
                out, ha_d = flat.new_empty(flat.shape[0], b_d.shape[0]), None  # lora_B: (out_features, r)
            else:
                h = torch.nn.functional.silu(e) * g
                out, ha_d = _lora_product(h, w_d().to(dtype), lora[4], lora[5], s_d)
        ctx.save_for_backward(flat, e, g, xa_g, xa_u, ha_d, *lora)
        ctx.weights_of, ctx.scalings = weights_of, scalings
        ctx.dtypes = (x.dtype, a_g.dtype, b_g.dtype)
        ctx.x_shape = x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        flat, e, g, xa_g, xa_u, ha_d, a_g, b_g, a_u, b_u, a_d, b_d = ctx.saved_tensors
        s_g, s_u, s_d = ctx.scalings
        # Each weight is fetched right before its product: a 4-bit base then holds one dequantized weight at a time.
        w_g, w_u, w_d = (lambda w=w: w().to(flat.dtype) for w in ctx.weights_of)
        x_dtype, a_dtype, b_dtype = ctx.dtypes
        go = grad_out.reshape(-1, grad_out.shape[-1]).to(flat.dtype)
        sig = torch.sigmoid(e)
        silu = e * sig
        h = silu * g  # recomputed, not kept
        if ha_d is None:  # the forward pass skipped the down projection
            ha_d = h @ a_d.t()
        dh, ga_d, gb_d = _lora_product_backward(go, h, w_d(), a_d, b_d, ha_d, s_d)
        dg = dh * silu
        de = dh * g * sig * (1 + e * (1 - sig))
        need_x = ctx.needs_input_grad[0]
        grad_x, ga_g, gb_g = _lora_product_backward(de, flat, w_g(), a_g, b_g, xa_g, s_g, need_x=need_x)
        grad_x, ga_u, gb_u = _lora_product_backward(dg, flat, w_u(), a_u, b_u, xa_u, s_u, grad_x, need_x=need_x)
        if grad_x is not None:
            grad_x = grad_x.view(ctx.x_shape).to(x_dtype)
        grads = [t.to(dt) for t, dt in zip((ga_g, gb_g, ga_u, gb_u, ga_d, gb_d), (a_dtype, b_dtype) * 3)]
        return (grad_x, None, None, None, *grads)


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
            module.forward = types.MethodType(_fused_linear_forward, module)
            count += 1
    return count


def fuse_lora_mlps(model) -> int:
    """Give every SwiGLU MLP whose gate, up and down projections are fusable LoRA linears the one-node forward
    (after fuse_lora_linears, whose per-linear nodes remain its fallback). Returns how many MLPs changed."""
    count = 0
    for module in model.modules():
        projections = [getattr(module, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
        if (all(getattr(p, "lora_A", None) is not None and _fusable(p) for p in projections)
                and all(p.get_base_layer().bias is None for p in projections)
                and _is_silu(getattr(module, "act_fn", None)) and _is_plain_swiglu(type(module))):
            module.forward = types.MethodType(_fused_mlp_forward, module)
            count += 1
    return count


# Set while a checkpointed decoder layer runs a second time for its backward pass (offload.py). That run exists to
# rebuild what the backward pass needs; the layer's output only anchors the graph, and its value is never read.
_recomputing = False
FEEDS_ONLY_THE_RESIDUAL = "_seektune_mlp_feeds_only_the_residual"  # set on an MLP by mark_residual_mlp


@contextlib.contextmanager
def recomputing_for_backward():
    """Within: the one-node MLPs marked by mark_residual_mlp leave out their down projection (its output is unused).
    On the 7B shape that is 7% of a checkpointed step's matmul FLOPs. offload.py's checkpoint node sets it around
    every recomputation; only MLPs that offload_layer_inputs(skip_unused_mlp_output=True) marked act on it."""
    global _recomputing
    previous, _recomputing = _recomputing, True
    try:
        yield
    finally:
        _recomputing = previous


def mark_residual_mlp(layer) -> bool:
    """Mark the layer's MLP if the layer's own forward ends with `hidden_states = residual + self.mlp(...)`, as
    Llama, Qwen2 and DeepSeek decoder layers do: then nothing in the layer reads the MLP's output but that sum, whose
    gradient needs no values, and a recomputation may leave the output unmade. Returns whether it was marked."""
    mlp = getattr(layer, "mlp", None)
    marked = mlp is not None and _ends_with_residual_mlp(type(layer))
    if marked:
        setattr(mlp, FEEDS_ONLY_THE_RESIDUAL, True)
    return marked


def _ends_with_residual_mlp(cls) -> bool:
    return _forward_source(cls).endswith("hidden_states=self.mlp(hidden_states)hidden_states=residual+hidden_statesreturnhidden_states")


@functools.cache  # one source read per class, not per layer
def _forward_source(cls) -> str:
    """The class's own forward as source text without whitespace ("" where there is no source)."""
    import inspect

    forward = cls.forward
    forward = getattr(forward, "__wrapped__", forward)  # transformers' checkpointing wrapper
    try:
        return "".join(inspect.getsource(forward).split())
    except (OSError, TypeError):
        return ""


def _is_silu(act) -> bool:
    return isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation"  # transformers' own, 5.2x


def _is_plain_swiglu(cls) -> bool:
    """The MLP's own forward is exactly down(act(gate(x)) * up(x)) (Llama, Qwen2, DeepSeek dense and shared experts)."""
    return "self.down_proj(self.act_fn(self.gate_proj(x))*self.up_proj(x))" in _forward_source(cls)


def _ready(layer, name: str) -> bool:
    """Whether the node computes what PEFT would: adapter on, not merged, the only active one, base frozen."""
    return not (layer.disable_adapters or layer.merged or layer.active_adapters != [name]
                or layer.get_base_layer().weight.requires_grad)


# The one-node forwards are bound methods of the module they replace the forward of, not closures over it: a deep
# copy of the model (copy.deepcopy rebinds a bound method to the copy) then trains the copy's own weights.


def _fused_linear_forward(layer, x, *args, **kwargs):
    name = next(iter(layer.lora_A.keys()))
    if args or kwargs or not torch.is_floating_point(x) or not _ready(layer, name):
        return type(layer).forward(layer, x, *args, **kwargs)  # PEFT's own: every case this file does not fuse
    base = layer.get_base_layer()
    return _LoraLinearFn.apply(x, _weight_of(base), base.bias, layer.lora_A[name].weight, layer.lora_B[name].weight,
                               layer.scaling[name])


def _fused_mlp_forward(mlp, x, *args, **kwargs):
    projections = (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    names = [next(iter(p.lora_A.keys())) for p in projections]
    if args or kwargs or not all(_ready(p, n) for p, n in zip(projections, names)):
        return type(mlp).forward(mlp, x, *args, **kwargs)  # through the per-linear nodes
    weights_of = tuple(_weight_of(p.get_base_layer()) for p in projections)
    lora = [t for p, n in zip(projections, names) for t in (p.lora_A[n].weight, p.lora_B[n].weight)]
    scalings = tuple(p.scaling[n] for p, n in zip(projections, names))
    output_unused = _recomputing and getattr(mlp, FEEDS_ONLY_THE_RESIDUAL, False)
    return _LoraSwiGLUFn.apply(x, weights_of, scalings, output_unused, *lora)


def _weight_of(base):
    """The frozen weight as the products need it: the parameter, or a 4-bit base dequantized on each call."""
    if not _is_4bit(base):
        return lambda: base.weight
    from bitsandbytes.functional import dequantize_4bit

    return lambda: dequantize_4bit(base.weight.data, base.weight.quant_state)
