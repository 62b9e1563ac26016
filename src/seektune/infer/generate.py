"""Answers from a model for prompts rendered exactly as in training; stops on the end-of-turn token."""

from __future__ import annotations

import torch

from seektune.data.formats import Message
from seektune.data.render import ChatRenderer


@torch.no_grad()
def generate_answers(
    model,
    renderer: ChatRenderer,
    prompts: list[list[Message]],
    max_new_tokens: int = 128,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
) -> list[str]:
    tok = renderer.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else renderer.stop_token_ids[0]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = [renderer.prompt_ids(p) for p in prompts[start : start + batch_size]]
        width = max(len(ids) for ids in chunk)
        # Left padding, so every prompt ends where generation starts.
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in chunk], device=device)
        sampling = dict(temperature=temperature, top_p=top_p) if do_sample else {}
        out = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            repetition_penalty=repetition_penalty,
            eos_token_id=renderer.stop_token_ids,
            pad_token_id=pad_id,
            **sampling,
        )
        for row in out[:, width:]:
            answers.append(tok.decode(_until_stop(row.tolist(), renderer.stop_token_ids), skip_special_tokens=True).strip())
    if was_training:
        model.train()
    return answers


def _until_stop(ids: list[int], stops: list[int]) -> list[int]:
    for i, t in enumerate(ids):
        if t in stops:
            return ids[:i]
    return ids
