"""`seektune export ollama`: a folder with the GGUF and a Modelfile whose TEMPLATE (a Go template) and
`stop` parameters reproduce the chat template the adapter was trained with.

Jinja cannot be translated in general, so the template is *measured*: conversations of sentinel texts are
rendered with the training template, and the text around each sentinel gives the pieces per role
(`TurnPieces`). The Go template is one fixed skeleton filled with those pieces, and the pieces are checked
to re-render other conversations exactly as the training template does before anything is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from seektune.data.formats import Message
from seektune.errors import SeektuneError

S, U1, A1, U2, A2, U3 = (f"SEEKTUNE_{n}_5c1e" for n in ("SYS", "U1", "A1", "U2", "A2", "U3"))


@dataclass
class TurnPieces:
    start: str  # before the first user turn when there is no system message (BOS, a default system prompt)
    system_prefix: str  # before a leading system message (BOS included)
    system_suffix: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str  # before an answer in the history
    assistant_suffix: str  # after an answer in the history (the end-of-turn token and what follows it)
    generation_prompt: str  # after the last user turn: where the model starts answering

    def render(self, messages: list[Message]) -> str:
        """What the Go template renders, in Python (same skeleton), for checking against the jinja template."""
        out = [] if messages and messages[0].role == "system" else [self.start]
        for i, m in enumerate(messages):
            last = i == len(messages) - 1
            if m.role == "system":
                out += [self.system_prefix, m.content, self.system_suffix]
            elif m.role == "user":
                out += [self.user_prefix, m.content, self.user_suffix,
                        self.generation_prompt if last else self.assistant_prefix]
            else:
                out += [m.content] + ([] if last else [self.assistant_suffix])
        return "".join(out)

    def go_template(self) -> str:
        # One line, no {{- trimming: trimming would eat the newlines that are part of the pieces.
        q = _go_literal
        return (
            f'{{{{ if and .Messages (ne (index .Messages 0).Role "system") }}}}{q(self.start)}{{{{ end }}}}'
            "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
            f'{{{{ if eq .Role "system" }}}}{q(self.system_prefix)}{{{{ .Content }}}}{q(self.system_suffix)}'
            f'{{{{ else if eq .Role "user" }}}}{q(self.user_prefix)}{{{{ .Content }}}}{q(self.user_suffix)}'
            f"{{{{ if $last }}}}{q(self.generation_prompt)}{{{{ else }}}}{q(self.assistant_prefix)}{{{{ end }}}}"
            f'{{{{ else if eq .Role "assistant" }}}}{{{{ .Content }}}}{{{{ if not $last }}}}{q(self.assistant_suffix)}{{{{ end }}}}'
            "{{ end }}{{ end }}"
        )


def _go_literal(text: str) -> str:
    if "{{" in text or "}}" in text:
        raise SeektuneError(f"the chat template writes {text!r}, which a Go template cannot hold as literal text")
    return text


def _between(text: str, a: Optional[str], b: Optional[str]) -> str:
    i = 0 if a is None else text.index(a) + len(a)
    j = len(text) if b is None else text.index(b, i)
    return text[i:j]


def measure_pieces(renderer) -> TurnPieces:
    """Pieces of the training template, from renders of sentinel conversations."""
    r = lambda msgs: renderer.render_text([Message(role, c) for role, c in msgs], add_generation_prompt=True)
    two = r([("user", U1), ("assistant", A1), ("user", U2)])
    one = r([("user", U1)])
    sys = r([("system", S), ("user", U1)])
    eot = renderer.end_of_turn or renderer.tokenizer.eos_token
    mid2 = _between(two, A1, U2)  # assistant suffix + user prefix
    if eot and eot in mid2:
        cut = mid2.index(eot) + len(eot)
        cut += len(mid2[cut:]) - len(mid2[cut:].lstrip("\n"))  # ChatML's newline after <|im_end|>
    else:
        cut = 0
    assistant_suffix, user_prefix = mid2[:cut], mid2[cut:]
    head = _between(two, None, U1)
    if not head.endswith(user_prefix):
        raise SeektuneError("the chat template starts the first user turn differently from later ones; "
                            "write the Ollama TEMPLATE by hand")
    mid1, tail = _between(two, U1, A1), _between(two, U2, None)
    k = 0
    while k < min(len(mid1), len(tail)) and mid1[k] == tail[k]:
        k += 1
    sys_mid = _between(sys, S, U1)
    if not sys_mid.endswith(user_prefix):
        raise SeektuneError("the chat template's system turn cannot be separated from the user turn after it")
    pieces = TurnPieces(
        start=head[: len(head) - len(user_prefix)], system_prefix=_between(sys, None, S),
        system_suffix=sys_mid[: len(sys_mid) - len(user_prefix)], user_prefix=user_prefix, user_suffix=mid1[:k],
        assistant_prefix=mid1[k:], assistant_suffix=assistant_suffix, generation_prompt=tail[k:],
    )
    if pieces.render([Message("user", U1)]) != one:
        raise SeektuneError("the chat template renders a single turn differently from a conversation; "
                            "write the Ollama TEMPLATE by hand")
    return pieces


CHECK_CONVERSATIONS = [
    [("user", "Hi there")],
    [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "Who are you?")],
    [("user", "2+2?"), ("assistant", "4"), ("user", "And 3+3?"), ("assistant", "6"), ("user", "Thanks")],
]


def check_pieces(pieces: TurnPieces, renderer) -> None:
    for conv in CHECK_CONVERSATIONS:
        msgs = [Message(role, c) for role, c in conv]
        want = renderer.render_text(msgs, add_generation_prompt=True)
        got = pieces.render(msgs)
        if got != want:
            raise SeektuneError(
                "the Ollama template would not reproduce the training template on a "
                f"{len(msgs)}-message conversation:\n  training: {want!r}\n  ollama:   {got!r}"
            )


def stop_strings(renderer, pieces: TurnPieces) -> list[str]:
    """The end-of-turn token, EOS, and the special token that opens a user turn (a model that runs on
    would write it next)."""
    tok = renderer.tokenizer
    stops = [t for t in (renderer.end_of_turn, tok.eos_token) if t]
    specials = [t for t in renderer._special if t in pieces.user_prefix]
    if specials:
        stops.append(specials[0])
    elif pieces.user_prefix.strip():
        stops.append(pieces.user_prefix.strip())  # DeepSeek-LLM's plain-text "User:"
    return list(dict.fromkeys(stops))


def modelfile_text(gguf_name: str, pieces: TurnPieces, stops: list[str]) -> str:
    template = pieces.go_template()
    if '"""' in template:
        raise SeektuneError('the template contains """, which a Modelfile cannot quote')
    lines = [f"FROM ./{gguf_name}", "", f'TEMPLATE """{template}"""', ""]
    lines += [f"PARAMETER stop {_quote(s)}" for s in stops]
    return "\n".join(lines) + "\n"


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def export_ollama(
    path, output, qtype: str = "q8_0", name: Optional[str] = None, progress: Optional[Callable[[str], None]] = None,
) -> dict:
    from seektune.data.render import ChatRenderer
    from seektune.export.gguf import check_type, model_arch, write_model_gguf
    from seektune.export.hf_source import open_export_source

    qtype = check_type(qtype)
    src = open_export_source(path, progress)
    arch = model_arch(src.config)
    if not src.template:
        raise SeektuneError(f"{path}: the tokenizer has no chat template, so no Ollama TEMPLATE can match training")
    renderer = ChatRenderer(src.tokenizer, src.template)
    pieces = measure_pieces(renderer)
    check_pieces(pieces, renderer)  # before the (slow) GGUF is written
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    gguf_name = f"model-{qtype}.gguf"
    report = write_model_gguf(src, arch, out / gguf_name, qtype, progress)
    stops = stop_strings(renderer, pieces)
    (out / "Modelfile").write_text(modelfile_text(gguf_name, pieces, stops), encoding="utf-8")
    model_name = name or re.sub(r"[^a-z0-9._-]+", "-", src.name.lower()).strip("-") or "seektune-model"
    return {"folder": str(out), "gguf": report, "stops": stops, "pieces": pieces,
            "command": f"cd {out} && ollama create {model_name} -f Modelfile && ollama run {model_name}"}
