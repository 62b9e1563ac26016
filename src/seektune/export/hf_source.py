"""What an export reads: config, tokenizer + training template, and the (merged) tensors -- from a run
folder (base + adapter merged in memory) or from a model/merged folder (read shard by shard)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from seektune.errors import SeektuneError


@dataclass
class ExportSource:
    name: str
    config: dict  # config.json of the (merged) model
    tokenizer: object
    template: Optional[str]
    tensors: Callable[[], Iterator[tuple[str, torch.Tensor]]]  # HF name -> tensor, one at a time
    generation_eos: list[int] = field(default_factory=list)
    spec: object = None  # infer.target.TargetSpec
    folder: Optional[Path] = None  # model folder, when read from disk


def open_export_source(path, progress: Optional[Callable[[str], None]] = None) -> ExportSource:
    from seektune.data.render import ChatRenderer
    from seektune.infer.target import describe
    from seektune.models.load import load_tokenizer
    from seektune.models.source import resolve_source

    spec = describe(str(path))
    source = resolve_source(spec.base, allow_pickle=False, progress=progress)
    if spec.tokenizer_dir:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_dir)
    else:
        tokenizer = load_tokenizer(source, spec.trust_remote_code)
    template = tokenizer.chat_template
    stops = ChatRenderer(tokenizer).stop_token_ids if template else []
    if spec.adapter_dir is None:
        folder = Path(source.location)
        if not folder.is_dir():
            raise SeektuneError(f"{path}: export reads a local model folder, a merged folder or a run folder")
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        return ExportSource(folder.name, config, tokenizer, template, lambda: _folder_tensors(folder), stops, spec, folder)

    def merged_tensors():
        from seektune.adapters.lora import load_adapter
        from seektune.models.load import load_model

        if progress:
            progress(f"merging {spec.adapter_dir} into {source.display_name} in memory (fp32)")
        model = load_adapter(load_model(source, "fp32", spec.trust_remote_code), spec.adapter_dir).merge_and_unload()
        yield from model.state_dict().items()

    config = json.loads((Path(source.location) / "config.json").read_text(encoding="utf-8")) \
        if Path(source.location, "config.json").is_file() else _hub_config(source)
    return ExportSource(spec.name, config, tokenizer, template, merged_tensors, stops, spec)


def _hub_config(source) -> dict:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source.location, revision=source.revision).to_dict()


def _folder_tensors(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise SeektuneError(f"{folder}: no .safetensors weights to export")
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                yield name, st.get_tensor(name)
