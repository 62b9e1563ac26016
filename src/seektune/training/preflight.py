"""Checks before any GPU time is spent: config, template, every data record, mask coverage, LoRA targets
and an estimate of the memory the run needs. All problems are collected and reported together.

`seektune train --dry-run` runs these and stops; every real run runs them first too (their data is the
data that is trained on, so nothing is read twice). No weights are loaded: targets are resolved on a
model built on the meta device.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch

from seektune.config import RunConfig
from seektune.data.dataset import EXPECTED, SKIP_HINT, PreparedData, prepare_data
from seektune.data.reasoning import ReasoningOptions
from seektune.data.render import ChatRenderer, resolve_template
from seektune.models.vl import renderer_vision
from seektune.errors import DataError, SeektuneError
from seektune.training.paths import check_output_path
from seektune.training.speed import FastPath, decide

LISTED = 20  # bad records named one by one; the rest are counted


class PreflightError(SeektuneError):
    """Every problem found before training, one per line."""

    def __init__(self, problems: list):
        self.problems = [str(p) for p in problems]
        body = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(problems)} problem(s) found before training; nothing was trained:\n{body}")


@dataclass
class MemoryEstimate:
    weights: int
    trainable_state: int  # LoRA weights + gradients + AdamW moments (fp32)
    activations: int
    logits: int
    available: Optional[int]
    where: str
    host: int = 0  # pinned CPU memory for offloaded checkpoints (train.offload_checkpoints)
    ram: Optional[int] = None

    @property
    def total(self) -> int:
        return self.weights + self.trainable_state + self.activations + self.logits

    def line(self) -> str:
        avail = f" of {_gib(self.available)} {self.where}" if self.available else ""
        host = f"; plus {_gib(self.host)} of pinned CPU memory for the checkpointed layer inputs" if self.host else ""
        return (
            f"estimated memory: {_gib(self.total)}{avail} (weights {_gib(self.weights)}, LoRA + optimizer "
            f"{_gib(self.trainable_state)}, activations {_gib(self.activations)}, logits {_gib(self.logits)}){host}"
        )


@dataclass
class Preflight:
    problems: list = field(default_factory=list)  # sentences, or the SeektuneError that says it
    summary: list[str] = field(default_factory=list)
    renderer: Optional[ChatRenderer] = None
    template: Optional[str] = None
    template_note: str = ""
    data: Optional[PreparedData] = None
    memory: Optional[MemoryEstimate] = None
    trainable: Optional[int] = None
    total_params: Optional[int] = None
    remote_code_note: Optional[str] = None  # remote code replaced by transformers' native class
    fast_path: Optional[FastPath] = None  # the speed switches training applies

    def raise_if_problems(self) -> None:
        if len(self.problems) == 1 and isinstance(self.problems[0], SeektuneError):
            raise self.problems[0]  # one problem: its own error type (DataError, TemplateError, ...)
        if self.problems:
            raise PreflightError(self.problems)


def preflight(cfg: RunConfig, source, tokenizer, output=None) -> Preflight:
    from seektune.models.load import _check_remote_code

    pf = Preflight()
    pf.remote_code_note = _check_remote_code(source, cfg.model.trust_remote_code)  # before anything reads its code
    _check_config(cfg, output, pf)
    _check_template_and_data(cfg, source, tokenizer, pf)
    model_config = _check_targets(cfg, source, pf)
    if model_config is not None:
        _check_speed_switches(cfg, model_config, pf)
        pf.memory = estimate_memory(cfg, model_config, pf.total_params or 0, pf.trainable or 0, _longest(pf.data, cfg),
                                    pf.fast_path)
        pf.summary.append(pf.memory.line())
        if pf.memory.available and pf.memory.total > pf.memory.available:
            pf.problems.append(f"{pf.memory.line()}: more than there is. "
                               f"{oom_advice(cfg, checkpointing_of(cfg, pf.fast_path))}")
        if pf.memory.host and pf.memory.ram and pf.memory.host > pf.memory.ram:
            pf.problems.append(f"{pf.memory.line()}: the offloaded layer inputs need more than the "
                               f"{_gib(pf.memory.ram)} of RAM; set train.offload_checkpoints=false, or lower "
                               f"train.per_device_batch_size or data.max_length")
    return pf


# ---- config -----------------------------------------------------------------------------------


def _check_config(cfg: RunConfig, output, pf: Preflight) -> None:
    from seektune.models.load import pick_precision

    precision = pick_precision(cfg.train.precision)
    if precision == "fp16" and not torch.cuda.is_available():
        pf.problems.append("train.precision=fp16 needs a CUDA GPU and none is visible; use fp32 or bf16")
    if cfg.model.load_in and not torch.cuda.is_available():
        pf.problems.append(
            f"model.load_in={cfg.model.load_in} (QLoRA) needs a CUDA GPU (bitsandbytes' quantized kernels) and none "
            "is visible; remove model.load_in to train the full-precision base here"
        )
    if output is not None:
        try:
            check_output_path(output)
        except SeektuneError as e:
            pf.problems.append(e)


def _check_speed_switches(cfg: RunConfig, model_config, pf: Preflight) -> None:
    """Decide the train.* speed switches (packing, attention, compile, checkpointing, ...) for this model on this
    device from its config, so that a setting it cannot run stops the run before any weights are loaded."""
    try:
        pf.fast_path = decide(cfg.train, model_config, "cuda" if torch.cuda.is_available() else "cpu",
                              lora_dropout=cfg.lora.dropout)
    except ValueError as e:
        pf.problems.append(str(e))


# ---- template, records, masks -------------------------------------------------------------------


def _check_template_and_data(cfg: RunConfig, source, tokenizer, pf: Preflight) -> None:
    try:
        pf.template, pf.template_note = resolve_template(cfg.model.chat_template, tokenizer)
        pf.renderer = ChatRenderer(
            tokenizer, pf.template, cfg.data.loss_on, cfg.data.max_length, ReasoningOptions.from_data(cfg.data)
        )
        # DeepSeek-VL: image placeholders become the model's image tokens (read from its config alone).
        pf.renderer.vision = renderer_vision(source.location, tokenizer, cfg.model.trust_remote_code)
    except SeektuneError as e:
        pf.problems.append(e)
        return
    pf.summary.append(f"template: {pf.template_note}; end of turn: {pf.renderer.end_of_turn!r}")
    file_errors: list = []
    # Every record is read and rendered; bad ones are collected (not raised) so all are reported at once.
    collect = cfg.data.model_copy(update={"skip_bad_records": True})
    try:
        pf.data = prepare_data(collect, pf.renderer, file_errors)
    except SeektuneError as e:
        pf.problems.append(e)
        return
    pf.problems += file_errors
    listed = 0
    for rep in pf.data.reports:
        if not cfg.data.skip_bad_records and len(rep.skipped) == 1:
            s = rep.skipped[0]
            expected = f". The {rep.format} format expects {EXPECTED[rep.format]}" if s["field"] and rep.format in EXPECTED else ""
            pf.problems.append(DataError(rep.file, s["index"], s["field"], s["reason"] + expected + SKIP_HINT,
                                         line=s["line"], column=s.get("column")))
        elif not cfg.data.skip_bad_records and rep.skipped:
            for s in rep.skipped[: max(LISTED - listed, 0)]:
                where = rep.file + (f":{s['line']}" if s.get("line") else "")
                if s.get("column"):
                    where += f":{s['column']}"
                fld = f" field `{s['field']}`" if s.get("field") else ""
                pf.problems.append(f"{where}: record {s['index']}{fld}: {s['reason']}")
            listed += len(rep.skipped)
            pf.problems.append(
                f"{rep.file}: {len(rep.skipped)} bad record(s) of {rep.records_read}. Fix them, or pass "
                "--skip-bad-records to skip them (each is then listed with its reason in data_report.json)"
            )
        if rep.records_read and rep.records_read > len(rep.skipped) and rep.supervised_tokens == 0:
            pf.problems.append(
                f"{rep.file}: no token carries a loss (supervised fraction 0): the chat template's assistant "
                "turns were not found or were truncated away; check model.chat_template and data.max_length"
            )
    listed_bad = not cfg.data.skip_bad_records and any(r.skipped for r in pf.data.reports)
    if not file_errors and not pf.data.train and not listed_bad:
        pf.problems.append("no training samples: every record was skipped, held out or truncated away")


# ---- LoRA targets on the meta device ------------------------------------------------------------


def _check_targets(cfg: RunConfig, source, pf: Preflight):
    from seektune.adapters.lora import attach_lora, trainable_summary
    from seektune.models.inspect import meta_model

    try:
        model = meta_model(source.location, cfg.model.trust_remote_code)
    except Exception as e:  # a missing/odd config.json raises several types; the run could not start either
        pf.problems.append(f"cannot build {source.display_name} from its config: {e}")
        return None
    total = sum(p.numel() for p in model.parameters())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # PEFT asks a deprecated transformers property
            peft_model = attach_lora(model, cfg.lora, _placeholder_expert_choice(model, cfg.lora))
    except SeektuneError as e:
        pf.problems.append(e)
        return model.config
    pf.trainable, pf.total_params = trainable_summary(peft_model)[0], total
    pf.summary.append(
        f"LoRA r={cfg.lora.r} on {cfg.lora.targets!r}: {pf.trainable:,} trainable of {total:,} parameters "
        f"({pf.trainable / total:.3%})"
    )
    return model.config


# ---- memory -------------------------------------------------------------------------------------

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def _longest(data: Optional[PreparedData], cfg: RunConfig) -> int:
    if data and data.train:
        return max(len(e.input_ids) for e in data.train)
    return cfg.data.max_length


def estimate_memory(cfg: RunConfig, model_config, total_params: int, trainable: int, seq: int,
                    fast: Optional[FastPath] = None) -> MemoryEstimate:
    """A rough upper estimate: enough to say "this cannot fit" before loading anything. `fast`: the speed switches
    preflight decided (the fused loss and offloaded checkpoints change where memory goes)."""
    from seektune.models.load import pick_precision

    b = BYTES[pick_precision(cfg.train.precision)]
    text_cfg = getattr(model_config, "text_config", None) or model_config
    hidden = getattr(text_cfg, "hidden_size", 0) or 0
    layers = getattr(text_cfg, "num_hidden_layers", 0) or 0
    vocab = getattr(text_cfg, "vocab_size", 0) or 0
    tokens = cfg.train.per_device_batch_size * seq
    # Per token and layer, a transformer block keeps ~34 * hidden bytes of activations at 16 bits
    # (Korthikanti et al. 2022, without attention recomputation); checkpointing keeps only the layer input.
    checkpointing = checkpointing_of(cfg, fast)
    per_layer = (34 * hidden * b // 2) if not checkpointing else (hidden * b + 34 * hidden * b // 2 // max(layers, 1))
    activations = tokens * layers * per_layer
    host = 0
    if fast is not None and fast.offload_checkpoints:
        # The layer inputs wait in pinned CPU memory; two are on the GPU (the one in use, the one prefetched).
        host = tokens * layers * hidden * b
        activations -= tokens * max(layers - 2, 0) * hidden * b
    logits = tokens * vocab * 4 * 3  # fp32 logits, their softmax and their gradient
    if fast is not None and (fast.fused_loss or fast.liger):
        # Liger's fused loss works in chunks of ~tokens*hidden/vocab rows: fp32 chunk logits and their gradient,
        # plus the input gradient it keeps.
        logits = tokens * hidden * (8 + b)
    # bitsandbytes: NF4 with double quantization is ~0.53 bytes per weight, int8 ~1 (embeddings stay at b).
    weights = int(total_params * {None: b, "4bit": 0.6, "8bit": 1.1}[cfg.model.load_in])
    trainable_state = trainable * 16  # fp32 weight + gradient + two AdamW moments
    if torch.cuda.is_available():
        available, where = torch.cuda.get_device_properties(0).total_memory, f"on {torch.cuda.get_device_name(0)}"
    else:
        available, where = _ram(), "of RAM"
    return MemoryEstimate(weights, trainable_state, activations, logits, available, where, host, _ram())


def _ram() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: Optional[int]) -> str:
    if n is None:
        return "?"
    return f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


def checkpointing_of(cfg: RunConfig, fast: Optional[FastPath]) -> bool:
    """train.gradient_checkpointing as the fast path resolved it; without a fast path "auto" counts as off."""
    return fast.gradient_checkpointing if fast is not None else cfg.train.gradient_checkpointing is True


def oom_advice(cfg: RunConfig, checkpointing: Optional[bool] = None) -> str:
    """`checkpointing`: train.gradient_checkpointing as the fast path resolved it (checkpointing_of)."""
    t = cfg.train
    if checkpointing is None:
        checkpointing = checkpointing_of(cfg, None)
    tips = [
        f"lower train.per_device_batch_size (now {t.per_device_batch_size}) and raise train.gradient_accumulation "
        f"(now {t.gradient_accumulation}) to keep the effective batch",
    ]
    if not checkpointing:
        tips.append("set train.gradient_checkpointing=true")
    tips.append(f"lower data.max_length (now {cfg.data.max_length})")
    if cfg.model.load_in != "4bit":
        tips.append("load the base model in 4-bit: model.load_in=4bit (QLoRA, needs a CUDA GPU and bitsandbytes)")
    if t.precision in ("auto", "fp32"):
        tips.append("use train.precision=bf16 on a GPU that supports it")
    return "To need less memory: " + "; ".join(tips)


def dry_run(cfg: RunConfig, out, console) -> Preflight:
    """`seektune train --dry-run`: every check, nothing loaded but configs and tokenizer, nothing written."""
    from seektune.data.dataset import fmt_report_lines
    from seektune.models.load import _check_remote_code, load_tokenizer
    from seektune.models.source import resolve_source

    source = resolve_source(
        cfg.model.source, revision=cfg.model.revision, allow_pickle=cfg.model.allow_pickle,
        progress=lambda m: console.print(f"[dim]{m}[/dim]"),
    )
    console.print(f"model: [bold]{source.display_name}[/bold] (dry run: no weights are loaded)")
    _check_remote_code(source, cfg.model.trust_remote_code)
    pf = preflight(cfg, source, load_tokenizer(source, cfg.model.trust_remote_code), out)
    for line in pf.summary:
        console.print(line)
    if pf.data is not None:
        for line in fmt_report_lines(pf.data.reports):
            console.print(line, markup=False, highlight=False)  # "[alpaca]" is text, not a style
    pf.raise_if_problems()
    t = cfg.train
    steps = t.max_steps if t.max_steps > 0 else -(-len(pf.data.train) // (t.per_device_batch_size * t.gradient_accumulation)) * t.epochs
    console.print(
        f"[green]dry run: all checks passed[/green] -- {len(pf.data.train)} training samples, about {steps:g} "
        f"steps, output {out}"
    )
    return pf


def _placeholder_expert_choice(model, lora) -> Optional[dict]:
    """`experts: {top_k_used: N}` is decided by a routing profile of the real weights, which a dry run has not
    loaded; any N experts per layer give the same targets and parameter count to check."""
    if not isinstance(lora.experts, dict):
        return None
    from seektune.models.routing import routers

    n = lora.experts["top_k_used"]
    return {name: list(range(n)) for name in routers(model)}
