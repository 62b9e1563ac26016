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


def _check_remote_code(source: ModelSource, trust_remote_code: bool) -> None:
    if source.kind not in ("folder", "embedded", "gguf"):
        return
    cfg_path = Path(source.location) / "config.json"
    if not cfg_path.is_file():
        return
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    from transformers import CONFIG_MAPPING

    model_type = cfg.get("model_type")
    if model_type not in CONFIG_MAPPING and "auto_map" in cfg and not trust_remote_code:
        raise ModelSourceError(
            f"{source.original}: model_type {model_type!r} exists only as remote code in this folder and "
            "transformers has no native class for it. Remote code runs arbitrary Python: read it, then pass "
            "--trust-remote-code, or convert the checkpoint to a native model type"
        )


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
):
    from transformers import AutoModelForCausalLM

    _check_remote_code(source, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.location,
            revision=source.revision,
            dtype=DTYPES[precision],
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
            device_map=device_map,
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
