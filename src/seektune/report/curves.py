"""Warnings a person would spot on the loss and grad-norm curves: NaN/Inf, spikes, divergence, and a
loss that does not move (often a learning rate too low)."""

from __future__ import annotations

import math
from statistics import median
from typing import Optional

MIN_STEPS_FOR_TRENDS = 5  # fewer logged steps say nothing about a trend


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def curve_warnings(rows: list[dict], learning_rate: Optional[float] = None) -> list[str]:
    """rows: metrics.jsonl training rows (step, loss, grad_norm, ...), in order."""
    out: list[str] = []
    for key in ("loss", "grad_norm"):
        bad = [r for r in rows if key in r and not _finite(r[key])]
        if bad:
            out.append(f"{key} is {bad[0][key]} at step {bad[0]['step']} ({len(bad)} logged steps not finite): "
                       "training broke down; lower the learning rate or use fp32/bf16")
    steps = [r["step"] for r in rows if _finite(r.get("loss"))]
    loss = [r["loss"] for r in rows if _finite(r.get("loss"))]
    out += _spikes(steps, loss, "loss", ratio=1.5, min_jump=0.5)
    gsteps = [r["step"] for r in rows if _finite(r.get("grad_norm"))]
    out += _spikes(gsteps, [r["grad_norm"] for r in rows if _finite(r.get("grad_norm"))], "grad norm", ratio=10.0,
                   min_jump=1.0)
    n = len(loss)
    if n >= MIN_STEPS_FOR_TRENDS:
        k = max(2, n // 5)
        head, tail, best = sum(loss[:k]) / k, sum(loss[-k:]) / k, min(loss)
        if tail > head * 1.2 or (tail > best * 1.5 and tail > head):
            out.append(f"loss diverges: the last {k} steps average {tail:.3g}, up from {head:.3g} at the start "
                       f"(lowest {best:.3g}); lower the learning rate or raise warmup")
        elif head > 0 and abs(head - tail) / head < 0.01:
            lr = f" at learning rate {learning_rate:g}" if learning_rate else ""
            out.append(f"loss barely moved ({(tail - head) / head:+.2%} over {n} logged steps){lr}: "
                       "the learning rate may be too low to move")
    return out


def _spikes(steps: list, values: list[float], what: str, ratio: float, min_jump: float, limit: int = 3) -> list[str]:
    found = []
    for i in range(3, len(values)):
        ref = median(values[max(0, i - 5) : i])
        if values[i] > ref * ratio and values[i] - ref > min_jump:
            found.append(f"step {steps[i]}: {values[i]:.3g} vs {ref:.3g}")
    if not found:
        return []
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return [f"{what} spikes ({'; '.join(found[:limit])}{more}): check the data near those steps, or lower the "
            "learning rate / max_grad_norm"]
