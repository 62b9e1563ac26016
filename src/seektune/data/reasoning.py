"""Reasoning (R1-style `<think>`) options shared by training and inference rendering.

  history        "drop": earlier assistant turns appear without their reasoning (what R1 templates and chat clients
                 do); "keep": with it (only templates that render it -- otherwise a clear error)
  empty_think    "supervise": an empty <think></think> block is learned with the answer; "ignore": only the answer is
  think_prefill  "prompt": a generation prompt's pre-fill (R1's "<think>\\n") belongs to the prompt, exactly as the
                 template gives it at inference; "response": it is learned, and inference prompts stop before it
  split_turns    one sample per assistant turn, so templates that rewrite history (R1 strips reasoning) can train
                 multi-turn data
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_INLINE = re.compile(r"\s*<think>(.*?)</think>\s*(.*)\Z", re.S)
_EMPTY_BLOCK = re.compile(r"(?:<think>)?\s*</think>\s*")


@dataclass(frozen=True)
class ReasoningOptions:
    history: str = "drop"
    empty_think: str = "supervise"
    think_prefill: str = "prompt"
    split_turns: bool = False

    @classmethod
    def from_data(cls, data) -> "ReasoningOptions":
        return cls(data.history_reasoning, data.empty_think, data.think_prefill, data.split_turns)


def split_inline_think(content: str) -> tuple[Optional[str], str]:
    """'<think>r</think>answer' -> ('r', 'answer'); content without a leading think block -> (None, content)."""
    m = _INLINE.match(content)
    if not m:
        return None, content
    return m.group(1).strip(), m.group(2)


def empty_think_prefix(answer: str, prefill: str) -> int:
    """Length of the empty think block at the start of `answer` (the prefill may hold its opening tag), else 0."""
    if THINK_OPEN not in prefill + answer[: len(THINK_OPEN)]:
        return 0
    m = _EMPTY_BLOCK.match(answer)
    return m.end() if m else 0
