"""What the speed switches cannot do on some architectures, decided before they are applied.

DeepSeek-V4 runs eager attention only in transformers (per-head attention sinks and compressed-KV entries appended
to the keys; the class refuses sdpa), and its KV compressors pool fixed windows of the whole row, so packed samples
would read each other's compressed keys: no packing either.
"""

from __future__ import annotations

EAGER_ONLY_NO_PACKING = {"deepseek_v4": "DeepSeek-V4"}


def apply_arch_limits(train_cfg, model_config, packing: bool, attention: str, notes: list[str]) -> tuple[bool, str]:
    """(packing, attention) allowed for this architecture; ValueError when the user asked for what cannot run."""
    name = EAGER_ONLY_NO_PACKING.get(getattr(model_config, "model_type", None))
    if name is None:
        return packing, attention
    if train_cfg.attention not in ("auto", "eager"):
        raise ValueError(f"train.attention={train_cfg.attention}: {name} runs eager attention only (attention sinks and "
                         "compressed KV); set train.attention: auto")
    if train_cfg.packing is True:
        raise ValueError(f"train.packing=true: {name}'s KV compressor pools windows across the whole row, so packed "
                         "samples would see each other; set train.packing: auto or false")
    if packing or attention != "eager":
        notes.append(f"{name}: eager attention, no packing (its compressed KV pools windows across the row)")
    return False, "eager"
