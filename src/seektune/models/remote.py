"""Checkpoint folders that ship remote code (`auto_map` in config.json).

DeepSeek's own V2/V2-Lite/V3 folders carry `modeling_deepseek.py`; its V3 gate asserts `not self.training`, so it
cannot train. transformers has native classes for these model types and converts the per-expert checkpoint
weights (`mlp.experts.N.gate_proj.weight` ...) to its fused expert tensors while loading, so seektune maps such a
folder onto the native class and never runs its Python files. Model types with no native class fail with what to do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from seektune.errors import ModelSourceError

# model types whose native transformers class is always used, remote code or not
NATIVE_DEEPSEEK = ("deepseek_v2", "deepseek_v3", "deepseek_v32", "deepseek_v4", "deepseek_vl", "deepseek_vl_hybrid")
ADVICE = {
    # the original DeepSeek-VL repos (deepseek-ai/deepseek-vl-*-chat) use this remote-code type
    "multi_modality": "DeepSeek-VL's original checkpoints are remote code; use the converted ones for transformers' "
    "native class (deepseek-community/deepseek-vl-1.3b-chat, deepseek-community/deepseek-vl-7b-chat), or convert this "
    "folder with transformers' models/deepseek_vl/convert_deepseek_vl_weights_to_hf.py",
}


def _config(location: str) -> Optional[dict]:
    path = Path(location) / "config.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def check_remote_code(location: str, original: str, trust_remote_code: bool) -> tuple[bool, Optional[str]]:
    """(trust_remote_code to pass to transformers, a note for the user or None); raises for unusable folders."""
    cfg = _config(location)
    if cfg is None or "auto_map" not in cfg:
        return trust_remote_code, None
    from transformers import CONFIG_MAPPING

    model_type = cfg.get("model_type")
    if model_type in NATIVE_DEEPSEEK:
        return False, (
            f"{original}: config.json names remote code (auto_map), but transformers has a native {model_type} class; "
            "using it (the folder's Python files are not run; per-expert weights are converted while loading)"
        )
    if model_type in CONFIG_MAPPING or trust_remote_code:
        return trust_remote_code, None
    advice = ADVICE.get(model_type, "Remote code runs arbitrary Python: read it, then pass --trust-remote-code, or "
                        "convert the checkpoint to a native model type")
    raise ModelSourceError(
        f"{original}: model_type {model_type!r} exists only as remote code in this folder and transformers has no "
        f"native class for it. {advice}"
    )
