"""Conversation -> token ids + labels with the model's own chat template.

Stock templates lack `{% generation %}` tags, so the assistant spans are found by rendering the
conversation prefix by prefix:

  prompt_i = template(messages[:i], add_generation_prompt=True)   what the model sees at inference
  wrap_i   = template(messages[:i] + [assistant: SENTINEL])       where the template puts an answer

The text between the generation prompt and the answer (DeepSeek-LLM's space after "Assistant:")
belongs to the answer; a generation prompt that pre-fills part of the answer (R1's "<think>\\n")
stays in the prompt. After the answer, the template's end-of-turn token is supervised (so the
model learns to stop) and whatever follows it (ChatML's newline) is not.

Each piece is tokenized on its own, so the prompt tokens in training are exactly the prompt tokens
at inference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from seektune.data.formats import Conversation, Message
from seektune.data.reasoning import ReasoningOptions, empty_think_prefix, split_inline_think
from seektune.errors import TemplateError

SENTINEL = "SEEKTUNE_ANSWER_7f3a"
IGNORE = -100
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    dropped_tokens: int = 0
    images: list = field(default_factory=list)  # image files, in the order of their tokens (vision models)
    source: str = ""  # "file:line record N", to name the records of a bad training step

    @property
    def n_supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def with_reasoning(reasoning: Optional[str], answer: str) -> str:
    """The R1 reasoning format: the chain of thought in a think block, then the answer."""
    return f"{THINK_OPEN}\n{(reasoning or '').strip()}\n{THINK_CLOSE}\n\n{answer}"


class ChatRenderer:
    """Renders conversations with one tokenizer and one template; knows the end-of-turn token."""

    def __init__(
        self, tokenizer, template: Optional[str] = None, loss_on: str = "all_assistant", max_length=None,
        reasoning: Optional[ReasoningOptions] = None,
    ):
        self.tokenizer = tokenizer
        self.reasoning = reasoning or ReasoningOptions()
        self.vision = None  # a models.vl.VisionSpec for DeepSeek-VL: <image> placeholders -> image tokens
        self.template = template or tokenizer.chat_template
        if not self.template:
            raise TemplateError(
                "the tokenizer has no chat template; name one with model.chat_template "
                f"(built-in: {', '.join(builtin_template_names())}) or give a .jinja file"
            )
        self.loss_on = loss_on
        self.max_length = max_length
        self._special = sorted(
            {t for t in tokenizer.all_special_tokens} | {t.content for t in tokenizer.added_tokens_decoder.values()},
            key=len,
            reverse=True,
        )
        self._role_support: dict[str, bool] = {}
        self.end_of_turn = self._find_end_of_turn()

    # ---- template access -------------------------------------------------------------------
    def render_text(self, messages: list[Message], add_generation_prompt: bool, tools=None) -> str:
        dicts = [{"role": m.role, "content": m.content} for m in messages]
        try:
            return self.tokenizer.apply_chat_template(
                dicts,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
                chat_template=self.template,
                tools=tools,
            )
        except Exception as e:  # jinja raises TemplateError/TypeError/... from inside the template
            raise TemplateError(f"the chat template failed on roles {[m.role for m in messages]}: {e}") from e

    def supports_role(self, role: str) -> bool:
        """Whether the template shows a message of this role at all (some silently drop it)."""
        if role not in self._role_support:
            probe = [Message("user", "hi"), Message("assistant", "ok"), Message(role, SENTINEL)]
            try:
                self._role_support[role] = SENTINEL in self.render_text(probe, add_generation_prompt=True)
            except TemplateError:
                self._role_support[role] = False
        return self._role_support[role]

    def _find_end_of_turn(self) -> Optional[str]:
        wrapped = self.render_text([Message("user", "hi"), Message("assistant", SENTINEL)], False)
        after = wrapped[wrapped.index(SENTINEL) + len(SENTINEL) :]
        token = self._first_special(after)
        return token[0] if token else None

    def _first_special(self, text: str) -> Optional[tuple[str, int]]:
        best = None
        for tok in self._special:
            pos = text.find(tok)
            if pos >= 0 and (best is None or pos < best[1]):
                best = (tok, pos)
        return best

    @property
    def stop_token_ids(self) -> list[int]:
        """Tokens that end an answer: the template's end-of-turn token and EOS."""
        ids = []
        for tok in (self.end_of_turn, self.tokenizer.eos_token):
            if tok:
                i = self.tokenizer.convert_tokens_to_ids(tok)
                if isinstance(i, int) and i != self.tokenizer.unk_token_id and i not in ids:
                    ids.append(i)
        return ids

    # ---- conversation -> pieces ------------------------------------------------------------
    def prepare(self, messages: list[Message], full_turns=()) -> list[Message]:
        """Messages as the template will see them: unsupported tool roles mapped; reasoning (a `reasoning` field or
        an inline <think> block) folded in for the assistant turns in `full_turns` (the supervised ones), and for
        history turns only with history_reasoning: keep."""
        out = []
        for i, m in enumerate(messages):
            content = m.content
            if m.role == "assistant":
                reasoning = m.reasoning
                if reasoning is None:
                    reasoning, content = split_inline_think(content)
                content = content.strip()
                if reasoning is not None and (i in full_turns or self.reasoning.history == "keep"):
                    content = with_reasoning(reasoning, content)
            role = m.role
            if role == "user" and self.vision is not None:
                content = content.replace("<image>", self.vision.image_token)
            if role == "tool" and not self.supports_role("tool"):
                role = "user"  # counted in the data report by the caller
            out.append(Message(role, content))
        return out

    def pieces(self, conv: Conversation) -> list[tuple[str, bool]]:
        """(text, supervised) pieces whose concatenation is the training text."""
        return [(t, sup) for t, sup, _ in self._pieces(conv)]

    def _pieces(self, conv: Conversation) -> list[tuple[str, bool, str]]:
        """(text, supervised, kind) with kind 'prompt' | 'answer' | 'trailing'."""
        assistant_idx = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
        if self.loss_on == "last_assistant":
            # Earlier answers are plain history here, rendered however the template renders history.
            assistant_idx = assistant_idx[-1:]
        hist = self.prepare(conv.messages)  # history as the inference prompt shows it
        full = self.prepare(conv.messages, set(assistant_idx))  # supervised turns with their reasoning
        tools = conv.tools
        pieces: list[tuple[str, bool, str]] = []
        done = ""  # training text so far
        for i in assistant_idx:
            prompt = self.render_text(hist[:i], add_generation_prompt=True, tools=tools)
            if not prompt.startswith(done):
                raise TemplateError(
                    f"{_where(conv)}: the template renders earlier turns differently once later turns follow "
                    "(for example it drops <think> reasoning from history, or history_reasoning: drop removes it), so "
                    "one sample cannot supervise every assistant turn. Set data.split_turns: true (one sample per "
                    "assistant turn), or data.loss_on: last_assistant."
                )
            self._check_kept_history(conv, hist[:i], prompt)
            prefill, answer, end, trailing = self._assistant_span(hist[:i], full[i].content, prompt, tools, conv)
            if prefill and self.reasoning.think_prefill == "response":
                prompt, answer = prompt[: len(prompt) - len(prefill)], prefill + answer
            empty = empty_think_prefix(answer, prefill if self.reasoning.think_prefill == "prompt" else "")
            turn: list[tuple[str, bool, str]] = []
            if empty and self.reasoning.empty_think == "ignore":
                turn.append((answer[:empty], False, "answer"))
                answer = answer[empty:]
            turn.append((answer + end, True, "answer"))
            if trailing:
                turn.append((trailing, False, "trailing"))
            pieces.append((prompt[len(done) :], False, "prompt"))
            pieces += turn
            done = prompt + "".join(t for t, _, _ in turn)
        return [p for p in pieces if p[0]]

    def _check_kept_history(self, conv, history: list[Message], prompt: str) -> None:
        if self.reasoning.history != "keep":
            return
        for m in conv.messages[: len(history)]:
            reasoning = m.reasoning if m.reasoning is not None else split_inline_think(m.content)[0]
            if m.role == "assistant" and reasoning and reasoning.strip() not in prompt:
                raise TemplateError(
                    f"{_where(conv)}: data.history_reasoning: keep, but this chat template removes reasoning from "
                    "earlier assistant turns (R1 templates do), so it cannot be kept; use history_reasoning: drop"
                )

    def _assistant_span(self, history, content, prompt, tools, conv) -> tuple[str, str, str, str]:
        """(generation-prompt pre-fill, answer after it, end-of-turn text, trailing text)."""
        wrapped = self.render_text(history + [Message("assistant", SENTINEL)], False, tools=tools)
        at = wrapped.find(SENTINEL)
        if at < 0:
            raise TemplateError(f"{_where(conv)}: the chat template does not render assistant turns")
        head, after = wrapped[:at], wrapped[at + len(SENTINEL) :]
        prefill = ""
        if head.startswith(prompt):
            answer = head[len(prompt) :] + content  # e.g. the space after "Assistant:"
        elif prompt.startswith(head):
            prefill = prompt[len(head) :]  # e.g. R1's "<think>\n": part of the prompt, not learned
            if not content.startswith(prefill):
                if prefill.strip() == THINK_OPEN:
                    content = with_reasoning("", content)  # an empty think block, as R1 writes one
                else:
                    raise TemplateError(
                        f"{_where(conv)}: the generation prompt pre-fills {prefill!r}, which the answer does not "
                        "start with"
                    )
            answer = content[len(prefill) :]
        else:
            raise TemplateError(
                f"{_where(conv)}: the template's generation prompt does not match how it renders an answer "
                f"(prompt ends {prompt[-40:]!r}, answer is preceded by {head[-40:]!r})"
            )
        special = self._first_special(after)
        if special is not None:
            tok, pos = special
            return prefill, answer, after[: pos + len(tok)], after[pos + len(tok) :]
        eos = self.tokenizer.eos_token
        if eos is None:
            raise TemplateError("the template ends assistant turns with no special token and the tokenizer has no EOS")
        # No end-of-turn token in the template: learn EOS anyway, or the model never stops.
        return prefill, answer, after + eos, ""

    # ---- pieces -> ids ----------------------------------------------------------------------
    def encode_turns(self, conv: Conversation) -> list[Encoded]:
        """One sample, or with data.split_turns one sample per assistant turn (its history as the template renders it)."""
        if not self.reasoning.split_turns:
            return [self.encode(conv)]
        import copy

        last_only = copy.copy(self)
        last_only.loss_on = "all" if self.loss_on == "all" else "last_assistant"
        ends = [i + 1 for i, m in enumerate(conv.messages) if m.role == "assistant"]
        if self.loss_on == "last_assistant":
            ends = ends[-1:]
        return [last_only.encode(_replace(conv, conv.messages[:n])) for n in ends]

    def encode(self, conv: Conversation) -> Encoded:
        tagged = self._pieces(conv)
        pieces = [(t, sup) for t, sup, _ in tagged]
        # Everything before the last answer is tokenized in one call, exactly as the prompt is at
        # inference (BPE merges across piece boundaries would otherwise differ); earlier answers inside
        # it are labelled through the character offsets. The last answer (and an unsupervised empty think
        # block before it) and what follows it are tokenized on their own, as the model generates them.
        last = max((k + 1 for k, (_, _, kind) in enumerate(tagged) if kind == "prompt"), default=0)
        if last == 0:
            ids, labels, rest = [], [], pieces
        else:
            ids, labels = self._encode_with_offsets(pieces[:last])
            rest = pieces[last:]
        for text, supervised in rest:
            piece = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += piece
            labels += piece if supervised else [IGNORE] * len(piece)
        if self.loss_on == "all":
            labels = list(ids)  # same tokens as the assistant-only sample, every one with a loss
        images = conv.meta.get("images") or []
        if images:
            from seektune.models.vl import check_and_expand

            ids, labels = check_and_expand(self, conv, ids, labels, images)
        enc = Encoded(ids, labels, images=images)
        if self.max_length and len(ids) > self.max_length:
            enc = Encoded(ids[: self.max_length], labels[: self.max_length], True, len(ids) - self.max_length, images)
            if images and enc.input_ids.count(self.vision.image_token_id) != len(images) * self.vision.tokens_per_image:
                raise TemplateError(
                    f"{_where(conv)}: data.max_length={self.max_length} cuts through an image's tokens; raise "
                    "data.max_length"
                )
        return enc

    def _encode_with_offsets(self, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
        text = "".join(t for t, _ in pieces)
        spans, pos = [], 0
        for t, sup in pieces:
            if sup:
                spans.append((pos, pos + len(t)))
            pos += len(t)
        out = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=bool(spans))
        ids = out["input_ids"]
        if not spans:
            return list(ids), [IGNORE] * len(ids)
        labels = [
            tok if any(a <= s and e <= b for a, b in spans) and e > s else IGNORE
            for tok, (s, e) in zip(ids, out["offset_mapping"])
        ]
        return list(ids), labels

    def prompt_text(self, messages: list[Message], tools=None) -> str:
        """The prompt at inference, byte for byte the prompt used in training (a pre-fill learned as part of the
        response, think_prefill: response, is left for the model to write)."""
        history = self.prepare(messages)
        text = self.render_text(history, add_generation_prompt=True, tools=tools)
        if self.reasoning.think_prefill == "response":
            wrapped = self.render_text(history + [Message("assistant", SENTINEL)], False, tools=tools)
            head = wrapped[: wrapped.find(SENTINEL)]
            if text.startswith(head):
                text = head
        return text

    def prompt_ids(self, messages: list[Message], tools=None) -> list[int]:
        """Token ids of the prompt at inference, byte for byte the prompt used in training."""
        return self.tokenizer(self.prompt_text(messages, tools), add_special_tokens=False)["input_ids"]


def _replace(conv: Conversation, messages: list[Message]) -> Conversation:
    import dataclasses

    return dataclasses.replace(conv, messages=messages)


def _where(conv: Conversation) -> str:
    return f"{conv.file}" + (f":{conv.line}" if conv.line else "") + f": record {conv.index}"


def builtin_template_names() -> list[str]:
    return sorted(p.stem for p in (Path(__file__).parent.parent / "templates").glob("*.jinja"))


def resolve_template(name_or_path: Optional[str], tokenizer) -> tuple[Optional[str], str]:
    """(template text or None for the tokenizer's own, a sentence saying which one is used)."""
    if name_or_path is None:
        if tokenizer.chat_template:
            return None, "the model's own chat template"
        raise TemplateError(
            "the tokenizer has no chat template. Choose one with --set model.chat_template=NAME "
            f"(built-in: {', '.join(builtin_template_names())}) or a path to a .jinja file"
        )
    path = Path(name_or_path).expanduser()
    if path.suffix == ".jinja" and path.is_file():
        return path.read_text(encoding="utf-8"), f"the chat template from {path}"
    builtin = Path(__file__).parent.parent / "templates" / f"{name_or_path}.jinja"
    if builtin.is_file():
        return builtin.read_text(encoding="utf-8"), f"the built-in `{name_or_path}` chat template (asked for)"
    raise TemplateError(
        f"model.chat_template={name_or_path!r}: not a .jinja file or a built-in template "
        f"({', '.join(builtin_template_names())})"
    )

