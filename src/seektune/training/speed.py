"""The fast path: padding-free packing, FlashAttention on packed rows, compiled decoder layers, a fused
linear+cross-entropy loss, Liger's fused kernels, checkpointed layers as CUDA graphs.

Each switch is decided once, from `train.packing`, `train.attention`, `train.compile`, `train.fused_loss`,
`train.liger`, `train.fused_lora`, `train.offload_checkpoints` and `train.cuda_graphs` ("auto" = on where it is
correct and pays: on a CUDA GPU), and recorded in run.json. None of them changes the loss: packed rows carry the same tokens and the same
supervised labels as padded batches, and the position ids restart at every sample so no sample attends to another
(transformers turns restarting position ids into a block-diagonal mask for sdpa/eager; the varlen kernel below gets
the sample boundaries directly).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from seektune.training.arch_limits import apply_arch_limits

VARLEN = "seektune_varlen"
CUDNN = "seektune_cudnn"  # training/cudnn_attention.py
PACKED_ATTENTION = (VARLEN, CUDNN)  # kernels that take a packed row's sample boundaries, no mask


@dataclass
class FastPath:
    packing: bool
    attention: str  # the attn_implementation the model runs with
    liger: bool
    notes: list[str]
    compile: bool = False
    fused_loss: bool = False
    fused_lora: bool = False
    offload_checkpoints: bool = False
    lean_recompute: bool = False  # the recomputation leaves out the MLP's unused down projection (offload.py)
    cuda_graphs: bool = False
    gradient_checkpointing: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        parts = [
            "packing on (no padding)" if self.packing else "packing off (padded batches)",
            f"attention {self.attention}",
            "Liger kernels on" if self.liger else "Liger kernels off",
        ]
        if self.compile:
            parts.append("decoder layers compiled")
        if self.fused_loss:
            parts.append("fused linear+cross-entropy")
        if self.fused_lora:
            parts.append("one-node LoRA linears")
        if self.gradient_checkpointing:
            parts.append("gradient checkpointing")
        if self.offload_checkpoints:
            parts.append("checkpointed layer inputs in CPU memory")
        if self.lean_recompute:
            parts.append("recomputation without the MLP's unused output")
        if self.cuda_graphs:
            parts.append("checkpointed layers as CUDA graphs")
        return ", ".join(parts)


def torch_varlen_attn():
    """PyTorch's own FlashAttention varlen kernel (torch >= 2.9), or None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def liger_available() -> bool:
    try:
        import liger_kernel.transformers  # noqa: F401
    except Exception:  # not installed, or no triton/CUDA behind it
        return False
    return True


def decide(train_cfg, model_config, device_type: str, lora_dropout: float = 0.0) -> FastPath:
    """Resolve the 'auto' switches for this model on this device."""
    notes: list[str] = []
    on_gpu = device_type == "cuda"
    packing = on_gpu if train_cfg.packing == "auto" else bool(train_cfg.packing)
    if getattr(model_config, "vision_config", None) is not None and train_cfg.packing == "auto":
        packing = False  # image features are placed per padded sample by the VL collator

    attention = train_cfg.attention
    if attention == "auto":
        attention = "sdpa"
        if on_gpu and packing:
            if torch_varlen_attn() is None:
                notes.append("torch has no varlen FlashAttention (needs torch >= 2.9): packed rows use sdpa with a block mask")
            elif not _varlen_head_dims_ok(model_config):
                notes.append("head dims above 256: packed rows use sdpa with a block mask")
            else:
                attention = VARLEN
    packing, attention = apply_arch_limits(train_cfg, model_config, packing, attention, notes)
    if attention == VARLEN:
        if not packing:
            raise ValueError("train.attention=seektune_varlen needs train.packing on")
        if not on_gpu or torch_varlen_attn() is None:
            raise ValueError("train.attention=seektune_varlen needs a CUDA GPU and torch >= 2.9")
    if attention == CUDNN:
        from seektune.training.cudnn_attention import unavailable

        if not packing:
            raise ValueError("train.attention=seektune_cudnn needs train.packing on")
        missing = "a CUDA GPU" if not on_gpu else unavailable()
        if missing:
            raise ValueError(f"train.attention=seektune_cudnn needs {missing}")
        if not _varlen_head_dims_ok(model_config):
            raise ValueError("train.attention=seektune_cudnn: head dims above 256; use train.attention=auto")

    # Measured on an H200 (bench/RESULTS.md): Liger slowed every shape down while saving memory, compiled layers
    # sped them up ~1.7x; so auto = compile on a GPU, Liger only when asked for.
    liger = False if train_cfg.liger == "auto" else train_cfg.liger
    if liger and not liger_available():
        raise ValueError("train.liger=true but liger-kernel cannot be imported; pip install liger-kernel (GPU only)")
    if liger and not _liger_supports(model_config.model_type):
        raise ValueError(f"train.liger=true: liger-kernel has no kernels for model type {model_config.model_type!r}")
    compile_ = on_gpu if train_cfg.compile == "auto" else train_cfg.compile
    fused_loss = _decide_fused_loss(train_cfg.fused_loss, liger, on_gpu, model_config, notes)
    fused_lora = on_gpu if train_cfg.fused_lora == "auto" else train_cfg.fused_lora
    ckpt = _decide_checkpointing(train_cfg, model_config, on_gpu, packing, attention, lora_dropout, notes)
    offload = train_cfg.offload_checkpoints
    if offload == "auto":
        # Measured free on dense shapes (bench/RESULTS.md, session 4) and 15% slower on the V2-Lite MoE shape, whose
        # short steps are host-bound (session 5), so MoE stays on torch's checkpointing.
        offload = on_gpu and not _has_routed_experts(model_config)
        if offload is False and on_gpu and ckpt:
            notes.append("checkpointed layer inputs stay on the GPU for MoE models (train.offload_checkpoints=true "
                         "moves them to CPU memory)")
    offload = bool(ckpt and offload)
    graphs = _decide_cuda_graphs(train_cfg, model_config, on_gpu, ckpt, packing, attention, lora_dropout, notes)
    if graphs:
        if train_cfg.offload_checkpoints is True:
            raise ValueError("train.cuda_graphs and train.offload_checkpoints cannot both be on: set one to false")
        offload = False
        # compile_ stays as decided above: compiled layers replayed as graphs measured 1.56x graphs of the eager
        # layers on the V2-Lite shape (bench/RESULTS.md, session 7), at the price of ~2 min of compilation.
    lean = bool(train_cfg.lean_recompute and offload and fused_lora)
    if train_cfg.lean_recompute and not lean:
        notes.append("train.lean_recompute needs offloaded checkpoints and one-node LoRA (gradient_checkpointing, "
                     "offload_checkpoints and fused_lora on): the recomputation runs in full")
    return FastPath(packing=packing, attention=attention, liger=liger, notes=notes, compile=compile_,
                    fused_loss=fused_loss, fused_lora=fused_lora, offload_checkpoints=offload, lean_recompute=lean,
                    cuda_graphs=graphs, gradient_checkpointing=ckpt)


def _decide_checkpointing(train_cfg, model_config, on_gpu: bool, packing: bool, attention: str, lora_dropout: float,
                          notes: list[str]) -> bool:
    """Auto = on where it lets a MoE model's layers run as CUDA graphs: on the V2-Lite shape that trained 1.42x as
    fast as the same model without checkpointing (whose compiled layers wait on the host), in 5 GiB less
    (bench/RESULTS.md, session 7). Dense models keep their activations: there checkpointing only costs time."""
    asked = train_cfg.gradient_checkpointing
    if asked != "auto":
        return bool(asked)
    graphs_can_run = (getattr(train_cfg, "cuda_graphs", "auto") is not False
                      and train_cfg.offload_checkpoints is not True
                      and not _graph_needs(on_gpu, packing, attention, lora_dropout))
    if not (_has_routed_experts(model_config) and graphs_can_run):
        return False
    notes.append("gradient checkpointing on for this MoE model, so that its layers run as CUDA graphs "
                 "(train.gradient_checkpointing=false turns both off)")
    return True


def _decide_cuda_graphs(train_cfg, model_config, on_gpu: bool, ckpt: bool, packing: bool, attention: str,
                        lora_dropout: float, notes: list[str]) -> bool:
    """Checkpointed layers replayed as CUDA graphs (training/layer_graphs.py): for MoE models, whose steps wait on
    the host launching hundreds of small kernels per layer. They need packed rows with sample boundaries (the
    varlen kernel) and no dropout (a graph replays one mask)."""
    asked = getattr(train_cfg, "cuda_graphs", "auto")
    needs = _graph_needs(on_gpu, packing, attention, lora_dropout)
    if not ckpt:
        needs.append("train.gradient_checkpointing=true")
    if asked == "auto":
        if not (on_gpu and _has_routed_experts(model_config)):
            return False
        if train_cfg.offload_checkpoints is True:
            notes.append("MoE layers run without CUDA graphs: train.offload_checkpoints=true keeps the checkpoints "
                         "on the host instead")
            return False
        if needs:
            notes.append("MoE layers could run as CUDA graphs with " + " and ".join(needs) + " (V2-Lite shape: "
                         "1.42x the speed of compiled layers without checkpointing, in 5 GiB less: bench/RESULTS.md)")
            return False
        return True
    if asked and needs:
        raise ValueError("train.cuda_graphs=true needs " + " and ".join(needs))
    return bool(asked)


def _graph_needs(on_gpu: bool, packing: bool, attention: str, lora_dropout: float) -> list[str]:
    """What CUDA-graphed layers need besides checkpointing and lack here."""
    needs = []
    if not on_gpu:
        needs.append("a CUDA GPU")
    if not packing or attention not in PACKED_ATTENTION:
        needs.append("packed rows with the seektune_varlen (or seektune_cudnn) attention")
    if lora_dropout > 0:
        needs.append("lora.dropout=0")
    return needs


def _decide_fused_loss(asked, liger: bool, on_gpu: bool, model_config, notes: list[str]) -> bool:
    """The loss over a ~100k vocabulary holds fp32 logits, their softmax and gradient for every token (GiBs at
    2k-token batches); Liger's fused linear+cross-entropy computes it in chunks and never keeps them."""
    if liger:
        return False  # the full Liger set already includes it
    model_type = getattr(model_config, "model_type", None)
    if asked == "auto":
        if not on_gpu:
            return False
        if not liger_available():
            notes.append("fused linear+cross-entropy off: pip install liger-kernel to keep the full logits out of "
                         "memory")
            return False
        if not _liger_supports(model_type):
            notes.append(f"fused linear+cross-entropy off: liger-kernel has no loss for model type {model_type!r}")
            return False
        return True
    if asked and not (on_gpu and liger_available()):
        raise ValueError("train.fused_loss=true needs a CUDA GPU and liger-kernel (pip install liger-kernel)")
    if asked and not _liger_supports(model_type):
        raise ValueError(f"train.fused_loss=true: liger-kernel has no fused loss for model type {model_type!r}")
    return bool(asked)


def _has_routed_experts(cfg) -> bool:
    return any(getattr(cfg, k, None) for k in ("n_routed_experts", "num_experts", "num_local_experts"))


def _varlen_head_dims_ok(cfg) -> bool:
    dims = [getattr(cfg, "head_dim", None)]
    # MLA (DeepSeek-V2/V3): queries/keys are nope+rope wide, values v_head_dim; values get padded to match.
    if getattr(cfg, "qk_nope_head_dim", None) is not None:
        dims = [cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, cfg.v_head_dim]
    elif dims[0] is None and getattr(cfg, "num_attention_heads", None):
        dims = [cfg.hidden_size // cfg.num_attention_heads]
    return all(d is not None and d <= 256 for d in dims)


def _liger_supports(model_type: str) -> bool:
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except Exception:
        return False
    return model_type in MODEL_TYPE_TO_APPLY_LIGER_FN


def apply_liger(model, loss_only: bool = False) -> None:
    """Fused RMSNorm, SwiGLU, RoPE and linear+cross-entropy (the logits are never materialised); with
    `loss_only`, the loss alone: compiled layers already fuse the rest, and faster."""
    from liger_kernel.transformers.monkey_patch import _apply_liger_kernel_to_instance

    if loss_only:
        _apply_liger_kernel_to_instance(model=model, rope=False, rms_norm=False, swiglu=False, layer_norm=False,
                                        cross_entropy=False, fused_linear_cross_entropy=True)
    else:
        _apply_liger_kernel_to_instance(model=model)


# ---- FlashAttention on packed rows ----------------------------------------------------------


def register_varlen_attention() -> None:
    """Make `attn_implementation="seektune_varlen"` available to every transformers model."""
    register_packed_attention(VARLEN, varlen_attention_forward)


def register_packed_attention(name: str, forward) -> None:
    """An attention function for packed rows under `name`, with the mask function such rows need (none)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(name, forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, _varlen_mask)


def _varlen_mask(*args, **kwargs):
    """No mask for packed rows (boundaries come as cu_seq_lens); padded batches, as in generation after training,
    get sdpa's 4-D mask and go through sdpa."""
    from transformers.masking_utils import sdpa_mask

    attention_mask = kwargs.get("attention_mask")
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return sdpa_mask(*args, **kwargs)


def _boundaries(kwargs, total: int, device):
    cu = kwargs.get("cu_seq_lens_q")
    max_len = kwargs.get("max_length_q")
    if cu is None:
        pos = kwargs.get("position_ids")
        if pos is None:  # one sequence (e.g. generation without padding)
            return torch.tensor([0, total], dtype=torch.int32, device=device), total
        starts = torch.nonzero(pos.view(-1) == 0).view(-1)
        cu = torch.cat([starts, torch.tensor([total], device=pos.device)]).to(torch.int32)
        max_len = int(cu.diff().max())
    return cu.to(device=device, dtype=torch.int32), int(max_len)


def varlen_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """query/key/value: (1, heads, total_tokens, dim) for one packed row -> (1, total_tokens, heads, dim)."""
    varlen_attn = torch_varlen_attn()
    if not is_packed_row(query, key, attention_mask):
        return sdpa_fallback(module, query, key, value, attention_mask, dropout, scaling, kwargs)
    total = query.shape[2]
    cu, max_len = _boundaries(kwargs, total, query.device)
    samples = cu.shape[0] - 1
    if BATCH_EQUAL_SAMPLES and samples * max_len == total:
        # Every sample is max_len long (one sample, or equal rows): the batched causal kernel sdpa picks needs no
        # (tokens, heads, dim) copies; on an H200 it took 0.42x varlen's time on 2 x 2048 rows of the 7B shape and
        # 0.64x on MLA's (bench/RESULTS.md, session 4's attention table).
        return _equal_samples_attention(query, key, value, samples, scaling)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, dim)
    k, v = repeat_kv_heads(k, v, q.shape[1], dim=1)
    v_dim = v.shape[-1]
    if v_dim != q.shape[-1]:  # MLA: values are narrower than queries; the kernel needs one width
        v = torch.nn.functional.pad(v, (0, q.shape[-1] - v_dim))
    kw = dict(_causal_kwargs(varlen_attn))
    if "scale" in _varlen_params(varlen_attn):
        kw["scale"] = scaling
    out = varlen_attn(q, k, v, cu, cu, max_len, max_len, **kw)
    return out[..., :v_dim].unsqueeze(0), None


def is_packed_row(query, key, attention_mask) -> bool:
    """One row, no mask, as many queries as keys. Otherwise a padded batch, or a decoding step against the KV cache
    (generation): the packed-row kernels hand those to sdpa."""
    return query.shape[0] == 1 and attention_mask is None and query.shape[2] == key.shape[2]


def sdpa_fallback(module, query, key, value, attention_mask, dropout, scaling, kwargs: dict):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


def repeat_kv_heads(k, v, heads: int, dim: int):
    """Grouped-query attention: each kv head repeated for the query heads it serves (the kernels take one count)."""
    if k.shape[dim] == heads:
        return k, v
    rep = heads // k.shape[dim]
    return k.repeat_interleave(rep, dim=dim), v.repeat_interleave(rep, dim=dim)


# bench/train_speed.py's seektune-varlenonly turns this off to measure what it is worth
BATCH_EQUAL_SAMPLES = True


def _equal_samples_attention(query, key, value, samples: int, scaling):
    """A packed row of `samples` equally long samples, (1, heads, tokens, dim), attended as a batch of them."""
    heads, total = query.shape[1], query.shape[2]

    def batch(t):  # (1, heads, samples * length, dim) -> (samples, heads, length, dim): a view
        return t[0].unflatten(1, (samples, total // samples)).transpose(0, 1)

    k, v = repeat_kv_heads(batch(key), batch(value), heads, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(batch(query), k, v, is_causal=True, scale=scaling)
    return out.transpose(1, 2).reshape(1, total, heads, out.shape[-1]), None


@functools.cache
def _varlen_params(fn) -> frozenset:
    # Read once: this runs in every attention call of every layer (and inside compiled layers).
    return frozenset(inspect.signature(fn).parameters)


@functools.cache
def _causal_kwargs(fn) -> tuple:
    if "is_causal" in _varlen_params(fn):  # torch 2.9-2.11
        return (("is_causal", True),)
    return (("window_size", (-1, 0)),)  # later torch: causal is a (-1, 0) window


def packed_collator():
    """Concatenates a batch into one row; position ids restart per sample, cu_seq_lens mark the boundaries."""
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_flash_attn_kwargs=True, separator_id=-100)


def prepare_model_for_fast_path(model, fast: FastPath) -> Optional[str]:
    """Apply the model-level switches (before LoRA is attached). Returns the attention implementation set."""
    if fast.packing:
        # With a cache object present, transformers skips its packed-sequence detection and packed samples would
        # attend to each other under sdpa/eager. Training never needs the cache.
        model.config.use_cache = False
    if fast.attention == VARLEN:
        register_varlen_attention()
    if fast.attention == CUDNN:
        from seektune.training.cudnn_attention import register_cudnn_attention

        register_cudnn_attention()
    if fast.attention != getattr(model.config, "_attn_implementation", None):
        model.set_attn_implementation(fast.attention)
    if fast.liger or fast.fused_loss:
        apply_liger(model, loss_only=not fast.liger)
    return fast.attention


def compile_layers(model) -> int:
    """torch.compile each decoder layer (after LoRA is attached), with dynamic shapes: packed rows change length
    every step. Fuses the small element-wise kernels (norms, RoPE, activations, LoRA scaling) that dominate
    when steps are short. With gradient checkpointing, transformers' checkpoint stays around each compiled layer:
    tracing it inside the graph measured no faster and kept 2 GiB more on the MoE shape (bench/RESULTS.md,
    session 5). Returns how many layers were compiled."""
    from seektune.training.layer_wrap import compile_wrapped

    joint_cse = not has_4bit_bases(model)
    wrapped = compile_wrapped(model, joint_cse)  # offloaded and graphed checkpointing compile inside their own nodes
    if wrapped:
        return wrapped
    layers = decoder_layers(model)
    for layer in layers:
        if joint_cse:
            layer.compile(dynamic=True)
        else:
            layer.forward = compiled(layer.forward, joint_cse=False)
    return len(layers)


def compiled(fn, joint_cse: bool = True):
    """torch.compile(fn, dynamic=True). joint_cse=False compiles it with AOTAutograd's common-subexpression pass off.
    That pass merges the backward's second dequantization of a 4-bit weight (lora_fused) with the forward's, and the
    partitioner then keeps every dequantized bf16 weight of the layer from its forward to its backward: 0.3 GiB more
    at the 7B shape's peak than dequantizing again (bench/RESULTS.md, session 8)."""
    run = torch.compile(fn, dynamic=True)
    if joint_cse:
        return run

    @functools.wraps(fn)
    def run_without_joint_cse(*args, **kwargs):
        # compilation happens inside the first calls (and again for a new shape), so every call carries the patch
        with torch._functorch.config.patch(cse=False):
            return run(*args, **kwargs)

    return run_without_joint_cse


def has_4bit_bases(model) -> bool:
    """Whether any frozen linear is a bitsandbytes 4-bit one (QLoRA)."""
    return any(type(m).__name__ == "Linear4bit" for m in model.modules())


def decoder_layers(model) -> list:
    """The model's decoder layers (the first ModuleList of *DecoderLayer modules), or [] when it has none."""
    stack = next((m for m in model.modules() if _is_layer_stack(m)), None)
    return list(stack) if stack is not None else []


def _is_layer_stack(m) -> bool:
    return isinstance(m, torch.nn.ModuleList) and len(m) > 0 and type(m[0]).__name__.endswith("DecoderLayer")
