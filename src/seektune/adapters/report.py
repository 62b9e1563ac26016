"""Before training: trainable parameters per target group, adapter size, a rough training-memory estimate,
and warnings a user should read before spending GPU hours (all-linear contents, expert adapters and servers)."""

from __future__ import annotations

from dataclasses import dataclass, field

from seektune.adapters.targets import adapted_names, all_linear_warning, classify

SERVER_WARNING = (
    "the adapter has LoRA on {what}. Common inference servers (vLLM, SGLang, TGI, llama.cpp) load LoRA on attention "
    "and dense/shared MLP Linear layers; many refuse or silently ignore adapters on fused MoE expert tensors or the "
    "router. After training, merge the adapter into the base weights (`seektune merge RUN_FOLDER`) and serve the merged "
    "model."
)


@dataclass
class AdapterReport:
    groups: dict[str, int]  # group -> trainable parameters
    effective: dict[str, int]  # group -> parameters that can change (expert subsets exclude held-at-zero rows)
    total_params: int
    adapter_bytes: int
    memory_bytes: int
    memory_parts: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in (
            "groups", "effective", "total_params", "adapter_bytes", "memory_bytes", "memory_parts", "warnings", "notes"
        )}


def build_report(peft_model, *, batch_size: int = 1, seq_len: int = 1024, gradient_checkpointing: bool = False,
                 model_type: str | None = None) -> AdapterReport:
    from seektune.adapters.experts import effective_expert_params

    cfg = peft_model.get_base_model().config
    model_type = model_type or cfg.model_type
    plan = getattr(peft_model, "seektune_plan", None)
    groups: dict[str, int] = {}
    adapter_bytes = 0
    total = 0
    base_bytes = 0
    for name, p in peft_model.named_parameters():
        total += p.numel()
        if p.requires_grad:
            g = classify(name, model_type)
            groups[g] = groups.get(g, 0) + p.numel()
            adapter_bytes += p.numel() * p.element_size()
        else:
            base_bytes += p.numel() * p.element_size()
    effective = dict(groups)
    if plan is not None and plan.expert_subset and "experts" in groups:
        effective["experts"] = effective_expert_params(peft_model, plan)
    trainable = sum(groups.values())
    parts = {
        "base weights": base_bytes,
        "adapter + gradients + AdamW states": trainable * 16,  # fp32 weight, grad, two moments
        "activations (rough)": _activation_bytes(cfg, batch_size, seq_len, gradient_checkpointing, base_bytes, total),
    }
    rep = AdapterReport(groups, effective, total, adapter_bytes, sum(parts.values()), parts)
    if plan is not None:
        rep.notes += plan.notes
        if plan.groups == ["all-linear"]:
            rep.warnings.append(all_linear_warning(peft_model, model_type))
    names = adapted_names(peft_model)
    risky = sorted({classify(n, model_type) for n in names} & {"experts", "router"})
    if risky:
        rep.warnings.append(SERVER_WARNING.format(what=" and ".join("routed experts" if r == "experts" else "the router" for r in risky)))
    return rep


def _activation_bytes(cfg, batch: int, seq: int, checkpointing: bool, base_bytes: int, total: int) -> int:
    """Korthikanti et al.'s ~34*b*s*h bytes (half precision) per transformer layer; with checkpointing only the layer
    inputs are kept, plus one layer recomputed. Plus fp32 logits and their gradient. An order of magnitude, no more."""
    text = getattr(cfg, "text_config", None) or cfg
    h = getattr(text, "hidden_size", 0) or 0
    layers = getattr(text, "num_hidden_layers", 0) or 0
    vocab = getattr(text, "vocab_size", 0) or 0
    width = base_bytes / max(total, 1) or 2  # bytes per base element, ~ the compute dtype
    per_layer = 34 * batch * seq * h * width / 2
    acts = (batch * seq * h * width * layers + per_layer) if checkpointing else per_layer * layers
    return int(acts + 2 * batch * seq * vocab * 4)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def render_report(rep: AdapterReport, console) -> None:
    from rich.table import Table

    table = Table(title="LoRA trainable parameters per target group")
    for col in ("group", "trainable", "of which can change"):
        table.add_column(col, justify="right" if col != "group" else "left")
    for g, n in sorted(rep.groups.items(), key=lambda kv: -kv[1]):
        table.add_row(g, f"{n:,}", f"{rep.effective.get(g, n):,}")
    trainable = sum(rep.groups.values())
    table.add_row("total", f"{trainable:,} ({trainable / max(rep.total_params, 1):.3%})", f"{sum(rep.effective.values()):,}")
    console.print(table)
    parts = ", ".join(f"{k} {_fmt_bytes(v)}" for k, v in rep.memory_parts.items())
    console.print(f"adapter file ≈ {_fmt_bytes(rep.adapter_bytes)}; training memory ≈ {_fmt_bytes(rep.memory_bytes)} ({parts})")
    for n in rep.notes:
        console.print(f"[dim]note: {n}[/dim]")
    for w in rep.warnings:
        console.print(f"[yellow]warning: {w}[/yellow]", highlight=False)


def trainable_by_group(peft_model) -> dict[str, int]:
    model_type = peft_model.get_base_model().config.model_type
    out: dict[str, int] = {}
    for name, p in peft_model.named_parameters():
        if p.requires_grad:
            g = classify(name, model_type)
            out[g] = out.get(g, 0) + p.numel()
    return out

