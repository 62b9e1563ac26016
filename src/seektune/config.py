"""RunConfig: every setting of a run, from YAML and/or dotted overrides, validated up front.

The resolved config is written to the run folder as `config.yaml` and replays the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from seektune.errors import ConfigError


class _Section(BaseModel):
    # Unknown keys are almost always typos; refuse them instead of ignoring them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    source: Optional[str] = Field(
        None, description="hub id, local folder, .gguf file, or None for the embedded SmolLM2-135M-Instruct"
    )
    revision: Optional[str] = None
    meant_for: Optional[str] = Field(
        None, description="the model this config was written for (shown when running on another, e.g. the embedded one)"
    )
    trust_remote_code: bool = False
    allow_pickle: bool = Field(False, description="allow loading .bin/.pt pickle weights (they can run code)")
    chat_template: Optional[str] = Field(
        None, description="a built-in template name or a .jinja file; default: the tokenizer's own template"
    )
    experts_implementation: Optional[Literal["grouped_mm", "batched_mm", "eager"]] = Field(
        None, description="MoE expert kernel (transformers); default grouped_mm: all experts in one grouped matmul, "
        "not a Python loop over experts (eager)"
    )
    load_in: Optional[Literal["4bit", "8bit"]] = Field(
        None, description="train on a bitsandbytes-quantized base (4bit = QLoRA, NF4 with double quantization); "
        "CUDA GPU only; the adapter is trained in the compute precision"
    )


class DatasetSpec(_Section):
    path: str
    format: Literal["auto", "alpaca", "pair", "conversation", "messages", "sharegpt", "reasoning"] = "auto"
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="map our field names to the file's, e.g. {prompt: content, response: summary}; a value with "
        "{braces} builds the field from several, e.g. {prompt: '{Question}\\nA. {A}'}",
    )
    system: Optional[str] = Field(None, description="system prompt added to records that have none")
    max_records: Optional[int] = Field(None, gt=0)


class DataSection(_Section):
    datasets: list[DatasetSpec] = Field(default_factory=list)
    max_length: int = Field(1024, gt=8)
    loss_on: Literal["all_assistant", "last_assistant", "all"] = "all_assistant"
    eval_split: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of records held out for eval loss")
    holdout_prompts: int = Field(3, ge=0, description="records kept out of training for the before/after table")
    skip_bad_records: bool = False
    seed: int = 42
    history_reasoning: Literal["drop", "keep"] = Field(
        "drop", description="reasoning of earlier assistant turns: dropped from the history (as R1 templates and "
        "chat clients do) or kept (only with templates that render it)"
    )
    empty_think: Literal["supervise", "ignore"] = Field(
        "supervise", description="an answer with an empty <think></think> block: learn the block too, or only the answer"
    )
    think_prefill: Literal["prompt", "response"] = Field(
        "prompt", description="a template's generation-prompt pre-fill (R1's '<think>\\n'): part of the prompt (not "
        "learned, as the template gives it at inference) or part of the response (learned; inference prompts omit it)"
    )
    split_turns: bool = Field(
        False, description="one sample per assistant turn (history as the template renders it); needed for multi-turn "
        "data with templates that rewrite history, such as R1's, which strips reasoning from earlier turns"
    )


LoraTargets = Union[str, list[str]]


class LoraSection(_Section):
    r: int = Field(16, gt=0)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="dropout on the adapter's input; 0 (PEFT's, LLaMA-Factory's and Unsloth's default) lets the GPU "
        "fast path run each LoRA linear as one node and MoE layers as CUDA graphs, which dropout rules out",
    )
    bias: Literal["none", "all", "lora_only"] = "none"
    targets: LoraTargets = Field(
        "default",
        description="'default' (architecture preset), 'all-linear', a regex, or a list of module names",
    )
    modules_to_save: list[str] = Field(default_factory=list)
    use_rslora: bool = False
    use_dora: bool = False
    experts: Optional[Union[list[int], dict[Literal["top_k_used"], int]]] = Field(
        None, description="routed experts to adapt with the `experts` target group: a list of ids, or "
        "{top_k_used: N}, the N experts per layer the router picks most on a sample of the training data"
    )
    expert_r: Optional[int] = Field(None, gt=0, description="rank per routed expert; default r // experts trained")
    routing_profile_records: int = Field(64, gt=0, description="training samples the routing profile runs over")

    @field_validator("experts")
    @classmethod
    def _experts_valid(cls, v):
        if isinstance(v, dict) and (set(v) != {"top_k_used"} or v["top_k_used"] <= 0):
            raise ValueError("expected a list of expert ids or {top_k_used: N} with N > 0")
        if isinstance(v, list) and not v:
            raise ValueError("an empty list chooses no expert; leave lora.experts out to train all of them")
        return v


class TrainSection(_Section):
    epochs: float = Field(3.0, gt=0)
    max_steps: int = Field(-1, description="overrides epochs when > 0")
    learning_rate: float = Field(2e-4, gt=0, lt=1)
    lr_scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
    ] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    per_device_batch_size: int = Field(4, gt=0)
    gradient_accumulation: int = Field(1, gt=0)
    max_grad_norm: float = Field(1.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    gradient_checkpointing: Union[bool, Literal["auto"]] = Field(
        "auto", description="recompute each decoder layer in the backward pass instead of keeping its activations; "
        "auto = on for MoE models on a GPU, whose checkpointed layers then run as CUDA graphs (V2-Lite shape: 1.42x "
        "the speed of no checkpointing, in 5 GiB less), else off")
    group_by_length: bool = Field(True, description="batch samples of similar length together: less padding")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    seed: int = 42
    logging_steps: int = Field(1, gt=0)
    save_steps: int = Field(50, gt=0)
    save_total_limit: Optional[int] = Field(2, gt=0)
    eval_steps: Optional[int] = Field(None, gt=0)
    report_to: list[Literal["tensorboard", "swanlab", "wandb", "mlflow"]] = Field(
        default_factory=list,
        description="trackers (metrics.jsonl is always written); logs go inside the run folder, offline by default",
    )
    sample_max_new_tokens: int = Field(96, gt=0, description="length of the before/after answers")
    max_bad_steps: int = Field(
        5, gt=0, description="stop after this many steps in a row with a NaN/Inf loss or gradient (each is skipped)"
    )
    # The fast path (training/speed.py); "auto" = on where it is correct and pays (a CUDA GPU).
    packing: Union[bool, Literal["auto"]] = Field(
        "auto", description="padding-free packing: a batch becomes one row, position ids restart per sample"
    )
    attention: Literal["auto", "sdpa", "eager", "seektune_varlen", "seektune_cudnn", "flex_attention"] = Field(
        "auto", description="attention kernel; auto = FlashAttention varlen on packed rows on a GPU, else sdpa; "
        "seektune_cudnn = cuDNN's fused attention on packed rows (pip install nvidia-cudnn-frontend; not measured "
        "in training yet)"
    )
    liger: Union[bool, Literal["auto"]] = Field(
        "auto",
        description="Liger fused kernels (RMSNorm, SwiGLU, RoPE, linear+cross-entropy): less memory, but slower in "
        "bench/RESULTS.md, so auto = off; true to save memory (GPU only)",
    )
    compile: Union[bool, Literal["auto"]] = Field(
        "auto", description="torch.compile each decoder layer (dynamic shapes); auto = on a GPU; ~1 min start-up"
    )
    offload_checkpoints: Union[bool, Literal["auto"]] = Field(
        "auto", description="with gradient_checkpointing: keep each layer's checkpointed input in pinned CPU memory "
        "instead of GPU memory, copied on a side stream while the GPU computes (longer sequences fit; measured at "
        "no cost in speed on dense models, 15% slower on MoE); auto = on a GPU, except for MoE models"
    )
    lean_recompute: bool = Field(
        False, description="with offload_checkpoints and fused_lora: a checkpointed layer's recomputation leaves out "
        "the MLP's down projection, whose output it never reads (same gradients): 1.06x the step speed on the 7B "
        "shape, but on an H100 the first step compiled 30-90 s longer, so it pays off over a few thousand steps; off "
        "until that is understood"
    )
    cuda_graphs: Union[bool, Literal["auto"]] = Field(
        "auto", description="with gradient_checkpointing: run each checkpointed decoder layer as two CUDA graphs "
        "(forward; recompute + backward), packed rows padded to one of 8 lengths per power of two; the host stops "
        "launching each small kernel itself, which is what bounds MoE steps; needs packing and lora.dropout=0; "
        "auto = on a GPU for MoE models"
    )
    fused_lora: Union[bool, Literal["auto"]] = Field(
        "auto", description="compute each LoRA linear as one autograd node: the adapter's update is added by the "
        "matmul itself, in the activations' dtype, instead of separate fp32 passes; a SwiGLU MLP with LoRA on gate, "
        "up and down becomes one node that recomputes silu(gate)*up instead of keeping it; auto = on a GPU"
    )
    fused_loss: Union[bool, Literal["auto"]] = Field(
        "auto", description="Liger's fused linear+cross-entropy alone (the vocabulary-wide logits are never "
        "materialised: less memory); auto = on a GPU when liger-kernel is installed and supports the model"
    )


class RunConfig(_Section):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    train: TrainSection = Field(default_factory=TrainSection)
    output: Optional[str] = Field(None, description="run folder; default runs/<model>-<time>")

    @field_validator("output")
    @classmethod
    def _output_not_empty(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not v.strip():
            raise ValueError("must be a folder path, not an empty string")
        return v

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        bad = e.get("input")
        shown = repr(bad) if not isinstance(bad, dict) else "{...}"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown field (value {shown}); check the spelling against `seektune train --help`")
        else:
            lines.append(f"  {field}: got {shown}; {e['msg']}")
    return "\n".join(lines)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: `{k}` is a value, not a section")
        node = nxt
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'train.learning_rate=2e-4' -> ('train.learning_rate', 0.0002); values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set lora.r=32")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: the key before '=' is empty")
    value = yaml.safe_load(raw) if raw.strip() else ""
    # YAML 1.1 reads 2e-4 as a string; users mean a number.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else value
        except ValueError:
            pass
    return key, value


def load_config(
    path: Optional[Union[str, Path]] = None,
    overrides: Optional[dict[str, Any]] = None,
    sets: Optional[list[str]] = None,
) -> RunConfig:
    """Build a RunConfig from an optional YAML file, then dotted overrides (later ones win)."""
    tree: dict = {}
    origin = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections (model, data, lora, train)")
        tree = loaded or {}
        origin = str(path)
        _resolve_relative_paths(tree, path.parent)
    for s in sets or []:
        k, v = parse_override(s)
        _set_dotted(tree, k, v)
    for k, v in (overrides or {}).items():
        if v is not None:
            _set_dotted(tree, k, v)
    if sets or any(v is not None for v in (overrides or {}).values()):
        origin += " with command-line settings"
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, origin)) from None


def _resolve_relative_paths(tree: dict, base: Path) -> None:
    """Data paths in a YAML file are relative to that file, so examples run from any folder."""
    data = tree.get("data")
    if not isinstance(data, dict):
        return
    for ds in data.get("datasets") or []:
        if isinstance(ds, dict) and isinstance(ds.get("path"), str):
            p = Path(ds["path"]).expanduser()
            if not p.is_absolute() and (base / p).exists():
                ds["path"] = str((base / p).resolve())
