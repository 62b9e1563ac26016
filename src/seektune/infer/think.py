"""`<think>` blocks of reasoning models (DeepSeek-R1 and its distills): split, hide, or show them.

R1 templates pre-fill `<think>\\n` in the prompt, so the generated text often starts inside the block and
only its closing tag appears."""

from __future__ import annotations

from typing import Optional

from seektune.data.render import THINK_CLOSE, THINK_OPEN


def prompt_prefill(prompt_text: str) -> str:
    """The part of an answer the prompt already wrote (R1's '<think>\\n'), or ''."""
    stripped = prompt_text.rstrip()
    if stripped.endswith(THINK_OPEN):
        return prompt_text[len(stripped) - len(THINK_OPEN):]
    return ""


def split_thinking(text: str, prefill: str = "") -> tuple[Optional[str], str]:
    """(reasoning or None, answer) of a generated text; `prefill` is what the prompt pre-filled."""
    full = prefill + text
    start = full.find(THINK_OPEN)
    if start < 0:
        return None, text.strip()
    end = full.find(THINK_CLOSE, start)
    if end < 0:  # still thinking when generation stopped: all of it is reasoning
        return full[start + len(THINK_OPEN):].strip(), ""
    return full[start + len(THINK_OPEN):end].strip(), (full[:start] + full[end + len(THINK_CLOSE):]).strip()


def shown(text: str, prefill: str, show_thinking: bool) -> str:
    """The answer as a user sees it: with the full think block (pre-fill included) or without it."""
    if show_thinking:
        return (prefill + text).strip() if THINK_OPEN in prefill else text.strip()
    return split_thinking(text, prefill)[1]


class ThinkFilter:
    """Streaming version of `shown(..., show_thinking=False)`: feed text pieces, get what may be printed.

    A tag can arrive split across pieces, so text that could be the start of a tag is held back."""

    def __init__(self, prefill: str = ""):
        self.inside = THINK_OPEN in prefill
        self.pending = ""
        self.started = False  # strip the blank lines that follow a closed think block

    def feed(self, piece: str, final: bool = False) -> str:
        self.pending += piece
        out = []
        while self.pending:
            tag = THINK_CLOSE if self.inside else THINK_OPEN
            at = self.pending.find(tag)
            if at >= 0:
                if not self.inside:
                    out.append(self.pending[:at])
                self.pending = self.pending[at + len(tag):]
                self.inside = not self.inside
                continue
            keep = 0 if final else _partial_suffix(self.pending, tag)
            emit, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep:]
            if not self.inside:
                out.append(emit)
            elif final:
                self.pending = ""
            break
        text = "".join(out)
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        return text


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a beginning of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
