"""LoRA on a subset of fused routed experts.

PEFT's ParamWrapper puts one LoRA pair on a whole (experts, out, in) tensor: lora_A is (r*E, in) with expert e's
rows at [e*r, (e+1)*r), lora_B is (out, r*E) with expert e's columns at r_i*E + e (see ParamWrapper.get_delta_factors).
It has no way to leave experts out. We zero both factors of every unchosen expert and mask their gradients:
with A_e = 0 and B_e = 0 the expert's update B_e A_e is exactly zero, both gradients are exactly zero, and
(decoupled) weight decay keeps zeros at zero -- so those experts stay equal to the base model through training,
saving and merging. Their (zero) rows are still stored in the adapter, since the tensor layout is fixed.
"""

from __future__ import annotations

import re

import torch


def _wrappers(peft_model):
    from peft.tuners.lora.layer import ParamWrapper

    for name, mod in peft_model.named_modules():
        if isinstance(mod, ParamWrapper):
            clean = re.sub(r"^base_model\.model\.", "", name).replace(".base_layer", "")
            yield clean, mod


def expert_masks(mod, chosen: list[int], adapter: str = "default") -> tuple[torch.Tensor, torch.Tensor]:
    """(mask for lora_A rows, mask for lora_B columns): 1 for the chosen experts, 0 elsewhere."""
    e, r = mod.num_experts, mod.r[adapter]
    keep = torch.zeros(e, dtype=torch.bool)
    keep[chosen] = True
    a_rows = keep.repeat_interleave(r)  # row e*r + i  -> expert e
    b_cols = keep.repeat(r)  # column i*E + e -> expert e
    return a_rows, b_cols


def hold_unchosen_experts(peft_model, plan, adapter: str = "default") -> int:
    """Zero and freeze (by gradient masks) the LoRA rows of unchosen experts; returns how many tensors were masked."""
    if not plan.expert_subset:
        return 0
    n = 0
    for name, mod in _wrappers(peft_model):
        if mod.parameter_name not in ("gate_up_proj", "down_proj") or name not in plan.expert_subset:
            continue
        a_rows, b_cols = expert_masks(mod, plan.expert_subset[name], adapter)
        wa, wb = mod.lora_A[adapter].weight, mod.lora_B[adapter].weight
        ma = a_rows.to(wa.device, wa.dtype)[:, None]
        mb = b_cols.to(wb.device, wb.dtype)[None, :]
        with torch.no_grad():
            wa.mul_(ma)
            wb.mul_(mb)
        wa.register_hook(lambda g, m=ma: g * m)
        wb.register_hook(lambda g, m=mb: g * m)
        n += 1
    if n == 0:
        raise RuntimeError("lora.experts chose a subset, but no fused expert tensor carries LoRA")
    return n


def effective_expert_params(peft_model, plan, adapter: str = "default") -> int:
    """LoRA parameters that can change: those of the chosen experts only."""
    total = 0
    for name, mod in _wrappers(peft_model):
        if mod.parameter_name not in ("gate_up_proj", "down_proj"):
            continue
        wa, wb = mod.lora_A[adapter].weight, mod.lora_B[adapter].weight
        if name in plan.expert_subset:
            a_rows, b_cols = expert_masks(mod, plan.expert_subset[name], adapter)
            total += int(a_rows.sum()) * wa.shape[1] + int(b_cols.sum()) * wb.shape[0]
        else:
            total += wa.numel() + wb.numel()
    return total
