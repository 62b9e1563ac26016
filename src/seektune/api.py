"""The Python API: `seektune.train(config) -> Run` and `seektune.load(run_dir)` -> a model ready to generate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

from seektune.data.formats import Message
from seektune.data.reasoning import ReasoningOptions
from seektune.data.render import ChatRenderer
from seektune.infer.generate import generate_answers
from seektune.run_folder import Run
from seektune.training.run import train  # noqa: F401  (re-exported)


@dataclass
class LoadedModel:
    model: object  # a PeftModel over the base model
    tokenizer: object
    renderer: ChatRenderer
    run: Run

    def generate(self, prompt: Union[str, list[dict], list[Message]], max_new_tokens: int = 128, **kw) -> str:
        return self.generate_many([prompt], max_new_tokens=max_new_tokens, **kw)[0]

    def generate_many(self, prompts: list, max_new_tokens: int = 128, **kw) -> list[str]:
        return generate_answers(self.model, self.renderer, [_messages(p) for p in prompts], max_new_tokens, **kw)


def _messages(p) -> list[Message]:
    if isinstance(p, str):
        return [Message("user", p)]
    return [m if isinstance(m, Message) else Message(m["role"], m["content"]) for m in p]


def load(run_dir: Union[str, Path], precision: str = "auto") -> LoadedModel:
    """Base model + the run's adapter + the run's tokenizer and template, ready to generate."""
    from transformers import AutoTokenizer

    from seektune.adapters.lora import load_adapter
    from seektune.models.load import load_model, pick_precision
    from seektune.models.source import resolve_source

    run = Run.open(run_dir)
    cfg = run.config
    source = resolve_source(cfg.model.source, revision=cfg.model.revision, allow_pickle=cfg.model.allow_pickle)
    tokenizer = AutoTokenizer.from_pretrained(str(run.path / "tokenizer"))
    base = load_model(source, pick_precision(precision), cfg.model.trust_remote_code, cfg.model.allow_pickle)
    model = load_adapter(base, str(run.adapter_dir))
    model.eval()
    renderer = ChatRenderer(tokenizer, None, cfg.data.loss_on, cfg.data.max_length, ReasoningOptions.from_data(cfg.data))
    return LoadedModel(model, tokenizer, renderer, run)
