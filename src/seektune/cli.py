"""Subcommand -> function table. Each command is a thin wrapper over the Python API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from seektune.errors import SeektuneError

app = typer.Typer(add_completion=False, no_args_is_help=False, help="LoRA fine-tuning for DeepSeek-family models.")
console = Console()
DEMO_CONFIG = Path(__file__).parent / "samples" / "demo.yaml"


def _build_config(
    config: Optional[Path], model, data, fmt, output, sets, columns, skip_bad, trust_remote_code, allow_pickle
):
    from seektune.config import load_config

    overrides = {
        "model.source": model,
        "output": output,
        "model.trust_remote_code": True if trust_remote_code else None,
        "model.allow_pickle": True if allow_pickle else None,
        "data.skip_bad_records": True if skip_bad else None,
    }
    if data:
        colmap = dict(c.split("=", 1) for c in columns or [] if "=" in c)
        bad = [c for c in columns or [] if "=" not in c]
        if bad:
            raise SeektuneError(f"--column {bad[0]!r}: expected OURS=THEIRS, e.g. --column prompt=content")
        overrides["data.datasets"] = [{"path": d, "format": fmt or "auto", "columns": colmap} for d in data]
    elif fmt or columns:
        raise SeektuneError("--format/--column describe --data; give --data too (or set them in the config file)")
    if config is None and not data:
        console.print(f"[dim]no config and no --data: running the built-in demo ({DEMO_CONFIG})[/dim]")
        config = DEMO_CONFIG
    return load_config(config, overrides=overrides, sets=sets)


@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="YAML config (see examples/)"),
    model: Optional[str] = typer.Option(None, "--model", help="hub id, local folder or .gguf (default: embedded SmolLM2)"),
    data: Optional[List[str]] = typer.Option(None, "--data", help="JSON/JSONL/CSV/Parquet file; repeat for several"),
    fmt: Optional[str] = typer.Option(None, "--format", help="alpaca|pair|conversation|messages|sharegpt|reasoning"),
    column: Optional[List[str]] = typer.Option(None, "--column", help="map a field, e.g. --column prompt=content"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="run folder"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="dotted override, e.g. --set lora.r=32"),
    resume: bool = typer.Option(False, "--resume", help="continue the interrupted run in --output"),
    skip_bad_records: bool = typer.Option(False, "--skip-bad-records", help="skip and report bad records"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="run the model folder's own code"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="allow .bin/.pt pickle weights"),
    dry_run: bool = typer.Option(False, "--dry-run", help="check config, data, template, targets, memory; train nothing"),
):
    """Fine-tune with LoRA. With no arguments: the built-in demo on the embedded model."""
    cfg = _build_config(config, model, data, fmt, output, set_, column, skip_bad_records, trust_remote_code, allow_pickle)
    # Imported after validation, so a bad flag is reported without waiting for torch to load.
    from seektune.training.run import train as run_train

    if dry_run:
        run_train(cfg, console=console, dry_run=True)
        return
    run = run_train(cfg, resume=resume, console=console)
    if not run.complete:
        raise typer.Exit(130)


@app.command()
def inspect(
    model: Optional[str] = typer.Argument(None, help="hub id, folder or .gguf (default: embedded SmolLM2)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="LoRA settings to count, e.g. --set lora.r=8"),
    depth: int = typer.Option(6, help="deepest tree level shown"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
):
    """Module tree condensed by repetition, LoRA target candidates, parameter counts."""
    from seektune.config import load_config
    from seektune.models.inspect import inspect_model, meta_model, render_inspection
    from seektune.models.source import resolve_source

    cfg = load_config(sets=set_)
    source = resolve_source(model, progress=lambda m: console.print(f"[dim]{m}[/dim]"))
    render_inspection(inspect_model(meta_model(source.location, trust_remote_code), cfg.lora), console, depth)


@app.command("inspect-data")
def inspect_data(
    config: Optional[Path] = typer.Argument(None, help="YAML config"),
    model: Optional[str] = typer.Option(None, "--model"),
    data: Optional[List[str]] = typer.Option(None, "--data"),
    fmt: Optional[str] = typer.Option(None, "--format"),
    column: Optional[List[str]] = typer.Option(None, "--column"),
    set_: Optional[List[str]] = typer.Option(None, "--set"),
    n: int = typer.Option(2, "-n", help="how many samples to show"),
):
    """Render a few samples with the chat template; supervised tokens in green."""
    from seektune.data.inspect import show_samples

    cfg = _build_config(config, model, data, fmt, None, set_, column, False, False, False)
    show_samples(cfg, n, console)


@app.command("eval")
def eval_(
    targets: List[str] = typer.Argument(..., help="models (hub id, folder, .gguf, 'embedded') and/or run folders"),
    data: List[str] = typer.Option(..., "--data", help="held-out file (any format train reads); repeat for several"),
    fmt: Optional[str] = typer.Option("auto", "--format", help="data format for generation data (as in train)"),
    column: Optional[List[str]] = typer.Option(None, "--column", help="map a field, e.g. --column prompt=content"),
    task: str = typer.Option("auto", "--task", help="auto | generation | choice (multiple choice)"),
    max_records: Optional[int] = typer.Option(None, "--max-records", "-n", help="first N records of each file"),
    base: bool = typer.Option(False, "--base", help="also evaluate the base model of each run (adapter off)"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="answer length for generation metrics"),
    batch_size: int = typer.Option(8, "--batch-size"),
    max_length: int = typer.Option(2048, "--max-length", help="token limit for the loss (longer samples are cut)"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="folder for eval.json + eval.md"),
    chat_template: Optional[str] = typer.Option(None, "--chat-template", help="template for plain models"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
):
    """ROUGE/BLEU-4, multiple-choice accuracy and assistant-token loss for several models in one table."""
    from seektune.evaluate.runner import EvalOptions, evaluate

    colmap = dict(c.split("=", 1) for c in column or [] if "=" in c)
    if any("=" not in c for c in column or []):
        raise SeektuneError("--column expects OURS=THEIRS, e.g. --column prompt=content")
    specs = [{"path": d, "format": fmt or "auto", "columns": colmap, "task": task, "max_records": max_records}
             for d in data]
    opts = EvalOptions(max_new_tokens=max_new_tokens, batch_size=batch_size, max_length=max_length)
    evaluate(targets, specs, output=output, with_base=base, options=opts, chat_template=chat_template,
             trust_remote_code=trust_remote_code, console=console)


@app.command()
def sweep(
    spec: Path = typer.Argument(..., help="SWEEP.yaml: base config + grid: or runs: (see README)"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="sweep folder (default: the spec's output:)"),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="runs at once, one per GPU (default: all GPUs seen)"),
):
    """Train one run per grid point / override set, one after another; rerun to resume a stopped sweep."""
    from seektune.sweep.runner import run_sweep

    result = run_sweep(spec, output=output, gpus=gpus, console=console)
    if result.interrupted:
        raise typer.Exit(130)
    if result.failed:
        raise typer.Exit(1)


@app.command()
def report(
    paths: List[Path] = typer.Argument(..., help="a sweep folder, or several run folders"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="folder for report.html + PNGs"),
):
    """One self-contained HTML page (and PNGs): curves, final metrics, sample answers, warnings."""
    from seektune.report.build import build_report

    build_report(paths, output=output, console=console)

# ---- use the adapter: generate, chat, compare, merge, export ------------------------------------------------
err_console = Console(stderr=True)
TARGET_HELP = "run folder, adapter folder, merged or model folder, .gguf, hub id, or `embedded`"


def _say(msg: str) -> None:
    err_console.print(f"[dim]{msg}[/dim]", highlight=False)


def _sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed):
    from seektune.infer.engine import Sampling

    s = Sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
    s.check()
    return s


def _prompt_items(prompts, file, fmt, columns, system, limit):
    from seektune.infer.prompts import from_text, read_prompts

    colmap = dict(c.split("=", 1) for c in columns or [] if "=" in c)
    items = [from_text(p, system) for p in prompts or []]
    if file is not None:
        items += read_prompts(file, fmt or "auto", colmap, system, limit)
    if not items:
        raise SeektuneError("no prompt: give one after the model, or --file PROMPTS (TXT, JSONL or any dataset format)")
    return items


@app.command()
def generate(
    target: str = typer.Argument(..., help=TARGET_HELP),
    prompt: Optional[List[str]] = typer.Argument(None, help="prompt(s); or use --file"),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="prompts: TXT (one per line), JSONL with `prompt`, or any dataset format"),
    fmt: Optional[str] = typer.Option(None, "--format", help="dataset format of --file (default: detected)"),
    column: Optional[List[str]] = typer.Option(None, "--column", help="map a field of --file, e.g. --column prompt=content"),
    limit: Optional[int] = typer.Option(None, "--limit", help="use only the first N prompts of --file"),
    system: Optional[str] = typer.Option(None, "--system", help="system prompt"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy; > 0 samples"),
    top_p: float = typer.Option(1.0, "--top-p"),
    top_k: int = typer.Option(0, "--top-k", help="0 = off"),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    batch_size: int = typer.Option(8, "--batch-size", help="prompts per batch (left-padded)"),
    stream: bool = typer.Option(True, "--stream/--no-stream", help="print tokens as they come (single prompt)"),
    show_thinking: bool = typer.Option(True, "--show-thinking/--hide-thinking", help="show the <think> block"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="also write the answers as JSONL"),
    precision: str = typer.Option("auto", "--precision", help="auto|bf16|fp16|fp32"),
    load_in: Optional[str] = typer.Option(None, "--load-in", help="8bit|4bit (bitsandbytes, GPU only)"),
    template: Optional[str] = typer.Option(None, "--template", help="override the chat template (name or .jinja)"),
):
    """Answer prompts with the model, rendered exactly as in training; stops on the end-of-turn token."""
    import json as _json

    from seektune.infer.engine import generate as run_generate
    from seektune.infer.target import load_target
    from seektune.infer.think import shown

    sampling = _sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
    items = _prompt_items(prompt, file, fmt, column, system, limit)
    t = load_target(target, precision, load_in, template, progress=_say)
    for n in t.notes:
        _say(n)
    streaming = stream and len(items) == 1

    def show(start, batch):
        if streaming:
            return
        for item, a in zip(items[start:], batch):
            typer.echo(f"### {item.label}\n{shown(a.text, a.prefill, show_thinking)}\n")

    answers = run_generate(t.model, t.renderer, [i.messages for i in items], sampling, batch_size, streaming,
                           show_thinking, on_batch=show)
    cut = sum(not a.stopped for a in answers)
    if cut:
        _say(f"{cut} of {len(answers)} answers reached --max-new-tokens {max_new_tokens} before the end-of-turn token")
    if output:
        with open(output, "w", encoding="utf-8") as f:
            for item, a in zip(items, answers):
                f.write(_json.dumps({"prompt": item.label, "answer": shown(a.text, a.prefill, show_thinking),
                                     "reference": item.reference, "tokens": a.tokens, "stopped": a.stopped},
                                    ensure_ascii=False) + "\n")
        _say(f"answers written to {output}")


@app.command()
def chat(
    target: str = typer.Argument("embedded", help=TARGET_HELP),
    adapter: Optional[List[str]] = typer.Option(None, "--adapter", help="more run/adapter folders on the same base (/adapter NAME)"),
    system: Optional[str] = typer.Option(None, "--system"),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature"),
    top_p: float = typer.Option(1.0, "--top-p"),
    top_k: int = typer.Option(0, "--top-k"),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    show_thinking: bool = typer.Option(True, "--show-thinking/--hide-thinking"),
    stream: bool = typer.Option(True, "--stream/--no-stream"),
    precision: str = typer.Option("auto", "--precision"),
    load_in: Optional[str] = typer.Option(None, "--load-in", help="8bit|4bit (bitsandbytes, GPU only)"),
    template: Optional[str] = typer.Option(None, "--template"),
):
    """Interactive chat with history: /reset, /system TEXT, /adapter NAME, /exit."""
    from seektune.infer.chat import chat_loop
    from seektune.infer.target import load_target

    sampling = _sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
    t = load_target(target, precision, load_in, template, extra_adapters=adapter, progress=_say)
    chat_loop(t, sampling, system, show_thinking, stream)


@app.command()
def compare(
    targets: List[str] = typer.Argument(..., help="run folders (or adapter/merged folders) to compare"),
    prompt: Optional[List[str]] = typer.Option(None, "--prompt", "-p", help="a prompt; repeat for several"),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="prompts file (any dataset format: references shown)"),
    fmt: Optional[str] = typer.Option(None, "--format"),
    column: Optional[List[str]] = typer.Option(None, "--column"),
    limit: Optional[int] = typer.Option(None, "--limit", help="first N prompts of --file"),
    system: Optional[str] = typer.Option(None, "--system"),
    base: Optional[str] = typer.Option(None, "--base", help="base model column (default: the first run's base)"),
    no_base: bool = typer.Option(False, "--no-base", help="leave out the base model column"),
    output: Path = typer.Option(Path("compare"), "--output", "-o", help="folder for compare.md/.html/.json"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature"),
    top_p: float = typer.Option(1.0, "--top-p"),
    top_k: int = typer.Option(0, "--top-k"),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    batch_size: int = typer.Option(8, "--batch-size"),
    show_thinking: bool = typer.Option(True, "--show-thinking/--hide-thinking"),
    precision: str = typer.Option("auto", "--precision"),
    load_in: Optional[str] = typer.Option(None, "--load-in", help="8bit|4bit (bitsandbytes, GPU only)"),
):
    """Base model vs fine-tuned models on the same prompts: a table, Markdown and HTML side by side."""
    from seektune.infer.compare import compare as run_compare

    sampling = _sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
    items = _prompt_items(prompt, file, fmt, column, system, limit)
    result = run_compare(targets, items, base, not no_base, sampling, batch_size, precision, load_in, show_thinking,
                         progress=_say)
    result.print(console)
    files = result.write(output)
    console.print("written: " + ", ".join(str(f) for f in files))


@app.command()
def merge(
    run_dir: Path = typer.Argument(..., help="run folder (or PEFT adapter folder)"),
    output: Path = typer.Option(..., "--output", "-o", help="folder for the merged model"),
    dtype: str = typer.Option("auto", "--dtype", help="bf16|fp16|fp32 (auto: the base model's own dtype)"),
    max_shard_size: str = typer.Option("5GB", "--max-shard-size"),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """Merge the LoRA adapter into the base weights; checks the merged logits against base + adapter."""
    from seektune.adapters.merge import merge as run_merge

    report = run_merge(run_dir, output, dtype, max_shard_size, overwrite, progress=_say)
    for line in report.lines():
        console.print(line, highlight=False)


export_app = typer.Typer(add_completion=False, help="Export for llama.cpp (GGUF) and Ollama.")
app.add_typer(export_app, name="export")


@export_app.command("gguf")
def export_gguf_cmd(
    source: Path = typer.Argument(..., help="run folder, merged folder or model folder"),
    output: Path = typer.Option(..., "--output", "-o", help="the .gguf file to write"),
    qtype: str = typer.Option("f16", "--type", help="f16|bf16|f32|q8_0|q5_1|q5_0|q4_1|q4_0"),
    adapter_only: bool = typer.Option(False, "--adapter-only", help="write the LoRA adapter as a GGUF LoRA (llama.cpp --lora)"),
):
    """Write a GGUF file llama.cpp loads (Llama and Qwen2 architectures), chat template included."""
    if adapter_only:
        from seektune.export.gguf_lora import export_gguf_lora

        report = export_gguf_lora(source, output, qtype, progress=_say)
    else:
        from seektune.export.gguf import export_gguf

        report = export_gguf(source, output, qtype, progress=_say)
    for line in report.lines():
        console.print(line, highlight=False)


@export_app.command("ollama")
def export_ollama_cmd(
    source: Path = typer.Argument(..., help="run folder, merged folder or model folder"),
    output: Path = typer.Option(..., "--output", "-o", help="folder for the GGUF and the Modelfile"),
    qtype: str = typer.Option("q8_0", "--type", help="GGUF type (see `export gguf`)"),
    name: Optional[str] = typer.Option(None, "--name", help="model name in the printed `ollama create` command"),
):
    """A folder with the GGUF and a Modelfile whose TEMPLATE and stop tokens match the training template."""
    from seektune.export.ollama import export_ollama

    res = export_ollama(source, output, qtype, name, progress=_say)
    for line in res["gguf"].lines():
        console.print(line, highlight=False)
    console.print(f"Modelfile stops: {res['stops']}", highlight=False)
    console.print(f"run it: {res['command']}", highlight=False)


def main(argv: Optional[list[str]] = None) -> None:
    try:
        # In non-standalone mode typer *returns* the code of typer.Exit (and of Ctrl-C, as 130) instead of exiting.
        rc = app(args=argv, standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except SeektuneError as e:
        console.print(f"[bold red]error:[/bold red] {e}", highlight=False)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]aborted[/yellow]")
        sys.exit(130)
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
