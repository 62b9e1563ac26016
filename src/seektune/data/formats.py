"""Records of each dataset format -> Conversation (a list of role/content messages).

Every converter checks the fields it needs and raises DataError naming the field, so a bad
record is reported, never guessed at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from seektune.data.read import RawRecord
from seektune.errors import DataError

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Message:
    role: str
    content: str
    reasoning: Optional[str] = None  # chain of thought, rendered as <think>...</think> before the answer


@dataclass
class Conversation:
    messages: list[Message]
    file: str = ""
    index: int = 0
    line: Optional[int] = None
    tools: Optional[list] = None
    meta: dict = field(default_factory=dict)

    @property
    def prompt_messages(self) -> list[Message]:
        """Everything before the last assistant turn: what a model is asked at inference."""
        last = max(i for i, m in enumerate(self.messages) if m.role == "assistant")
        return self.messages[:last]

    @property
    def reference(self) -> str:
        return next(m.content for m in reversed(self.messages) if m.role == "assistant")


# Our field names per format; `columns` in the dataset spec maps them to the file's names.
FIELDS = {
    "alpaca": ("instruction", "input", "output", "system", "history"),
    "pair": ("prompt", "response", "system"),
    "conversation": ("conversation",),
    "messages": ("messages", "tools"),
    "sharegpt": ("conversations", "system", "tools"),
    "reasoning": ("question", "reasoning", "response", "system"),
}
# File field names used when `columns` does not say otherwise.
DEFAULT_COLUMNS = {
    "reasoning": {"question": "Question", "reasoning": "Complex_CoT", "response": "Response"},
}
# Detection order matters: more specific shapes first.
SIGNATURES = [
    ("conversation", ("conversation",)),
    ("messages", ("messages",)),
    ("sharegpt", ("conversations",)),
    ("reasoning", ("question", "reasoning", "response")),
    ("alpaca", ("instruction", "output")),
    ("pair", ("prompt", "response")),
]

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
    "function_call": "assistant",  # the model's tool call is something it must learn to produce
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}


def column_map(fmt: str, columns: dict[str, str]) -> dict[str, str]:
    """Our field name -> the file's field name."""
    m = {f: f for f in FIELDS[fmt]}
    m.update(DEFAULT_COLUMNS.get(fmt, {}))
    m.update({k: v for k, v in columns.items() if k in m})
    return m


def detect_format(record: RawRecord, columns: dict[str, str]) -> str:
    if not isinstance(record.data, dict):
        raise DataError(
            record.file, record.index, None, f"expected a JSON object per record, got {type(record.data).__name__}",
            line=record.line,
        )
    keys = set(record.data)
    for fmt, needed in SIGNATURES:
        cmap = column_map(fmt, columns)
        if all(cmap[f] in keys or "{" in cmap[f] for f in needed):
            return fmt
    raise DataError(
        record.file, record.index, None,
        f"cannot tell the data format from fields {sorted(keys)}. Known formats: alpaca (instruction/input/output), "
        "pair (prompt/response), conversation (EmoLLM), messages (role/content), sharegpt (from/value), reasoning "
        "(Question/Complex_CoT/Response). Set --format, and map other field names with columns, e.g. "
        "columns: {prompt: content, response: summary}",
        line=record.line,
    )


class _Fields:
    """Typed access to one record's fields, raising DataError that names the field."""

    def __init__(self, record: RawRecord, cmap: dict[str, str]):
        self.record, self.cmap = record, cmap
        if not isinstance(record.data, dict):
            self.fail(None, f"expected an object with fields, got {type(record.data).__name__}")

    def fail(self, name: Optional[str], problem: str):
        raise DataError(self.record.file, self.record.index, name, problem, line=self.record.line)

    def raw(self, ours: str, required: bool = True):
        name = self.cmap.get(ours, ours)
        if "{" in name:
            return self._compose(name)
        if name not in self.record.data or self.record.data[name] is None:
            if required:
                self.fail(name, "missing" + (f" (mapped from `{ours}`)" if name != ours else ""))
            return None
        return self.record.data[name]

    def _compose(self, pattern: str) -> str:
        """A column mapping may build a field from several, e.g. prompt: "{Question}\nA. {A}\nB. {B}"."""
        try:
            return pattern.format_map(self.record.data)
        except KeyError as e:
            self.fail(e.args[0], f"missing (used by the column pattern {pattern!r})")
        except (ValueError, IndexError) as e:
            raise DataError(self.record.file, None, None, f"bad column pattern {pattern!r}: {e}") from e

    def text(self, ours: str, required: bool = True, allow_empty: bool = False) -> Optional[str]:
        v = self.raw(ours, required)
        if v is None:
            return None
        if not isinstance(v, str):
            self.fail(self.cmap.get(ours, ours), f"expected text, got {type(v).__name__}")
        if required and not allow_empty and not v.strip():
            self.fail(self.cmap.get(ours, ours), "is empty")
        return v

    def listof(self, ours: str, required: bool = True) -> Optional[list]:
        v = self.raw(ours, required)
        if v is None:
            return None
        if isinstance(v, str) and ours == "tools":
            return _parse_tools(v, self, ours)
        if not isinstance(v, list) or (required and not v):
            self.fail(self.cmap.get(ours, ours), f"expected a non-empty list, got {type(v).__name__}")
        return v


def _parse_tools(v: str, f: _Fields, ours: str) -> Optional[list]:
    if not v.strip():
        return None
    try:
        tools = json.loads(v)
    except json.JSONDecodeError as e:
        f.fail(f.cmap.get(ours, ours), f"tools is a string but not JSON: {e.msg}")
    return tools if isinstance(tools, list) else [tools]


def _user_text(instruction: str, extra: Optional[str]) -> str:
    return f"{instruction}\n{extra}" if extra and extra.strip() else instruction


def _objects(f: _Fields, ours: str, what: str):
    """(index, 'field[i]', item) for a list-of-objects field, failing on a non-object item."""
    name = f.cmap[ours]
    for i, item in enumerate(f.listof(ours)):
        where = f"{name}[{i}]"
        if not isinstance(item, dict):
            f.fail(where, f"expected an object with {what}")
        yield i, where, item


def from_alpaca(f: _Fields) -> list[Message]:
    msgs = []
    system = f.text("system", required=False)
    if system:
        msgs.append(Message("system", system))
    history = f.raw("history", required=False) or []
    if not isinstance(history, list):
        f.fail(f.cmap["history"], "expected a list of [instruction, response] pairs")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            f.fail(f"{f.cmap['history']}[{i}]", "expected [instruction, response] (two strings)")
        msgs += [Message("user", pair[0]), Message("assistant", pair[1])]
    instruction = f.text("instruction")
    extra = f.text("input", required=False, allow_empty=True)
    msgs += [Message("user", _user_text(instruction, extra)), Message("assistant", f.text("output"))]
    return msgs


def from_pair(f: _Fields) -> list[Message]:
    system = f.text("system", required=False)
    msgs = [Message("system", system)] if system else []
    return msgs + [Message("user", f.text("prompt")), Message("assistant", f.text("response"))]


def from_conversation(f: _Fields) -> list[Message]:
    msgs = []
    for i, where, turn in _objects(f, "conversation", "input/output"):
        for key in ("input", "output"):
            if not isinstance(turn.get(key), str) or not turn[key].strip():
                f.fail(f"{where}.{key}", "missing, not text, or empty")
        if i == 0 and isinstance(turn.get("system"), str) and turn["system"].strip():
            msgs.append(Message("system", turn["system"]))
        msgs += [Message("user", turn["input"]), Message("assistant", turn["output"])]
    return msgs


def from_messages(f: _Fields) -> list[Message]:
    msgs = []
    for _, where, m in _objects(f, "messages", "role and content"):
        role = m.get("role")
        if role not in ROLES:
            f.fail(f"{where}.role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        content = m.get("content")
        if content is None and m.get("tool_calls"):
            content = json.dumps(m["tool_calls"], ensure_ascii=False)
        if not isinstance(content, str):
            f.fail(f"{where}.content", f"expected text, got {type(content).__name__}")
        reasoning = m.get("reasoning_content") or m.get("reasoning")
        msgs.append(Message(role, content, reasoning if isinstance(reasoning, str) else None))
    return msgs


def from_sharegpt(f: _Fields) -> list[Message]:
    msgs = []
    system = f.text("system", required=False)
    if system:
        msgs.append(Message("system", system))
    for _, where, turn in _objects(f, "conversations", "from and value"):
        who = turn.get("from", turn.get("role"))
        role = SHAREGPT_ROLES.get(who)
        if role is None:
            f.fail(f"{where}.from", f"unknown speaker {who!r}; expected one of {', '.join(SHAREGPT_ROLES)}")
        value = turn.get("value", turn.get("content"))
        if not isinstance(value, str):
            f.fail(f"{where}.value", f"expected text, got {type(value).__name__}")
        msgs.append(Message(role, value))
    return msgs


def from_reasoning(f: _Fields) -> list[Message]:
    system = f.text("system", required=False)
    msgs = [Message("system", system)] if system else []
    return msgs + [
        Message("user", f.text("question")),
        Message("assistant", f.text("response"), reasoning=f.text("reasoning")),
    ]


CONVERTERS: dict[str, Callable[[_Fields], list[Message]]] = {
    "alpaca": from_alpaca,
    "pair": from_pair,
    "conversation": from_conversation,
    "messages": from_messages,
    "sharegpt": from_sharegpt,
    "reasoning": from_reasoning,
}


def to_conversation(
    record: RawRecord, fmt: str, columns: dict[str, str], default_system: Optional[str] = None
) -> Conversation:
    f = _Fields(record, column_map(fmt, columns))
    msgs = CONVERTERS[fmt](f)
    if default_system and not any(m.role == "system" for m in msgs):
        msgs.insert(0, Message("system", default_system))
    tools = f.listof("tools", required=False) if "tools" in FIELDS[fmt] else None
    check_turns(msgs, f)
    conv = Conversation(msgs, record.file, record.index, record.line, tools=tools)
    from seektune.data.images import attach_images

    attach_images(conv, record)  # `images: [...]` for vision-language models
    return conv


def check_turns(msgs: list[Message], f: _Fields) -> None:
    """The structural rules every renderer relies on."""
    body = [(i, m) for i, m in enumerate(msgs) if m.role != "system"]
    if any(m.role == "system" for m in msgs[1:]):
        f.fail("messages", "a system message may only come first")
    if not any(m.role == "assistant" for _, m in body):
        f.fail("messages", "no assistant turn: nothing to learn from this record")
    if body[0][1].role != "user":
        f.fail(f"turn {body[0][0]}", f"the conversation must start with a user turn, not {body[0][1].role}")
    for (_, a), (j, b) in zip(body, body[1:]):
        if a.role == b.role and a.role in ("user", "assistant"):
            f.fail(f"turn {j}", f"two {a.role} turns in a row; turns must alternate between user and assistant")
    for j, m in body:
        if m.role == "assistant" and not m.content.strip():
            f.fail(f"turn {j}", "empty assistant answer")
