"""Eval loss and perplexity on the assistant tokens only, with the same masks as training."""

from __future__ import annotations

import math

import torch

from seektune.data.formats import Conversation
from seektune.data.render import IGNORE, ChatRenderer


@torch.no_grad()
def assistant_loss(model, renderer: ChatRenderer, convs: list[Conversation], batch_size: int = 8) -> dict:
    """Token-weighted mean negative log-likelihood over supervised tokens, and exp of it.

    Samples longer than the renderer's max_length are cut as in training; the count is reported."""
    encoded = [renderer.encode(c) for c in convs]
    truncated = sum(e.truncated for e in encoded)
    encoded = [e for e in encoded if e.n_supervised > 0]
    tok = renderer.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(e.input_ids) for e in chunk)
        ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in chunk], device=device)
        labels = torch.tensor([e.labels + [IGNORE] * (width - len(e.labels)) for e in chunk], device=device)
        mask = (torch.arange(width, device=device)[None, :] < torch.tensor([len(e.input_ids) for e in chunk],
                                                                            device=device)[:, None]).long()
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=IGNORE,
            reduction="sum",
        )
        total += float(nll)
        count += int((shift_labels != IGNORE).sum())
    loss = total / count if count else float("nan")
    return {
        "eval_loss": round(loss, 6),
        "perplexity": round(math.exp(loss), 4) if count and loss < 700 else None,
        "supervised_tokens": count,
        "samples": len(encoded),
        "samples_truncated": truncated,
        "samples_without_answer_after_truncation": len(convs) - len(encoded),
    }
