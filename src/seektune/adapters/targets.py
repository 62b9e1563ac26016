"""LoRA target groups per architecture -> a TargetPlan (PEFT target_modules / target_parameters / patterns).

DeepSeek-V2/V3/V3.2/V4 groups (transformers-5 native module names):
  attention       the MLA projections present: q_proj or q_a_proj/q_b_proj, kv_a_proj_with_mqa, kv_b_proj, o_proj;
                  V4: q_a_proj, q_b_proj, kv_proj, o_b_proj and its KV compressor's kv_proj/gate_proj. Never the
                  sparse-attention indexer (V3.2 `self_attn.indexer.*`, V4 `compressor.indexer.*`): it only picks
                  top-k tokens, so no gradient reaches it; nor V4's grouped `o_a_proj` (block-diagonal, not x @ W.T)
  dense-mlp       the MLPs of the first `first_k_dense_replace` (dense) layers; V4 has none (every layer is MoE)
  shared-experts  the shared experts of the MoE layers
  experts         the routed experts: fused 3-D tensors through PEFT `target_parameters`, or separate nn.Linear
                  experts by module name; all of them or a subset (`lora.experts`)
  router          opt-in only: LoRA on the router weight; its `e_score_correction_bias` buffer is never touched
  default         attention + dense-mlp + shared-experts
A list of group names combines them, e.g. `targets: [attention, experts]`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Optional

from torch import nn

from seektune.errors import ConfigError
from seektune.models.arch import DEEPSEEK_MLA_ATTENTION as _MLA
from seektune.models.arch import DEEPSEEK_V4_ATTENTION as _V4_ATTN

_MLP = r"(gate_proj|up_proj|down_proj)"
_DENSE4 = r"self_attn\.(q_proj|k_proj|v_proj|o_proj)"

# group -> regex over full module names (PEFT fullmatches a string target), per family.
DEEPSEEK_MOE = ("deepseek_v2", "deepseek_v3", "deepseek_v32", "deepseek_v4")
NO_DENSE_MLP = ("deepseek_v4",)  # hash-routed MoE from layer 0 instead of dense first layers
DEEPSEEK_GROUPS = {
    "attention": rf".*\.({_MLA}|{_V4_ATTN})",
    "dense-mlp": rf".*\.mlp\.{_MLP}",
    "shared-experts": rf".*\.mlp\.shared_experts\.{_MLP}",
    # experts and router are resolved against the model (fused parameters or separate modules)
}
DENSE_GROUPS = {"attention": rf".*\.{_DENSE4}", "mlp": rf".*\.mlp\.{_MLP}"}
VL_GROUPS = {
    "language": rf".*language_model\.layers\.\d+\.({_DENSE4}|mlp\.{_MLP})",
    # SigLIP (low-res) and SAM (high-res, hybrid) encoders
    "vision": r".*vision_model\.(encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))"
    r"|vision_encoder\.layers\.\d+\.(attn\.(qkv|proj)|mlp\.(lin1|lin2)))",
}
VL_TYPES = ("deepseek_vl", "deepseek_vl_hybrid")
DEFAULT_GROUPS = {
    "deepseek": ["attention", "dense-mlp", "shared-experts"],
    "dense": ["attention", "mlp"],
    "vl": ["language"],
}


def family(model_type: str) -> Optional[str]:
    if model_type in DEEPSEEK_MOE:
        return "deepseek"
    if model_type in VL_TYPES:
        return "vl"
    if model_type in ("llama", "qwen2", "qwen3", "mistral"):
        return "dense"
    return None


def group_names(model_type: str) -> list[str]:
    fam = family(model_type)
    if fam == "deepseek":
        dense = [] if model_type in NO_DENSE_MLP else ["dense-mlp"]
        return ["default", "attention", *dense, "shared-experts", "experts", "router", "all-linear"]
    if fam == "vl":
        return ["default", "language", "vision", "projector", "all-linear"]
    if fam == "dense":
        return ["default", "attention", "mlp", "all-linear"]
    return ["default", "all-linear"]


@dataclass
class TargetPlan:
    groups: list[str]
    target_modules: object = None  # regex string, list of names, "all-linear" or None
    target_parameters: list[str] = field(default_factory=list)
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)
    modules_to_save: list[str] = field(default_factory=list)
    # fused expert tensors whose LoRA rows of unchosen experts are held at zero: module name -> chosen expert ids
    expert_subset: dict[str, list[int]] = field(default_factory=dict)
    expert_r: Optional[int] = None
    notes: list[str] = field(default_factory=list)

    @property
    def uses_parameters(self) -> bool:
        return bool(self.target_parameters)


def requested_groups(targets, model_type: str) -> Optional[list[str]]:
    """The group names asked for, or None when `targets` is a regex / module-name list (used as given)."""
    names = group_names(model_type)
    if family(model_type) == "deepseek":
        absent = [t for t in ([targets] if isinstance(targets, str) else targets) if t == "dense-mlp" and t not in names]
        if absent:
            raise ConfigError(f"lora.targets: this {model_type} model has no dense MLP layers (every layer is MoE); "
                              f"its groups are {', '.join(names)}")
    if isinstance(targets, str):
        return [targets] if targets in names else None
    if targets and all(isinstance(t, str) and t in names for t in targets):
        return list(dict.fromkeys(targets))
    groupish = [t for t in targets if t in names]
    if groupish:
        raise ConfigError(
            f"lora.targets={targets!r} mixes group names ({', '.join(groupish)}) with module names; use group names "
            f"only ({', '.join(names)}) or module names / a regex only"
        )
    return None


def _experts_layout(model) -> tuple[str, dict[str, int]]:
    """('fused', {experts module name: n}) or ('linear', {experts ModuleList name: n}) or ('none', {})."""
    fused, linear = {}, {}
    for name, mod in model.named_modules():
        if not name.endswith("mlp.experts"):
            continue
        p = getattr(mod, "gate_up_proj", None)
        if isinstance(p, nn.Parameter) and p.dim() == 3:
            fused[name] = p.shape[0]
        elif isinstance(mod, nn.ModuleList):
            linear[name] = len(mod)
    if fused:
        return "fused", fused
    if linear:
        return "linear", linear
    return "none", {}


def _routers(model) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if n.endswith("mlp.gate") and hasattr(m, "weight")}


def plan_targets(model, spec, expert_choice: Optional[dict[str, list[int]]] = None) -> TargetPlan:
    """LoraSection + a model (real or on the meta device) -> TargetPlan.

    `expert_choice` (layer MoE module name -> expert ids) comes from a routing profile when
    `lora.experts: {top_k_used: N}`; an explicit list in `lora.experts` applies to every MoE layer.
    """
    model_type = model.config.model_type
    groups = requested_groups(spec.targets, model_type)
    if groups is None:
        return TargetPlan(groups=[], target_modules=spec.targets)
    fam = family(model_type)
    if "default" in groups:
        groups = [g for g in groups if g != "default"] + DEFAULT_GROUPS.get(fam, [])
        groups = [g for g in groups if g in group_names(model_type)]
        groups = list(dict.fromkeys(groups))
    if "all-linear" in groups:
        if len(groups) > 1:
            raise ConfigError("lora.targets: all-linear cannot be combined with other groups; list the groups instead")
        return _all_linear_plan(model)
    if fam is None:
        return TargetPlan(groups=groups, target_modules="all-linear")
    table = {"deepseek": DEEPSEEK_GROUPS, "dense": DENSE_GROUPS, "vl": VL_GROUPS}[fam]
    plan = TargetPlan(groups=groups)
    regexes = [table[g] for g in groups if g in table]
    if "projector" in groups:
        plan.modules_to_save.append("aligner")  # trained fully: small, and it has no LoRA-friendly structure
    if "experts" in groups:
        regexes += _plan_experts(model, spec, plan, expert_choice)
    elif spec.experts is not None:
        raise ConfigError("lora.experts chooses routed experts, but lora.targets has no `experts` group")
    if "router" in groups:
        routers = _routers(model)
        if not routers:
            raise ConfigError(f"lora.targets: this {model_type} model has no router (mlp.gate)")
        if all(isinstance(m, nn.Linear) for m in routers.values()):
            regexes.append(r".*\.mlp\.gate")
        else:
            # DeepSeek's top-k / hash routers are no nn.Linear: adapt their weight; bias / hash-table buffers stay as loaded.
            plan.target_parameters.append("mlp.gate.weight")
    plan.target_modules = "(" + "|".join(regexes) + ")" if regexes else None
    if plan.target_modules is None and not plan.target_parameters and not plan.modules_to_save:
        raise ConfigError(f"lora.targets={spec.targets!r} names nothing to train")
    return plan


def _all_linear_plan(model) -> TargetPlan:
    """PEFT's `all-linear`, minus a model's own nn.Linear subclasses with their own forward (DeepSeek-V4's grouped
    o_a_proj): LoRA adds x @ A.T @ B.T, wrong -- and shape-breaking -- for a layer that is not x @ W.T. Quantized
    Linear classes (bitsandbytes, ...) are not transformers' modeling code and stay in: PEFT wraps them properly."""
    odd = {n: type(m).__name__ for n, m in model.named_modules() if isinstance(m, nn.Linear)
           and type(m).forward is not nn.Linear.forward and type(m).__module__.startswith("transformers.models.")}
    if not odd:
        return TargetPlan(groups=["all-linear"], target_modules="all-linear")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    keep = {re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", re.escape(n)) for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and m is not head and n not in odd}
    kinds = sorted(set(odd.values()))
    plan = TargetPlan(groups=["all-linear"], target_modules="(" + "|".join(sorted(keep)) + ")")
    plan.notes.append(f"all-linear leaves out {len(odd)} {'/'.join(kinds)} layers (not a plain x @ W.T; LoRA cannot wrap them)")
    return plan


def _plan_experts(model, spec, plan: TargetPlan, expert_choice) -> list[str]:
    layout, experts = _experts_layout(model)
    if layout == "none":
        raise ConfigError(f"lora.targets: this {model.config.model_type} model has no routed experts")
    n = next(iter(experts.values()))
    chosen = _chosen_experts(spec, experts, expert_choice)
    n_trained = len(next(iter(chosen.values()))) if chosen else n
    r_e = spec.expert_r or max(1, spec.r // n_trained)
    plan.expert_r = r_e
    # Same scaling (alpha / r) as the other targets, whatever the per-expert rank.
    alpha_e = spec.alpha * r_e / spec.r
    if layout == "fused":
        plan.target_parameters += ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
        key = r"mlp\.experts\.(gate_up_proj|down_proj)"
        plan.rank_pattern[key] = r_e
        plan.alpha_pattern[key] = alpha_e
        if chosen:
            plan.expert_subset = chosen
        return []
    regexes = []
    for layer, ids in (chosen or {k: list(range(v)) for k, v in experts.items()}).items():
        regexes.append(rf"{re.escape(layer)}\.({'|'.join(map(str, ids))})\.{_MLP}")
    key = rf"mlp\.experts\.\d+\.{_MLP}"
    plan.rank_pattern[key] = r_e
    plan.alpha_pattern[key] = alpha_e
    return regexes


def _chosen_experts(spec, experts: dict[str, int], expert_choice) -> dict[str, list[int]]:
    """MoE experts module name -> sorted expert ids to train; {} means all of them."""
    sel = spec.experts
    if sel is None:
        return {}
    n = next(iter(experts.values()))
    if isinstance(sel, list):
        bad = [i for i in sel if not 0 <= i < n]
        if bad:
            raise ConfigError(f"lora.experts: {bad} out of range; this model has experts 0..{n - 1}")
        return {name: sorted(set(sel)) for name in experts}
    if expert_choice is None:
        raise ConfigError(
            "lora.experts: {top_k_used: N} needs a routing profile of the training data; it is measured by "
            "`seektune train` before training (seektune.models.routing.routing_profile)"
        )
    out = {}
    for name in experts:
        moe = name.rsplit(".", 1)[0]
        if moe not in expert_choice:
            raise ConfigError(f"the routing profile has no entry for {moe}")
        out[name] = sorted(expert_choice[moe])
    return out


# ---- after attaching: which group each adapted module/parameter belongs to ----------------------
def classify(name: str, model_type: str) -> str:
    """Group of a module or parameter name (PEFT prefixes and lora_A/B suffixes allowed)."""
    fam = family(model_type)
    n = re.sub(r"\.(base_layer|lora_[AB]|default|weight|modules_to_save|original_module)(?=\.|$)", "", name)
    if fam == "vl":
        if "aligner" in n:
            return "projector"
        if "vision" in n:
            return "vision"
        return "language"
    if fam == "deepseek":
        if ".mlp.experts" in n:
            return "experts"
        if n.endswith("mlp.gate") or ".mlp.gate." in n:
            return "router"
        if "shared_experts" in n:
            return "shared-experts"
        if ".mlp." in n:
            return "dense-mlp"
        if "self_attn" in n:
            return "attention"
        return "other"
    if "self_attn" in n:
        return "attention"
    if ".mlp." in n:
        return "mlp"
    return "other"


def adapted_names(peft_model) -> list[str]:
    """Module names carrying LoRA (a fused parameter as `module:parameter`), without PEFT prefixes."""
    out = []
    for name, mod in peft_model.named_modules():
        if not hasattr(mod, "lora_A") or not len(getattr(mod, "lora_A", {})):
            continue
        clean = re.sub(r"^base_model\.model\.", "", name).replace(".base_layer", "")
        pname = getattr(mod, "parameter_name", None)
        out.append(f"{clean}:{pname}" if pname else clean)
    return sorted(out)


def all_linear_warning(peft_model, model_type: str) -> Optional[str]:
    """What `all-linear` trains on this model and what it leaves out, in words."""
    got = sorted({classify(n, model_type) for n in adapted_names(peft_model)})
    fam = family(model_type)
    missing = [g for g in ("experts", "router") if g not in got] if fam == "deepseek" else []
    if fam == "vl" and "vision" in got:
        pass
    msg = f"lora.targets=all-linear adapts every nn.Linear except lm_head: {', '.join(got)}"
    if missing:
        msg += (f"; it leaves out {' and '.join(missing)} (fused expert tensors and the top-k router are not nn.Linear). "
                "Name groups instead, e.g. targets: [attention, shared-experts, experts]")
    if any(".indexer." in n for n in adapted_names(peft_model)):
        msg += "; the sparse-attention indexer's LoRA gets no gradient (its top-k choice is not differentiable)"
    return msg


def quiet_peft_pattern_warning():
    """PEFT warns that rank_pattern keys for target_parameters 'did not match' although they are applied."""
    warnings.filterwarnings("ignore", message="The following (rank|alpha)_pattern keys did not match", category=RuntimeWarning)


def group_members(model, spec=None) -> dict[str, list[str]]:
    """Per target group of this model: the module names (and `module.parameter` for fused tensors) it would adapt.
    Read from the same plan that attach_lora uses, so `seektune inspect` shows what training will touch."""
    from seektune.config import LoraSection

    base = spec or LoraSection()
    out: dict[str, list[str]] = {}
    modules = list(model.named_modules())
    for g in group_names(model.config.model_type):
        if g in ("default", "all-linear"):
            continue
        s = base.model_copy(update={"targets": [g], "experts": base.experts if g == "experts" else None})
        try:
            plan = plan_targets(model, s)
        except ConfigError:
            continue
        names = []
        for n, m in modules:
            if isinstance(m, nn.Linear) and isinstance(plan.target_modules, str) and re.fullmatch(plan.target_modules, n):
                names.append(n)
            for pn, p in m.named_parameters(recurse=False):
                if any(f"{n}.{pn}".endswith("." + t) for t in plan.target_parameters):
                    names.append(f"{n}:{pn}")
            if n.split(".")[-1] in plan.modules_to_save:
                names.append(n + " (fully trained)")
        if names:
            out[g] = names
    return out


def condense(names: list[str]) -> list[tuple[str, int]]:
    """Layer indices folded: [('model.layers.*.self_attn.o_proj', 3), ...] in first-seen order."""
    counts: dict[str, int] = {}
    for n in names:
        k = re.sub(r"\.\d+(?=\.|:|$)", ".*", n)
        counts[k] = counts.get(k, 0) + 1
    return list(counts.items())
