"""`seektune chat`: multi-turn chat in the terminal, answers streamed as they are generated.

Commands: /reset (forget the history), /system TEXT (set the system prompt and reset), /adapter NAME
(switch between the adapters loaded on one base model, or `base`), /adapters, /help, /exit."""

from __future__ import annotations

import sys
from typing import Callable, Optional, TextIO

from seektune.data.formats import Message
from seektune.infer.engine import Sampling, generate
from seektune.infer.think import shown

HELP = ("/reset  forget the conversation | /system TEXT  set the system prompt (and reset) | "
        "/adapter NAME  switch adapter (`base` = none) | /adapters  list them | /exit")


def chat_loop(
    target,
    sampling: Optional[Sampling] = None,
    system: Optional[str] = None,
    show_thinking: bool = True,
    stream: bool = True,
    stdin: TextIO = None,
    write: Callable[[str], None] = None,
) -> list[Message]:
    """Read lines until EOF or /exit; returns the last conversation."""
    stdin = stdin or sys.stdin
    write = write or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    sampling = sampling or Sampling(max_new_tokens=512)
    renderer = target.use(next(iter(target.adapters))) if target.adapters else target.renderer
    history: list[Message] = []
    names = ", ".join(list(target.adapters) + ["base"]) if target.adapters else "none"
    write(f"chatting with {target.name} (adapters: {names}). {HELP}\n")
    interactive = stdin.isatty()
    while True:
        if interactive:
            write(f"{target.active or 'base'}> ")
        line = stdin.readline()
        if not line:
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("/"):
            cmd, _, arg = line.partition(" ")
            if cmd in ("/exit", "/quit"):
                break
            if cmd == "/reset":
                history = []
                write("[history cleared]\n")
            elif cmd == "/system":
                system = arg.strip() or None
                history = []
                write(f"[system prompt {'set' if system else 'removed'}; history cleared]\n")
            elif cmd == "/adapter":
                try:
                    renderer = target.use(arg.strip() or None)
                except Exception as e:  # an unknown name: say so and keep chatting
                    write(f"[{e}]\n")
                    continue
                write(f"[now using {target.active or 'the base model (no adapter)'}]\n")
            elif cmd == "/adapters":
                write(f"[loaded: {names}; active: {target.active or 'base'}]\n")
            elif cmd == "/help":
                write(HELP + "\n")
            else:
                write(f"[unknown command {cmd}] {HELP}\n")
            continue
        history.append(Message("user", line))
        convo = ([Message("system", system)] if system else []) + history
        if stream:
            write("assistant: ")
        answer = generate(target.model, renderer, [convo], sampling, stream=stream, show_thinking=show_thinking,
                          write=write)[0]
        if not stream:
            write(f"assistant: {shown(answer.text, answer.prefill, show_thinking)}\n")
        if not answer.stopped:
            write(f"[cut at {sampling.max_new_tokens} tokens]\n")
        # History keeps the answer without reasoning, as R1 templates render earlier turns.
        history.append(Message("assistant", shown(answer.text, answer.prefill, False) or answer.text))
    return ([Message("system", system)] if system else []) + history
