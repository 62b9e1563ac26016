"""LoraSection -> PEFT LoraConfig, and the checks that keep a broken adapter from being saved."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from peft import LoraConfig, TaskType

from seektune.config import LoraSection
from seektune.errors import SeektuneError
from seektune.models.arch import resolve_targets


def build_lora_config(spec: LoraSection, model_type: str) -> LoraConfig:
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        bias=spec.bias,
        target_modules=resolve_targets(spec.targets, model_type),
        modules_to_save=spec.modules_to_save or None,
        use_rslora=spec.use_rslora,
        use_dora=spec.use_dora,
    )


def attach_lora(model, spec: LoraSection, expert_choice=None):
    """Attach LoRA as `spec` says. Target groups (models/targets.py) resolve against this model; the plan is kept
    on the returned model as `seektune_plan` for the pre-training report."""
    from peft import get_peft_model

    from seektune.adapters.experts import hold_unchosen_experts
    from seektune.adapters.targets import plan_targets, quiet_peft_pattern_warning

    plan = plan_targets(model, spec, expert_choice)
    cfg = config_from_plan(spec, plan, model.config.model_type)
    quiet_peft_pattern_warning()
    try:
        with native_v5_targets(model.config.model_type):
            peft_model = get_peft_model(model, cfg)
    except ValueError as e:
        raise SeektuneError(
            f"lora.targets={spec.targets!r} matched no module of this {model.config.model_type} model ({e}). "
            "Run `seektune inspect MODEL` to see the module names and target groups"
        ) from e
    hold_unchosen_experts(peft_model, plan)
    peft_model.seektune_plan = plan
    return peft_model


def config_from_plan(spec: LoraSection, plan, model_type: str) -> LoraConfig:
    if not plan.groups:  # a regex or module names, as given
        return build_lora_config(spec, model_type)
    dropout = spec.dropout
    if plan.uses_parameters and dropout:
        # PEFT's ParamWrapper (LoRA on fused expert tensors / the router weight) cannot apply dropout.
        raise SeektuneError(
            f"lora.dropout={dropout}: LoRA on fused expert tensors or the router (groups {plan.groups}) cannot use "
            "dropout (PEFT target_parameters); set lora.dropout: 0"
        )
    if plan.uses_parameters and spec.use_dora:
        raise SeektuneError("lora.use_dora: DoRA does not work on fused expert tensors or the router; turn one off")
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=dropout,
        bias=spec.bias,
        target_modules=plan.target_modules,
        target_parameters=plan.target_parameters or None,
        rank_pattern=plan.rank_pattern,
        alpha_pattern=plan.alpha_pattern,
        modules_to_save=(spec.modules_to_save + plan.modules_to_save) or None,
        use_rslora=spec.use_rslora,
        use_dora=spec.use_dora,
    )


def trainable_summary(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def check_adapter_weights(state_dict: dict[str, torch.Tensor]) -> None:
    """Refuse to save an adapter that is empty, all zeros or not finite (trap 5 of DESIGN.md)."""
    if not state_dict:
        raise SeektuneError("the adapter has no weights; nothing would be saved")
    bad = [k for k, v in state_dict.items() if not torch.isfinite(v).all()]
    if bad:
        raise SeektuneError(
            f"the adapter contains NaN/Inf in {len(bad)} tensors (first: {bad[0]}); not saving it. "
            "Lower train.learning_rate, or use bf16 instead of fp16"
        )
    lora_b = [v for k, v in state_dict.items() if "lora_B" in k]
    if lora_b and all(float(v.abs().max()) == 0.0 for v in lora_b):
        raise SeektuneError(
            "every lora_B matrix is still zero: the adapter equals the base model. Training did not update it "
            "(check train.learning_rate and that the data has supervised tokens)"
        )


# PEFT 0.21 treats deepseek_v2/v3/v32 like transformers-v4 Qwen2-MoE checkpoints and renames every target
# ending in gate_proj/up_proj/down_proj to the fused routed-expert parameters -- so the dense and
# shared-expert MLPs silently get no LoRA and the experts get one instead (peft#3711). Our targets are
# already written for transformers-v5 module names, so the rename is switched off while we attach or
# load an adapter of these architectures.
_NO_V4_RENAME = ("deepseek_v2", "deepseek_v3", "deepseek_v32", "deepseek_v4")


@contextmanager
def native_v5_targets(model_type: str):
    try:
        import peft.utils.transformers_weight_conversion as conv
    except ImportError:  # older PEFT has no rename at all
        yield
        return
    if model_type not in _NO_V4_RENAME or model_type not in conv._MODEL_TO_CONVERSION_PATTERN:
        yield
        return
    saved = conv._MODEL_TO_CONVERSION_PATTERN.pop(model_type)
    try:
        yield
    finally:
        conv._MODEL_TO_CONVERSION_PATTERN[model_type] = saved


def load_adapter(model, adapter_dir: str, is_trainable: bool = False):
    from peft import PeftModel

    from seektune.adapters.targets import quiet_peft_pattern_warning

    quiet_peft_pattern_warning()
    with native_v5_targets(model.config.model_type):
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=is_trainable)
