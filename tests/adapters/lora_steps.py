"""Shared by the DeepSeek adapter tests: a few LoRA training steps on one fixed batch (alone, or with the adapter
saved and the router state recorded), and the base-model name of a parameter or buffer inside a PEFT-wrapped model."""

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


def train_and_save(model, lora, out, kept_buffers: tuple[str, ...]) -> dict:
    """Attach `lora`, train a few steps on a fixed 24-token batch and save the adapter to `out`. Records, before
    training, the buffers whose names contain one of `kept_buffers` and the router weights, which must not move."""
    from seektune.adapters.lora import attach_lora

    buffers_before = {n: b.clone() for n, b in model.named_buffers() if any(k in n for k in kept_buffers)}
    router_before = {n: p.detach().clone() for n, p in model.named_parameters() if ".mlp.gate." in n}
    peft_model = attach_lora(model, lora)
    torch.manual_seed(1)
    ids = torch.randint(0, 128, (2, 24))
    losses = train_steps(peft_model, ids)
    peft_model.save_pretrained(str(out))
    return dict(model=peft_model, ids=ids, losses=losses, dir=out, buffers_before=buffers_before,
                router_before=router_before)


def assert_loss_fell(losses: list[float]) -> None:
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.05, losses


def assert_reload_and_merge_match(trained: dict, fresh, base) -> None:
    """The saved adapter, loaded onto `fresh` (the same random model as before training), gives the trained model's
    logits, and so does its merge; the routed experts no token was chosen for (0 of [1, 6]) merge to exactly `base`'s
    weights."""
    from seektune.adapters.lora import load_adapter, native_v5_targets
    from seektune.adapters.targets import adapted_names

    model, ids = trained["model"], trained["ids"]
    with torch.no_grad():
        adapter_logits = model(input_ids=ids).logits
        with model.disable_adapter():
            base_logits = model(input_ids=ids).logits
    assert (adapter_logits - base_logits).abs().max() > 1e-3
    reloaded = load_adapter(fresh, str(trained["dir"]))
    assert adapted_names(reloaded) == adapted_names(model)
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, adapter_logits, atol=1e-6)
    with native_v5_targets(reloaded.config.model_type):
        merged = reloaded.merge_and_unload()
    assert not [n for n, m in merged.named_modules() if hasattr(m, "lora_A")]
    with torch.no_grad():
        merged_logits = merged(input_ids=ids).logits
    diff = (merged_logits - adapter_logits).abs().max().item()
    print(f"{trained['kind']}: max |merged - adapter| logit difference {diff:.2e}")
    assert diff < 1e-4
    w_merged, w_base = merged.model.layers[2].mlp.experts.down_proj, base.model.layers[2].mlp.experts.down_proj
    assert torch.equal(w_merged[0], w_base[0]) and not torch.equal(w_merged[6], w_base[6])


def base_name(peft_name: str) -> str:
    """`base_model.model.x.mlp.gate.base_layer.parametrizations.weight.original` -> `x.mlp.gate.weight`."""
    name = peft_name.replace("base_model.model.", "", 1).replace(".base_layer", "")
    return name.replace("parametrizations.weight.original", "weight")
