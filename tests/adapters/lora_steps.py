"""Shared by the DeepSeek adapter tests: a few LoRA training steps on one fixed batch, and the base-model name of
a parameter or buffer inside a PEFT-wrapped model."""

from __future__ import annotations

import torch


def train_steps(peft_model, ids: torch.Tensor, steps: int = 6, lr: float = 1e-2) -> list[float]:
    """AdamW on one fixed batch (labels = inputs): enough for a tiny model's loss to fall. Leaves it in eval mode."""
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    peft_model.train()
    losses = []
    for _ in range(steps):
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    peft_model.eval()
    return losses


def base_name(peft_name: str) -> str:
    """`base_model.model.x.mlp.gate.base_layer.parametrizations.weight.original` -> `x.mlp.gate.weight`."""
    name = peft_name.replace("base_model.model.", "", 1).replace(".base_layer", "")
    return name.replace("parametrizations.weight.original", "weight")
