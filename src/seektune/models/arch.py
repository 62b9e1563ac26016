"""Per-architecture LoRA target presets (the regex/list path).

Named target groups -- attention, dense-mlp, shared-experts, experts, router for DeepSeek-V2/V3/V3.2/V4;
language, vision, projector for DeepSeek-VL; combinable as a list -- are resolved against the model in adapters/targets.py. These
presets remain for `resolve_targets` when targets are given as a regex or module names.

`default` targets every projection of attention and of the dense/shared MLPs. For DeepSeek-V2/V3/V3.2/V4
it leaves out the router (`mlp.gate`, not a Linear in transformers 5) and the routed experts, which
are costly to adapt and which many inference servers refuse in adapters.
"""

from __future__ import annotations

DENSE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

DEEPSEEK_MLA_ATTENTION = r"self_attn\.(q_proj|q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)"
DEEPSEEK_DENSE_MLP = r"mlp\.(gate_proj|up_proj|down_proj)"
DEEPSEEK_SHARED = r"mlp\.shared_experts\.(gate_proj|up_proj|down_proj)"
# DeepSeek-V4: shared-KV MQA with a low-rank grouped output and a KV compressor (CSA/HCA layers)
DEEPSEEK_V4_ATTENTION = r"self_attn\.(q_a_proj|q_b_proj|kv_proj|o_b_proj|compressor\.(kv_proj|gate_proj))"

PRESETS: dict[str, dict[str, object]] = {
    "default": {
        "llama": DENSE,
        "qwen2": DENSE,
        "qwen3": DENSE,
        "mistral": DENSE,
        "deepseek_v2": rf".*\.({DEEPSEEK_MLA_ATTENTION}|{DEEPSEEK_DENSE_MLP}|{DEEPSEEK_SHARED})$",
        "deepseek_v3": rf".*\.({DEEPSEEK_MLA_ATTENTION}|{DEEPSEEK_DENSE_MLP}|{DEEPSEEK_SHARED})$",
        "deepseek_v32": rf".*\.({DEEPSEEK_MLA_ATTENTION}|{DEEPSEEK_DENSE_MLP}|{DEEPSEEK_SHARED})$",
        "deepseek_v4": rf".*\.({DEEPSEEK_V4_ATTENTION}|{DEEPSEEK_SHARED})$",
    },
    "attention": {
        "llama": DENSE[:4],
        "qwen2": DENSE[:4],
        "qwen3": DENSE[:4],
        "mistral": DENSE[:4],
        "deepseek_v2": rf".*\.{DEEPSEEK_MLA_ATTENTION}$",
        "deepseek_v3": rf".*\.{DEEPSEEK_MLA_ATTENTION}$",
        "deepseek_v32": rf".*\.{DEEPSEEK_MLA_ATTENTION}$",
        "deepseek_v4": rf".*\.{DEEPSEEK_V4_ATTENTION}$",
    },
}


def resolve_targets(targets, model_type: str):
    """A preset name, 'all-linear', a regex string, or a list of module names -> PEFT target_modules."""
    if isinstance(targets, str) and targets in PRESETS:
        by_arch = PRESETS[targets]
        if model_type in by_arch:
            return by_arch[model_type]
        # An architecture we have no preset for: every Linear except the output head is the safe guess.
        return "all-linear"
    return targets
