"""`seektune inspect`: a readable module tree, LoRA target candidates, parameter totals.

The model is built on the meta device from its config, so inspecting a 671B checkpoint costs no memory.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

_INDEX = re.compile(r"\.\d+(?=\.|$)")


@dataclass
class TreeRow:
    pattern: str
    depth: int
    cls: str
    count: int = 0
    params: int = 0  # own (non-recursive) parameters per instance
    shape: str = ""


@dataclass
class Inspection:
    model_type: str
    rows: list[TreeRow]
    linear_targets: "OrderedDict[str, tuple[str, int]]"  # leaf name -> (shape, count)
    fused_parameters: "OrderedDict[str, tuple[str, int]]"  # parameter name -> (shape, count)
    total_params: int
    lora_trainable: int | None = None
    lora_targets: list[str] = field(default_factory=list)
    groups: dict = field(default_factory=dict)  # target group -> module names it adapts (adapters/targets.py)


def meta_model(location: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    from seektune.models.vl import auto_model_class

    try:
        config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
    except OSError as e:  # not on disk and not reachable (offline, a typo, a gated repo)
        from seektune.errors import ModelSourceError

        raise ModelSourceError(
            f"cannot read the config of {location}: {str(e).splitlines()[0].rstrip('.')}. Check the name, or download the model "
            "folder where there is network (e.g. `huggingface-cli download REPO --local-dir DIR`) and pass that folder"
        ) from None
    with torch.device("meta"):
        return auto_model_class(location).from_config(config, trust_remote_code=trust_remote_code)


def inspect_model(model, lora_spec=None) -> Inspection:
    rows: "OrderedDict[tuple[str, str], TreeRow]" = OrderedDict()
    linears: "OrderedDict[str, tuple[str, int]]" = OrderedDict()
    fused: "OrderedDict[str, tuple[str, int]]" = OrderedDict()
    for name, module in model.named_modules():
        pattern = _INDEX.sub(".*", name) if name else "(model)"
        own = sum(p.numel() for p in module.parameters(recurse=False))
        # Keyed by class too: layer 0 of DeepSeek-V3 has a dense MLP where later layers have an MoE.
        key = (pattern, type(module).__name__)
        row = rows.get(key)
        if row is None:
            shape = f"{module.in_features}→{module.out_features}" if isinstance(module, nn.Linear) else ""
            row = rows[key] = TreeRow(pattern, name.count(".") + (1 if name else 0), type(module).__name__, 0, own, shape)
        row.count += 1
        if isinstance(module, nn.Linear) and name.split(".")[-1] != "lm_head":
            leaf = ".".join(pattern.split(".")[-2:]) if pattern.split(".")[-2] not in ("*",) else pattern.split(".")[-1]
            shape, count = linears.get(leaf, (row.shape, 0))
            linears[leaf] = (shape, count + 1)
        for pname, p in module.named_parameters(recurse=False):
            if p.dim() == 3:  # fused experts: (num_experts, out, in)
                key = f"{pattern}.{pname}"
                fused[key] = ("×".join(map(str, p.shape)), fused.get(key, ("", 0))[1] + 1)
    total = sum(p.numel() for p in model.parameters())
    result = Inspection(model.config.model_type, list(rows.values()), linears, fused, total)
    from seektune.adapters.targets import group_members

    result.groups = group_members(model, lora_spec)
    if lora_spec is not None:
        from seektune.adapters.lora import attach_lora, trainable_summary

        peft_model = attach_lora(model, lora_spec)
        result.lora_trainable, _ = trainable_summary(peft_model)
        result.lora_targets = sorted({_INDEX.sub(".*", n) for n, m in peft_model.named_modules() if hasattr(m, "lora_A")})
    return result


def render_inspection(ins: Inspection, console, max_depth: int = 6) -> None:
    from rich.table import Table

    console.print(f"[bold]{ins.model_type}[/bold]: {ins.total_params:,} parameters")
    for row in ins.rows:
        if row.depth > max_depth:
            continue
        indent = "  " * row.depth
        leaf = row.pattern.split(".")[-1] if row.pattern != "(model)" else row.pattern
        extra = f" {row.shape}" if row.shape else ""
        times = f" ×{row.count}" if row.count > 1 else ""
        console.print(f"{indent}{leaf} [dim]{row.cls}{extra}{times}[/dim]")
    table = Table(title="LoRA target candidates (nn.Linear, lm_head excluded)")
    for col in ("name", "in→out", "count"):
        table.add_column(col)
    for leaf, (shape, count) in ins.linear_targets.items():
        table.add_row(leaf, shape, str(count))
    console.print(table)
    if ins.fused_parameters:
        console.print("fused expert parameters (PEFT target_parameters):")
        for name, (shape, count) in ins.fused_parameters.items():
            console.print(f"  {name}  {shape}  ×{count}")
    if ins.groups:
        from seektune.adapters.targets import condense

        console.print("target groups (use as lora.targets: NAME, or a list of names):")
        for g, names in ins.groups.items():
            console.print(f"  [bold]{g}[/bold]")
            for pattern, count in condense(names):
                console.print(f"    {pattern}  ×{count}")
    if ins.lora_trainable is not None:
        console.print(
            f"LoRA: {ins.lora_trainable:,} trainable parameters ({ins.lora_trainable / ins.total_params:.3%} of "
            f"{ins.total_params:,}) on {len(ins.lora_targets)} module patterns:"
        )
        for t in ins.lora_targets:
            console.print(f"  {t}")
