"""Model + tokenizer from a resolved source, with safe defaults (no remote code, no pickle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from seektune.errors import ModelSourceError
from seektune.models.source import ModelSource

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def pick_precision(asked: str) -> str:
    """bf16 where the GPU supports it, fp16 on older GPUs, fp32 on CPU (CPU half precision is slow)."""
    if asked != "auto":
        return asked
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def _check_remote_code(source: ModelSource, trust_remote_code: bool) -> Optional[str]:
    """Raises for a folder whose model type exists only as remote code (see models/remote.py); returns the note
    for a folder whose remote code is replaced by a native class, else None."""
    if source.kind in ("folder", "embedded", "gguf"):
        from seektune.models.remote import check_remote_code

        return check_remote_code(source.location, source.original, trust_remote_code)[1]
    return None


def load_tokenizer(source: ModelSource, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        source.location, revision=source.revision, trust_remote_code=trust_remote_code
    )
    if tok.pad_token is None:
        # Padding positions never carry a loss (labels are built separately), so EOS is safe here.
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    source: ModelSource,
    precision: str = "fp32",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    device_map: Optional[str] = None,
    load_in: Optional[str] = None,
):
    """`load_in` = "4bit"/"8bit": a bitsandbytes-quantized base on the GPU (QLoRA)."""
    from seektune.models.remote import check_remote_code
    from seektune.models.vl import auto_model_class

    if source.kind in ("folder", "embedded", "gguf"):
        trust_remote_code, _ = check_remote_code(source.location, source.original, trust_remote_code)
    kwargs = {"dtype": DTYPES[precision], "device_map": device_map}
    if load_in:
        from seektune.infer.quantized import quantization_kwargs

        kwargs = quantization_kwargs(load_in, DTYPES[precision])
    try:
        model = auto_model_class(source.location).from_pretrained(
            source.location,
            revision=source.revision,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
            **kwargs,
        )
    except OSError as e:
        if not allow_pickle and "safetensors" in str(e).lower():
            raise ModelSourceError(
                f"{source.original}: no safetensors weights. Pickle weights can run code when loaded; pass "
                "--allow-pickle only if you trust the source"
            ) from e
        raise ModelSourceError(f"cannot load {source.original}: {e}") from e
    except Exception as e:
        if type(e).__name__ != "SafetensorError":
            raise
        raise ModelSourceError(
            f"{source.original}: a weights file is damaged or truncated ({e}); download or convert it again"
        ) from e
    return model
