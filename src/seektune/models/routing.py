"""Routing profile: which routed experts the router picks, per MoE layer, on a sample of the training data.

Forward hooks on the routers (DeepSeek-V2/V3/V3.2 TopkRouter, V4 TopKRouter and HashRouter all return (logits,
weights, top-k indices); a V4 hash router's picks are fixed per token id, but they are still the experts used) count every
(token, pick); samples run one at a time so padding is never counted. `lora.experts: {top_k_used: N}` trains
the N experts each layer picks most.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RoutingProfile:
    counts: dict[str, list[int]]  # MoE module name (e.g. model.layers.1.mlp) -> picks per expert
    tokens: int = 0
    samples: int = 0
    top_k: int = 0
    meta: dict = field(default_factory=dict)

    def top_experts(self, n: int) -> dict[str, list[int]]:
        """Per layer, the n most picked experts (ties: lower id first)."""
        out = {}
        for layer, c in self.counts.items():
            if n > len(c):
                from seektune.errors import ConfigError

                raise ConfigError(f"lora.experts: top_k_used={n} but the model has {len(c)} routed experts per layer")
            order = sorted(range(len(c)), key=lambda e: (-c[e], e))
            out[layer] = sorted(order[:n])
        return out

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "samples": self.samples, "top_k": self.top_k, "counts": self.counts}


def routers(model) -> dict[str, torch.nn.Module]:
    """MoE module name -> its router module."""
    out = {}
    for name, mod in model.named_modules():
        if name.endswith("mlp.gate") and type(mod).__name__.lower().endswith(("topkrouter", "hashrouter")):
            out[name.rsplit(".", 1)[0]] = mod
    return out


def is_moe(model) -> bool:
    return bool(routers(model))


@torch.no_grad()
def routing_profile(model, samples: list[list[int]], progress: bool = True) -> RoutingProfile:
    rts = routers(model)
    if not rts:
        raise ValueError("the model has no top-k router (not a DeepSeek MoE model)")
    n_exp = {k: r.num_experts for k, r in rts.items()}
    counts = {k: torch.zeros(n, dtype=torch.long) for k, n in n_exp.items()}

    def hook(layer):
        def fn(_mod, _inp, out):
            idx = out[-1].reshape(-1)
            counts[layer] += torch.bincount(idx.cpu(), minlength=n_exp[layer])

        return fn

    handles = [r.register_forward_hook(hook(k)) for k, r in rts.items()]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens = 0
    try:
        it = samples
        if progress:
            from rich.progress import track

            it = track(samples, description="routing profile", transient=True)
        for ids in it:
            model(input_ids=torch.tensor([ids], device=device), use_cache=False)
            tokens += len(ids)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    top_k = next(iter(rts.values())).top_k
    return RoutingProfile({k: v.tolist() for k, v in counts.items()}, tokens, len(samples), top_k)


def render_profile(profile: RoutingProfile, console, show: int = 8, chosen: dict | None = None) -> None:
    from rich.table import Table

    table = Table(title=f"routing profile: {profile.samples} samples, {profile.tokens} tokens, top-{profile.top_k} routing")
    for col in ("MoE layer", f"most picked experts (share of picks, top {show})", "least picked", "unused"):
        table.add_column(col, overflow="fold")
    for layer, c in profile.counts.items():
        total = sum(c) or 1
        order = sorted(range(len(c)), key=lambda e: (-c[e], e))
        most = ", ".join(f"{e}:{c[e] / total:.0%}" for e in order[:show])
        least = ", ".join(f"{e}:{c[e] / total:.1%}" for e in order[-3:])
        table.add_row(layer.replace("model.layers.", "layer ").replace(".mlp", ""), most, least, str(sum(1 for x in c if x == 0)))
    console.print(table)
    if chosen:
        first = next(iter(chosen.values()))
        console.print(f"lora.experts top_k_used: training {len(first)} experts per layer, chosen from this profile")
