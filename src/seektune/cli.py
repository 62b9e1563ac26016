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
