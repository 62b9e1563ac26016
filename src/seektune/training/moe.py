"""MoE steps of the recipe: the expert kernel, the routing profile, and the pre-training adapter report."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Optional

from seektune.adapters.targets import requested_groups
from seektune.models.routing import is_moe, render_profile, routing_profile

GROUPED = ("grouped_mm", "batched_mm")


def experts_implementation(model) -> Optional[str]:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "_experts_implementation", None) if cfg is not None else None


def use_grouped_experts(model, asked: Optional[str], console) -> Optional[str]:
    """Keep MoE experts off the per-expert Python loop (`eager`) unless the user asked for it."""
    if not is_moe(model):
        return None
    want = asked or ("grouped_mm" if experts_implementation(model) in (None, "eager") else None)
    if want and want != experts_implementation(model):
        if hasattr(model, "set_experts_implementation"):
            model.set_experts_implementation(want)
        else:  # older transformers: the config attribute is what the experts' forward reads
            model.config._experts_implementation = want
    impl = experts_implementation(model)
    note = "all experts in grouped matmuls" if impl in GROUPED else "a Python loop over the experts hit (slow)"
    console.print(f"MoE experts: experts_implementation={impl} ({note})")
    return impl


def expert_choice_from_profile(model, cfg, train_samples, console, work: Path) -> Optional[dict]:
    """Run the routing profile when routed experts are targeted; return the chosen experts for top_k_used."""
    groups = requested_groups(cfg.lora.targets, model.config.model_type) or []
    if "experts" not in groups or not is_moe(model):
        return None
    rng = random.Random(cfg.data.seed)
    picked = rng.sample(list(train_samples), min(cfg.lora.routing_profile_records, len(train_samples)))
    profile = routing_profile(model, [s.input_ids for s in picked])
    chosen = None
    if isinstance(cfg.lora.experts, dict):
        chosen = profile.top_experts(cfg.lora.experts["top_k_used"])
    render_profile(profile, console, chosen=chosen)
    out = profile.to_dict() | {"chosen": chosen}
    (work / "routing_profile.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    return chosen


def print_adapter_report(model, cfg, console, work: Path, gradient_checkpointing: bool = False) -> dict:
    from seektune.adapters.report import build_report, render_report

    rep = build_report(
        model, batch_size=cfg.train.per_device_batch_size, seq_len=cfg.data.max_length,
        gradient_checkpointing=gradient_checkpointing,
    )
    render_report(rep, console)
    (work / "adapter_report.json").write_text(json.dumps(rep.to_dict(), indent=1), encoding="utf-8")
    return rep.to_dict()
