"""`seektune export gguf --adapter-only`: the LoRA adapter as a GGUF LoRA for llama.cpp's `--lora`.

llama.cpp reads `general.type = adapter`, `adapter.type = lora` and `adapter.lora.alpha`, and for each
adapted weight two tensors `<base GGUF name>.lora_a` (r x in) and `.lora_b` (out x r); it scales by
alpha / r, r taken from the tensor shapes. Llama q/k rows are permuted into llama.cpp's rotary layout,
which for W + B·A means permuting the rows of B.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Callable, Optional

import torch

from seektune.errors import SeektuneError
from seektune.export.gguf import (
    ARCHS,
    TYPES,
    GGUFReport,
    check_type,
    encode_tensor,
    finish_gguf,
    model_arch,
    rope_permute,
)

LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


def export_gguf_lora(path, output, qtype: str = "f16", progress: Optional[Callable[[str], None]] = None) -> GGUFReport:
    import gguf
    from safetensors.torch import load_file

    from seektune.infer.target import describe
    from seektune.models.source import resolve_source

    qtype = check_type(qtype)
    spec = describe(str(path))
    if spec.adapter_dir is None:
        raise SeektuneError(f"{path}: --adapter-only needs a run folder or a PEFT adapter folder")
    adapter = Path(spec.adapter_dir)
    acfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    if acfg.get("peft_type", "LORA") != "LORA":
        raise SeektuneError(f"{adapter}: a {acfg.get('peft_type')} adapter; llama.cpp takes LoRA adapters only")
    if acfg.get("use_dora"):
        raise SeektuneError(f"{adapter}: DoRA adapters cannot be expressed as a llama.cpp LoRA; merge and export the model")
    if acfg.get("modules_to_save"):
        raise SeektuneError(f"{adapter}: modules_to_save ({acfg['modules_to_save']}) are full weights, not LoRA; merge "
                            "and export the whole model instead")
    if acfg.get("alpha_pattern") or acfg.get("rank_pattern"):
        raise SeektuneError(f"{adapter}: per-module rank/alpha patterns; llama.cpp applies one alpha to all tensors")
    r, alpha = int(acfg["r"]), float(acfg["lora_alpha"])
    notes = []
    if acfg.get("use_rslora"):
        alpha = alpha * math.sqrt(r)  # rsLoRA scales by alpha/sqrt(r); llama.cpp by alpha/r
        notes.append(f"rsLoRA: alpha written as {alpha:g} so that llama.cpp's alpha/r equals alpha/sqrt(r)")

    source = resolve_source(spec.base, progress=progress)
    base_cfg = json.loads((Path(source.location) / "config.json").read_text(encoding="utf-8")) \
        if (Path(source.location) / "config.json").is_file() else _hub_config(source)
    arch = model_arch(base_cfg)
    n_layers, n_head = int(base_cfg["num_hidden_layers"]), int(base_cfg["num_attention_heads"])
    n_kv = int(base_cfg.get("num_key_value_heads") or n_head)
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, ARCHS[arch]), n_layers)

    state = load_file(str(adapter / "adapter_model.safetensors"))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in state.items():
        m = LORA_KEY.match(key)
        if not m:
            raise SeektuneError(f"{adapter}: tensor {key!r} is not a LoRA A/B matrix; llama.cpp cannot load it")
        pairs.setdefault(m["module"], {})[m["ab"]] = t.to(torch.float32)

    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out) + ".partial", arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(spec.name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    target = getattr(gguf.GGMLQuantizationType, TYPES[qtype][0])
    count = 0
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise SeektuneError(f"{adapter}: {module} has lora_{next(iter(ab))} without its partner")
        base_name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if base_name is None or module.endswith(("embed_tokens", "lm_head")):
            raise SeektuneError(f"{adapter}: LoRA on {module} has no llama.cpp LoRA tensor; target projections only")
        a, b = ab["A"], ab["B"]
        if arch == "llama" and module.endswith("self_attn.q_proj"):
            b = rope_permute(b, n_head)
        elif arch == "llama" and module.endswith("self_attn.k_proj"):
            b = rope_permute(b, n_kv)
        for suffix, t in ((".lora_a", a), (".lora_b", b)):
            data, raw = encode_tensor(t.numpy(), target)
            writer.add_tensor(base_name + suffix, data, raw_dtype=raw)
            count += 1
    finish_gguf(writer, out, progress)
    return GGUFReport(str(out), arch, f"{qtype} LoRA adapter (r={r}, alpha={alpha:g})", count, out.stat().st_size,
                      "-", None, None, [], notes + [f"use with: llama-cli -m BASE.gguf --lora {out}"])


def _hub_config(source) -> dict:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source.location, revision=source.revision).to_dict()
