"""Generation with the details the commands need: sampling options, streaming, whether each answer
stopped on the end-of-turn token, and the prompt's pre-fill (R1 `<think>`).

Prompts are rendered with `ChatRenderer.prompt_ids`, byte for byte the training prompt, and batched
with left padding so every prompt ends where generation starts."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from seektune.data.formats import Message
from seektune.data.render import ChatRenderer
from seektune.errors import SeektuneError
from seektune.infer.think import ThinkFilter, prompt_prefill


@dataclass
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: Optional[int] = None

    def check(self) -> None:
        if self.max_new_tokens <= 0:
            raise SeektuneError(f"--max-new-tokens {self.max_new_tokens}: must be at least 1")
        if self.temperature < 0:
            raise SeektuneError(f"--temperature {self.temperature}: must be 0 (greedy) or more")
        if not 0 < self.top_p <= 1:
            raise SeektuneError(f"--top-p {self.top_p}: must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise SeektuneError(f"--repetition-penalty {self.repetition_penalty}: must be > 0 (1 = off)")

    def generate_kwargs(self) -> dict:
        kw = dict(max_new_tokens=self.max_new_tokens, repetition_penalty=self.repetition_penalty)
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None)
        else:
            # Explicit, so a model's generation_config.json cannot switch sampling on behind the user's back.
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw


@dataclass
class Answer:
    text: str  # decoded, special tokens skipped, think block (if any) as generated
    tokens: int  # generated tokens up to (not counting) the stop token
    stopped: bool  # ended on an end-of-turn/EOS token; False: cut at max_new_tokens
    prefill: str = ""  # what the prompt pre-filled of the answer (R1 "<think>\n")
    token_ids: Optional[list] = None


class ConsoleStreamer:
    """transformers-streamer protocol (put/end), printing decoded text as it grows, like TextStreamer,
    optionally hiding the `<think>` block."""

    def __init__(self, tokenizer, stop_ids: list[int], prefill: str = "", show_thinking: bool = True,
                 write: Callable[[str], None] = None):
        self.tokenizer, self.stop_ids = tokenizer, set(stop_ids)
        self.write = write or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
        self.filter = None if show_thinking else ThinkFilter(prefill)
        self.ids: list[int] = []
        self.printed = 0
        self.prompt_seen = False
        self.done = False
        if show_thinking and prefill.strip():
            self.write(prefill)

    def put(self, value):
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        for t in value.reshape(-1).tolist():
            if self.done or t in self.stop_ids:
                self.done = True
                continue
            self.ids.append(t)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        # Hold back an unfinished UTF-8 character (decoded as U+FFFD) until its last byte arrives.
        safe = len(text) if not text.endswith("\ufffd") else len(text) - 1
        if safe > self.printed:
            self._emit(text[self.printed:safe])
            self.printed = safe

    def end(self):
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        self._emit(text[self.printed:], final=True)
        self.printed = len(text)
        self.write("\n")

    def _emit(self, piece: str, final: bool = False):
        if self.filter is not None:
            piece = self.filter.feed(piece, final)
        if piece:
            self.write(piece)


@torch.no_grad()
def generate(
    model,
    renderer: ChatRenderer,
    prompts: list[list[Message]],
    sampling: Optional[Sampling] = None,
    batch_size: int = 8,
    stream: bool = False,
    show_thinking: bool = True,
    write: Optional[Callable[[str], None]] = None,
    on_batch: Optional[Callable[[int, list["Answer"]], None]] = None,
) -> list[Answer]:
    """Answers for each prompt (a message list). `stream` prints tokens as they come (one prompt at a time)."""
    sampling = sampling or Sampling()
    sampling.check()
    tok = renderer.tokenizer
    stops = renderer.stop_token_ids
    if not stops:
        raise SeektuneError("the tokenizer has no end-of-turn or EOS token: generation could never stop by itself")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    was_training = model.training
    model.eval()
    if stream:
        batch_size = 1
    answers: list[Answer] = []
    try:
        for start in range(0, len(prompts), batch_size):
            msgs = prompts[start:start + batch_size]
            chunk = [renderer.prompt_ids(p) for p in msgs]
            prefills = [prompt_prefill(renderer.render_text(renderer.prepare(p), True)) for p in msgs]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in chunk], device=device)
            mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in chunk], device=device)
            streamer = ConsoleStreamer(tok, stops, prefills[0], show_thinking, write) if stream else None
            out = model.generate(
                input_ids=input_ids, attention_mask=mask, eos_token_id=stops, pad_token_id=pad_id,
                streamer=streamer, **sampling.generate_kwargs(),
            )
            batch = []
            for row, prefill in zip(out[:, width:].tolist(), prefills):
                cut = next((i for i, t in enumerate(row) if t in stops), None)
                ids = row if cut is None else row[:cut]
                text = tok.decode(ids, skip_special_tokens=True)
                batch.append(Answer(text.strip(), len(ids), cut is not None, prefill, ids))
            answers += batch
            if on_batch:
                on_batch(start, batch)
    finally:
        if was_training:
            model.train()
    return answers
