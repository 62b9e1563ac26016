"""What `generate`, `chat` and `compare` run: a base model, a run folder (base + adapter), a PEFT adapter
folder, or a merged folder -- each with the chat template it was trained with."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from seektune.data.render import ChatRenderer, resolve_template
from seektune.errors import SeektuneError


@dataclass
class Target:
    name: str  # shown in tables and prompts
    model: object
    tokenizer: object
    renderer: ChatRenderer
    base: str  # the base model's source, as the user or the run gave it
    adapters: dict[str, str] = field(default_factory=dict)  # adapter name -> folder, when model is a PeftModel
    renderers: dict[str, ChatRenderer] = field(default_factory=dict)  # adapter name -> its training template
    notes: list[str] = field(default_factory=list)
    active: Optional[str] = None  # adapter in use; None: the base model alone

    def use(self, name: Optional[str]) -> ChatRenderer:
        """Switch to an adapter by name (None or "base": the base model alone, adapters switched off)."""
        if name in (None, "base"):
            if self.adapters:
                self.model.base_model.disable_adapter_layers()
            self.active = None
            return self.renderer
        if name not in self.adapters:
            raise SeektuneError(f"no adapter named {name!r}; loaded: {', '.join(self.adapters) or 'none'} (and base)")
        self.model.base_model.enable_adapter_layers()
        self.model.set_adapter(name)
        self.active = name
        return self.renderers.get(name, self.renderer)


@dataclass(frozen=True)
class TargetSpec:
    """Where the pieces of a target come from, before anything heavy is loaded."""

    kind: str  # "run" | "adapter" | "model"
    path: str
    base: Optional[str]  # model source for run/adapter; the model itself for "model"
    tokenizer_dir: Optional[str]
    adapter_dir: Optional[str]
    name: str
    raw_config: dict = field(default_factory=dict, hash=False, compare=False)
    trust_remote_code: bool = False
    allow_pickle: bool = False


def describe(spec: Optional[str]) -> TargetSpec:
    """Classify what the user gave: run folder, adapter folder, or model (folder / .gguf / hub id / embedded)."""
    if spec and Path(spec).is_dir():
        p = Path(spec)
        if (p / "config.yaml").is_file() and (p / "adapter").is_dir():
            from seektune.run_folder import Run

            run = Run.open(p)
            import yaml

            raw = yaml.safe_load((p / "config.yaml").read_text(encoding="utf-8")) or {}
            tok = p / "tokenizer"
            return TargetSpec(
                "run", str(p), run.config.model.source, str(tok) if tok.is_dir() else None, str(run.adapter_dir),
                p.name, raw, run.config.model.trust_remote_code, run.config.model.allow_pickle,
            )
        if (p / "adapter_config.json").is_file():
            cfg = json.loads((p / "adapter_config.json").read_text(encoding="utf-8"))
            base = cfg.get("base_model_name_or_path")
            if not base:
                raise SeektuneError(f"{p}/adapter_config.json names no base model (base_model_name_or_path); "
                                    "pass the run folder instead")
            tok = p / "tokenizer" if (p / "tokenizer").is_dir() else (p if (p / "tokenizer_config.json").is_file() else None)
            return TargetSpec("adapter", str(p), base, str(tok) if tok else None, str(p), p.name)
        if (p / "checkpoints").is_dir() and not (p / "config.json").is_file():
            raise SeektuneError(f"{p} is an unfinished run (no adapter/ yet); finish it with `seektune train --resume "
                                f"--output {p}`")
    name = "base model" if not spec or spec in ("embedded", "default", "smollm2") else Path(spec).name or spec
    return TargetSpec("model", spec or "embedded", spec, None, None, name)


def qlora_note(raw_config: dict) -> Optional[str]:
    """A run trained on a 4/8-bit base says so somewhere in its config (any field whose value is 4bit/8bit)."""
    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(v, str) and v.lower() in ("4bit", "8bit", "nf4", "fp4", "int8", "int4"):
                    yield k, v
                else:
                    yield from walk(v)

    hits = list(walk(raw_config))
    if hits:
        k, v = hits[0]
        return f"trained on a quantized base ({k}={v}, QLoRA)"
    return None


def load_base(
    spec: TargetSpec,
    precision: str = "auto",
    load_in: Optional[str] = None,
    chat_template: Optional[str] = None,
    progress: Optional[Callable[[str], None]] = None,
):
    """(model, tokenizer, renderer, source) for the base of a target, with the template of the run if any."""
    from transformers import AutoTokenizer

    from seektune.infer.quantized import quantization_kwargs
    from seektune.models.load import DTYPES, load_model, load_tokenizer, pick_precision
    from seektune.models.source import resolve_source

    source = resolve_source(spec.base, allow_pickle=spec.allow_pickle, progress=progress)
    if spec.tokenizer_dir:
        tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_dir)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    else:
        tokenizer = load_tokenizer(source, spec.trust_remote_code)
    template, _ = resolve_template(chat_template, tokenizer)
    precision = pick_precision(precision)
    if load_in:
        from transformers import AutoModelForCausalLM

        kwargs = quantization_kwargs(load_in, DTYPES[precision])
        model = AutoModelForCausalLM.from_pretrained(
            source.location, revision=source.revision, trust_remote_code=spec.trust_remote_code,
            use_safetensors=None if spec.allow_pickle else True, **kwargs,
        )
    else:
        model = load_model(source, precision, spec.trust_remote_code, spec.allow_pickle)
        import torch

        if torch.cuda.is_available():
            model = model.to("cuda")
    model.eval()
    return model, tokenizer, ChatRenderer(tokenizer, template), source


def add_adapter(model, adapter_dir: str, name: str):
    """Attach one more adapter (PEFT multi-adapter) without reloading the base model."""
    from peft import PeftModel

    from seektune.adapters.lora import native_v5_targets

    mtype = (model.base_model.model if isinstance(model, PeftModel) else model).config.model_type
    with native_v5_targets(mtype):
        if isinstance(model, PeftModel):
            model.load_adapter(adapter_dir, adapter_name=name)
            return model
        return PeftModel.from_pretrained(model, adapter_dir, adapter_name=name)


def load_target(
    spec_or_path,
    precision: str = "auto",
    load_in: Optional[str] = None,
    chat_template: Optional[str] = None,
    extra_adapters: Optional[list[str]] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> Target:
    """A model ready to generate. Extra run/adapter folders are attached to the same base (for chat /adapter)."""
    spec = spec_or_path if isinstance(spec_or_path, TargetSpec) else describe(spec_or_path)
    model, tokenizer, renderer, source = load_base(spec, precision, load_in, chat_template, progress)
    target = Target(spec.name, model, tokenizer, renderer, source.original)
    note = qlora_note(spec.raw_config)
    if note:
        target.notes.append(note)
    if spec.adapter_dir:
        target.model = add_adapter(target.model, spec.adapter_dir, spec.name)
        target.adapters[spec.name] = spec.adapter_dir
        target.renderers[spec.name] = renderer
    for extra in extra_adapters or []:
        e = describe(extra)
        if not e.adapter_dir:
            raise SeektuneError(f"{extra}: not a run folder or an adapter folder; only adapters can share a base model")
        if e.base != spec.base and spec.kind != "model":
            raise SeektuneError(f"{extra} was trained on {e.base}, not on {spec.base}; it cannot share this base model")
        name = e.name if e.name not in target.adapters else f"{e.name}-{len(target.adapters)}"
        target.model = add_adapter(target.model, e.adapter_dir, name)
        target.adapters[name] = e.adapter_dir
        target.renderers[name] = _renderer_for(e, chat_template) or renderer
    if target.adapters:
        target.use(next(iter(target.adapters)))
        target.model.eval()
    return target


def _renderer_for(spec: TargetSpec, chat_template: Optional[str]) -> Optional[ChatRenderer]:
    if not spec.tokenizer_dir:
        return None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec.tokenizer_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return ChatRenderer(tok, resolve_template(chat_template, tok)[0])
