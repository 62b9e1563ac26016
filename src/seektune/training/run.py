"""The training recipe, top to bottom: source -> tokenizer/template -> data -> model + LoRA -> Trainer -> run folder."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Optional, Union

import torch
from rich.console import Console

from seektune.adapters.lora import attach_lora, check_adapter_weights, trainable_summary
from seektune.config import RunConfig, load_config
from seektune.data.dataset import PreparedData, conversation_prompt, fmt_report_lines
from seektune.data.render import ChatRenderer
from seektune.errors import SeektuneError
from seektune.infer.generate import generate_answers
from seektune.models.load import load_model, load_tokenizer, pick_precision
from seektune.models.source import resolve_source
from seektune.run_folder import Run, default_output, last_checkpoint, work_dir
from seektune.training.callbacks import ConsoleProgress, MetricsLogger, StopOnSignal
from seektune.models.vl import make_collator
from seektune.training.collate import SampleDataset
from seektune.training.guards import out_of_memory_error
from seektune.training.layer_graphs import graph_layers, graph_stats
from seektune.training.lora_fused import fuse_lora_linears, fuse_lora_mlps
from seektune.training.offload import offload_layer_inputs
from seektune.training.paths import check_output_path
from seektune.training.preflight import preflight
from seektune.training.speed import (
    FastPath, compile_layers, packed_collator, prepare_model_for_fast_path,
)
from seektune.training.tracking import after_training, configure_trackers, run_display_name
from seektune.training.tracking import add_run_details, close_after_failure
from seektune.training.trainer import NonFiniteTrainingError, SeektuneTrainer, discard_partial_checkpoints


def train(
    config: Union[RunConfig, dict, str, Path, None] = None,
    *,
    resume: bool = False,
    console: Optional[Console] = None,
    dry_run: bool = False,
    callbacks: Optional[list] = None,
):
    """Fine-tune with LoRA and return the run folder. `config` may be a RunConfig, a dict, or a YAML path.

    `dry_run=True` only runs the checks every run starts with (no weights loaded, nothing written) and
    returns their Preflight; `callbacks` are extra transformers TrainerCallbacks."""
    console = console or Console()
    cfg = _as_config(config)
    out = check_output_path(cfg.output) if cfg.output else default_output(cfg)
    if dry_run:
        from seektune.training.preflight import dry_run as _dry_run

        return _dry_run(cfg, out, console)
    work = work_dir(out)
    checkpoint = _prepare_folders(out, work, resume)
    if checkpoint is not None:
        for name in discard_partial_checkpoints(work):
            console.print(f"[yellow]removed the incomplete checkpoint {name} (a save that never finished)[/yellow]")
    try:
        return _train_in(cfg, out, work, checkpoint, console, callbacks or [])
    except BaseException:
        close_after_failure()  # tracker runs left open would take the next run's metrics in this process
        # A fresh run that failed before its first checkpoint leaves nothing worth resuming.
        if checkpoint is None and last_checkpoint(work) is None:
            shutil.rmtree(work, ignore_errors=True)
        raise


def _train_in(cfg: RunConfig, out: Path, work: Path, checkpoint: Optional[Path], console: Console, callbacks) -> Run:
    if checkpoint is not None:
        saved = load_config(work / "config.yaml")
        if saved.model_dump(exclude={"train"}) != cfg.model_dump(exclude={"train"}):
            raise SeektuneError(
                f"--resume: the model/data/lora settings differ from the interrupted run's {work / 'config.yaml'}; "
                "resume with the same config (only train.* settings may change)"
            )
    cfg = cfg.model_copy(update={"output": str(out)})
    (work / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    started = time.time()

    # 1. Where the weights come from, and the chat template that both training and inference use.
    source = resolve_source(
        cfg.model.source, revision=cfg.model.revision, allow_pickle=cfg.model.allow_pickle,
        progress=lambda m: console.print(f"[dim]{m}[/dim]"),
    )
    console.print(f"model: [bold]{source.display_name}[/bold]")
    if cfg.model.meant_for and cfg.model.meant_for != cfg.model.source:
        console.print(f"[dim]this config is meant for {cfg.model.meant_for}; pass --model {cfg.model.meant_for} to use it[/dim]")
    tokenizer = load_tokenizer(source, cfg.model.trust_remote_code)

    # 2. Checks before any weights are loaded (the same as --dry-run): config, template, every record,
    #    mask coverage, LoRA targets, memory. Data: every record counted; held-out prompts never reach training.
    check = preflight(cfg, source, tokenizer, out)
    check.raise_if_problems()
    template, template_note, renderer, data = check.template, check.template_note, check.renderer, check.data
    for line in check.summary:
        console.print(line)
    for line in fmt_report_lines(data.reports):
        console.print(line, markup=False, highlight=False)  # "[alpaca]" is text, not a rich style
    (work / "data_report.json").write_text(
        json.dumps(data.to_dict(template_note), indent=2, ensure_ascii=False), encoding="utf-8"
    )

    # 3. Model + LoRA.
    precision = pick_precision(cfg.train.precision)
    if check.remote_code_note:
        console.print(f"[dim]{check.remote_code_note}[/dim]")
    model = load_model(source, precision, cfg.model.trust_remote_code, cfg.model.allow_pickle, load_in=cfg.model.load_in)
    fast = _apply_fast_path(model, check.fast_path, console)
    if fast.gradient_checkpointing:  # train.gradient_checkpointing as resolved for this model and device
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        if fast.offload_checkpoints and offload_layer_inputs(model, skip_unused_mlp_output=fast.lean_recompute):
            console.print("[dim]checkpointed layer inputs are kept in CPU memory[/dim]")
    from seektune.training import moe

    moe.use_grouped_experts(model, cfg.model.experts_implementation, console)
    expert_choice = moe.expert_choice_from_profile(model, cfg, data.train, console, work)
    from transformers import set_seed

    set_seed(cfg.train.seed)  # LoRA's A matrices are drawn now: the same seed must give the same start
    model = attach_lora(model, cfg.lora, expert_choice)
    if fast.fused_lora:
        linears, mlps = fuse_lora_linears(model), fuse_lora_mlps(model)
        console.print(f"[dim]{linears} LoRA linears run as one autograd node each, {mlps} SwiGLU MLPs as one[/dim]")
    if fast.cuda_graphs:
        count = graph_layers(model)  # after LoRA: the graphs hold the adapter's weights and gradients
        console.print(f"[dim]{count} checkpointed decoder layers run as CUDA graphs (captured per row-length "
                      f"bucket in the first steps)[/dim]")
    if fast.compile:
        console.print(f"[dim]compiling {compile_layers(model)} decoder layers (first steps are slow)[/dim]")
    trainable, total = trainable_summary(model)
    console.print(f"LoRA r={cfg.lora.r} alpha={cfg.lora.alpha}: {trainable:,} trainable of {total:,} ({trainable / total:.3%})")
    moe.print_adapter_report(model, cfg, console, work, fast.gradient_checkpointing)

    # 4. Train.
    trainer, stopper = _build_trainer(cfg, model, tokenizer, data, work, precision, fast)
    for cb in callbacks:
        trainer.add_callback(cb)
    stopper.install()
    try:
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except torch.OutOfMemoryError as e:
        raise out_of_memory_error(e, cfg, check.memory, trainer.state.global_step, fast.gradient_checkpointing) from None
    finally:
        stopper.uninstall()
    info = {
        "base_model": source.original,
        "base_model_location": source.location,
        "precision": precision,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "global_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "train_loss": result.training_loss,
        "fast_path": fast.to_dict(),
        "layer_graphs": graph_stats(model),  # captures and pad tokens of CUDA-graphed layers, or None
        "non_finite_steps_skipped": trainer.guard.total,
        "seconds": round(time.time() - started, 1),
        "system": _system_info(),
    }
    info.update(after_training())  # closes tracker runs; adds peak memory and fuller system details
    graphs = info["layer_graphs"]
    if graphs and graphs["tokens"]:
        pad_share = graphs["pad_tokens"] / (graphs["tokens"] + graphs["pad_tokens"])
        console.print(f"[dim]CUDA-graphed layers: {graphs['captures']} captures (one per layer and row-length "
                      f"bucket); pad tokens {pad_share:.1%} of the rows[/dim]")
    for reason in (graphs or {}).get("failed", []):
        console.print(f"[yellow]a row-length bucket ran without CUDA graphs: {reason}[/yellow]")
    if trainer.guard.stopped_at is not None:
        info["status"] = f"stopped: {trainer.guard.consecutive} non-finite steps in a row"
        (work / "run.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        raise NonFiniteTrainingError(trainer.guard.message(last_checkpoint(work), cfg))
    if stopper.requested:
        info["status"] = f"interrupted by {stopper.requested}"
        (work / "run.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        console.print(
            f"[yellow]stopped at step {trainer.state.global_step}; checkpoint saved in {work / 'checkpoints'}. "
            f"Continue with: seektune train --resume --output {out}[/yellow]"
        )
        return Run(work, cfg, complete=False, info=info)

    # 5. Save: adapter (checked first), tokenizer with its template, samples; then publish the folder.
    adapter_state = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    check_adapter_weights(adapter_state)
    model.save_pretrained(str(work / "adapter"), safe_serialization=True)
    if template is not None:
        tokenizer.chat_template = template
    tokenizer.save_pretrained(str(work / "tokenizer"))
    if data.holdout:
        _before_after(model, renderer, data, cfg, work, console)
    info["status"] = "complete"
    info["seconds"] = round(time.time() - started, 1)
    (work / "run.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    os.replace(work, out)
    console.print(f"[green]run folder: {out}[/green]  ({info['seconds']:.0f} s)")
    return Run(out, cfg, complete=True, info=info, model=model)


def _as_config(config) -> RunConfig:
    if config is None:
        return load_config()
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, dict):
        return RunConfig.model_validate(config)
    return load_config(config)


def _prepare_folders(out: Path, work: Path, resume: bool) -> Optional[Path]:
    if out.exists():
        raise SeektuneError(f"{out} already exists and is a finished run; choose another --output or remove it")
    if resume:
        ckpt = last_checkpoint(work) if work.is_dir() else None
        if ckpt is None:
            raise SeektuneError(f"--resume: no complete checkpoint under {work / 'checkpoints'}; start the run without --resume")
        return ckpt
    if work.exists():
        raise SeektuneError(
            f"an interrupted run is in {work}: continue it with --resume, or delete that folder to start over"
        )
    work.mkdir(parents=True)
    return None


def _apply_fast_path(model, fast: FastPath, console: Console) -> FastPath:
    """Packing, attention kernel and fused kernels, as preflight decided them (before LoRA is attached)."""
    prepare_model_for_fast_path(model, fast)
    console.print(f"speed: {fast.describe()}")
    for note in fast.notes:
        console.print(f"[dim]  {note}[/dim]")
    return fast


def _build_trainer(cfg: RunConfig, model, tokenizer, data: PreparedData, work: Path, precision: str, fast: FastPath):
    from transformers import TrainingArguments
    from transformers.trainer_callback import ProgressCallback

    t = cfg.train
    steps_per_epoch = math.ceil(len(data.train) / (t.per_device_batch_size * t.gradient_accumulation))
    total_steps = t.max_steps if t.max_steps > 0 else math.ceil(t.epochs * steps_per_epoch)
    has_eval = bool(data.eval)
    eval_steps = t.eval_steps or max(1, total_steps // 5)
    args = TrainingArguments(
        output_dir=str(work / "checkpoints"),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        report_to=list(t.report_to) or "none",
        run_name=run_display_name(work),
        remove_unused_columns=False,
        # Packed rows have no padding; counting "non-padding" by pad id would miss real EOS tokens there.
        include_num_input_tokens_seen="all" if fast.packing else "non_padding",
        dataloader_num_workers=0,
        disable_tqdm=False,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
    )
    if "tensorboard" in t.report_to:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(work / "tensorboard")  # read when the Trainer is built
    configure_trackers(t.report_to, work)  # swanlab / wandb / mlflow: offline, logs inside the run folder
    stopper = StopOnSignal()
    trainer = SeektuneTrainer(
        max_bad_steps=t.max_bad_steps,
        sample_sources=[e.source for e in data.train],
        metrics_path=work / "metrics.jsonl",
        model=model,
        args=args,
        train_dataset=SampleDataset(data.train),
        eval_dataset=SampleDataset(data.eval) if has_eval else None,
        data_collator=packed_collator() if fast.packing else make_collator(model, tokenizer),
        processing_class=tokenizer,
        callbacks=[MetricsLogger(work / "metrics.jsonl"), stopper],
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(ConsoleProgress())
    add_run_details(trainer, cfg.model_dump(mode="json"), _system_info())  # into each tracker's run
    return trainer, stopper


def _before_after(model, renderer: ChatRenderer, data: PreparedData, cfg: RunConfig, work: Path, console: Console):
    from rich.table import Table

    prompts = [c.prompt_messages for c in data.holdout]
    n = cfg.train.sample_max_new_tokens
    with model.disable_adapter():
        before = generate_answers(model, renderer, prompts, max_new_tokens=n)
    after = generate_answers(model, renderer, prompts, max_new_tokens=n)
    table = Table(title="held-out prompts: base vs fine-tuned", show_lines=True)
    for col in ("prompt", "base model", "fine-tuned", "reference"):
        table.add_column(col, overflow="fold")
    md = ["# Before / after on held-out prompts", "", "Prompts held out of training; greedy decoding.", ""]
    for conv, b, a in zip(data.holdout, before, after):
        prompt = conversation_prompt(conv) or ""
        table.add_row(prompt, b, a, conv.reference)
        md += [f"## {prompt}", "", f"**base model:** {b}", "", f"**fine-tuned:** {a}", "", f"**reference:** {conv.reference}", ""]
    console.print(table)
    (work / "samples.md").write_text("\n".join(md), encoding="utf-8")


def _system_info() -> dict:
    import peft
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
    }
    return info
