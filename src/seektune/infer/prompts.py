"""Prompts for generate/compare: text on the command line, a TXT file (one prompt per line), JSONL
with a `prompt` field, or any training dataset format (its prompts, and its answers as references)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from seektune.data.formats import Message, detect_format, to_conversation
from seektune.data.read import SUFFIXES, read_records
from seektune.errors import DataError

PROMPT_ONLY_FIELDS = ("prompt", "instruction", "question", "input", "query", "text")


@dataclass
class PromptItem:
    messages: list[Message]
    reference: Optional[str] = None
    where: str = ""  # file:line, for messages

    @property
    def label(self) -> str:
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users else self.messages[-1].content


def from_text(prompt: str, system: Optional[str] = None) -> PromptItem:
    return PromptItem(([Message("system", system)] if system else []) + [Message("user", prompt)])


def read_prompts(
    path, fmt: str = "auto", columns: Optional[dict] = None, system: Optional[str] = None,
    limit: Optional[int] = None,
) -> list[PromptItem]:
    path = Path(path)
    columns = columns or {}
    if path.suffix.lower() not in SUFFIXES:  # .txt, .md, no suffix: one prompt per non-empty line
        if not path.is_file():
            raise DataError(path, None, None, "prompts file not found")
        items = [
            PromptItem(from_text(line.strip(), system).messages, where=f"{path}:{n}")
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()
        ]
    else:
        items = []
        for rec in read_records(path):
            if limit is not None and len(items) >= limit:
                break
            items.append(_record_prompt(rec, fmt, columns, system))
    if limit is not None:
        items = items[:limit]
    if not items:
        raise DataError(path, None, None, "no prompts in the file")
    return items


def _record_prompt(rec, fmt: str, columns: dict, system: Optional[str]) -> PromptItem:
    where = f"{rec.file}:{rec.line}" if rec.line else f"{rec.file}: record {rec.index}"
    data = rec.data
    if not isinstance(data, dict):
        raise DataError(rec.file, rec.index, None, "expected a JSON object per record", line=rec.line)
    # A record that is only a prompt (no answer): {"prompt": "..."} or {"messages": [...user turns...]}.
    if fmt == "auto":
        msgs = data.get("messages")
        if isinstance(msgs, list) and msgs and not any(isinstance(m, dict) and m.get("role") == "assistant" for m in msgs):
            return PromptItem(_plain_messages(rec, msgs), where=where)
        try:
            fmt_used = detect_format(rec, columns)
        except DataError:
            field = next((f for f in ((columns.get("prompt"),) + PROMPT_ONLY_FIELDS) if f and isinstance(data.get(f), str)), None)
            if field is None or not data[field].strip():
                raise DataError(
                    rec.file, rec.index, None,
                    f"no prompt in fields {sorted(data)}: give a `prompt` field (or any training data format; "
                    "map names with --column prompt=NAME)", line=rec.line,
                ) from None
            return PromptItem(from_text(data[field], system).messages, where=where)
    else:
        fmt_used = fmt
    conv = to_conversation(rec, fmt_used, columns, system)
    return PromptItem(conv.prompt_messages, conv.reference, where)


def _plain_messages(rec, msgs: list) -> list[Message]:
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ("system", "user", "assistant", "tool"):
            raise DataError(rec.file, rec.index, f"messages[{i}]", "expected {role, content} with a known role", line=rec.line)
        out.append(Message(m["role"], m["content"]))
    if out[-1].role == "assistant":
        raise DataError(rec.file, rec.index, "messages", "the last message must be the user's", line=rec.line)
    return out
