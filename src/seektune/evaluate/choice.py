"""Multiple-choice accuracy, two ways:

- log-likelihood: the answer letter the model finds most likely right after the chat prompt
  (each letter's tokens scored as the answer, the way the training data renders it);
- generated: greedy answer text, parsed for the chosen letter (or a unique option text).
"""

from __future__ import annotations

import re
from typing import Optional

import torch

from seektune.data.formats import Message
from seektune.data.render import ChatRenderer
from seektune.evaluate.tasks import ChoiceItem


@torch.no_grad()
def letter_logliks(model, renderer: ChatRenderer, items: list[ChoiceItem], batch_size: int = 8) -> list[dict]:
    """Per question: the log-probability of each option letter as the whole start of the answer.

    Letters are usually one token each: then one forward pass of the prompt scores them all (questions
    batched); otherwise each letter's tokens are scored after the prompt."""
    tok = renderer.tokenizer
    out: list[dict] = []
    single, multi = [], []
    for i, item in enumerate(items):
        conts = {k: tok(k, add_special_tokens=False)["input_ids"] for k in item.options}
        (single if all(len(c) == 1 for c in conts.values()) else multi).append((i, item, conts))
    scores: dict[int, dict] = {}
    for start in range(0, len(single), batch_size):
        chunk = single[start : start + batch_size]
        prompts = [renderer.prompt_ids([Message("user", item.prompt)]) for _, item, _ in chunk]
        logits = _forward(model, tok, prompts)
        for row, ((i, item, conts), prompt) in enumerate(zip(chunk, prompts)):
            lp = torch.log_softmax(logits[row, len(prompt) - 1], dim=-1)
            scores[i] = {k: float(lp[c[0]]) for k, c in conts.items()}
    for i, item, conts in multi:
        prompt = renderer.prompt_ids([Message("user", item.prompt)])
        seqs = [prompt + c for c in conts.values()]
        logits = _forward(model, tok, seqs)
        scores[i] = {}
        for row, (k, c) in enumerate(conts.items()):
            lp = torch.log_softmax(logits[row, len(prompt) - 1 : len(prompt) - 1 + len(c)], dim=-1)
            scores[i][k] = float(lp[torch.arange(len(c)), torch.tensor(c)].sum())
    return [scores[i] for i in range(len(items))]


def _forward(model, tok, seqs: list[list[int]]) -> torch.Tensor:
    """Logits (float, on CPU) for right-padded sequences."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    width = max(len(s) for s in seqs)
    device = next(model.parameters()).device
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
    return model(input_ids=ids, attention_mask=mask).logits.float().cpu()


_PATTERNS = [
    r"答案(?:应该|应)?(?:是|为|选)?\s*[:：]?\s*[(（]?([A-J])(?![A-Za-z])",
    r"(?i:answer)(?:\s+is)?\s*[:：]?\s*[(（]?([A-J])(?![A-Za-z])",
    r"选(?:择|项)?\s*[(（]?([A-J])(?![A-Za-z])",
    r"^\s*[(（]?([A-J])(?![A-Za-z])",
    r"(?<![A-Za-z])([A-J])(?![A-Za-z])",
]


def parse_choice(text: str, options: dict[str, str]) -> Optional[str]:
    """The letter a generated answer picks: an explicit 'answer is X' first, then a leading or lone letter,
    then the one option whose text the answer quotes. None when it cannot tell."""
    for pat in _PATTERNS:
        for m in re.finditer(pat, text, flags=re.M):
            if m.group(1) in options:
                return m.group(1)
    quoted = [k for k, v in options.items() if v and v in text]
    return quoted[0] if len(quoted) == 1 else None


def score_choices(model, renderer: ChatRenderer, items: list[ChoiceItem], generated: list[str],
                  batch_size: int = 8) -> dict:
    """Accuracy by log-likelihood and by parsed generations, with one row per question."""
    rows = []
    for item, answer, ll in zip(items, generated, letter_logliks(model, renderer, items, batch_size)):
        best = max(ll, key=ll.get)
        parsed = parse_choice(answer, item.options)
        rows.append({
            "index": item.index, "line": item.line, "question": item.question, "gold": item.answer,
            "loglik_choice": best, "loglik": {k: round(v, 4) for k, v in ll.items()},
            "generated": answer, "parsed_choice": parsed,
        })
    n = len(rows)
    return {
        "metrics": {
            "n": n,
            "accuracy_loglik": round(sum(r["loglik_choice"] == r["gold"] for r in rows) / n, 4) if n else None,
            "accuracy_generated": round(sum(r["parsed_choice"] == r["gold"] for r in rows) / n, 4) if n else None,
            "unparsed_generations": sum(r["parsed_choice"] is None for r in rows),
        },
        "rows": rows,
    }
