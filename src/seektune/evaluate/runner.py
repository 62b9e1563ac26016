"""`seektune eval`: several models or run folders on held-out data -> one table (JSON + Markdown),
with every generated answer kept.

A run folder is evaluated with its adapter, its tokenizer and its chat template; `with_base` adds
the run's base model (the same loaded weights with the adapter switched off), once per base.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional, Union

from rich.console import Console

from seektune.data.dataset import conversation_prompt
from seektune.data.formats import Message
from seektune.evaluate.tasks import EvalData, load_eval_data
from seektune.errors import SeektuneError


@dataclass
class EvalOptions:
    max_new_tokens: int = 128
    choice_max_new_tokens: int = 32
    batch_size: int = 8
    max_length: int = 2048  # for the loss; longer samples are cut and counted
    metrics: tuple = ("generation", "loss")  # which generation-task metrics to compute


@dataclass
class EvalResult:
    model: str
    data: str
    kind: str
    metrics: dict
    seconds: float
    answers: list = field(default_factory=list)  # one row per item: prompt, reference/gold, answer, ...


def _chunks(seq, n):
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _generate(model, renderer, prompts: list[list[Message]], max_new_tokens: int, batch_size: int, label: str,
              console: Console) -> list[str]:
    from rich.progress import Progress

    from seektune.infer.generate import generate_answers

    out: list[str] = []
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"{label}: generating", total=len(prompts))
        for chunk in _chunks(prompts, batch_size):
            out += generate_answers(model, renderer, chunk, max_new_tokens=max_new_tokens, batch_size=batch_size)
            bar.advance(task, len(chunk))
    return out


def evaluate_loaded(model, renderer, data: EvalData, opts: EvalOptions, label: str = "model",
                    console: Optional[Console] = None) -> EvalResult:
    """Score one loaded model (adapter on or off as the caller set it) on one held-out file."""
    from seektune.data.render import ChatRenderer
    from seektune.evaluate.choice import score_choices
    from seektune.evaluate.loss import assistant_loss
    from seektune.evaluate.metrics import generation_scores

    console = console or Console()
    started = time.time()
    was_training = model.training
    model.eval()
    # Loss over every assistant turn, cut at the eval max_length, whatever the run trained with.
    renderer = ChatRenderer(renderer.tokenizer, renderer.template, "all_assistant", opts.max_length)
    if data.kind == "choice":
        prompts = [[Message("user", it.prompt)] for it in data.choices]
        answers = _generate(model, renderer, prompts, opts.choice_max_new_tokens, opts.batch_size, label, console)
        scored = score_choices(model, renderer, data.choices, answers, opts.batch_size)
        metrics, rows = scored["metrics"], scored["rows"]
    else:
        convs = data.conversations
        metrics, rows = {"n": len(convs)}, []
        if "generation" in opts.metrics:
            answers = _generate(model, renderer, [c.prompt_messages for c in convs], opts.max_new_tokens,
                                opts.batch_size, label, console)
            metrics.update(generation_scores(answers, [c.reference for c in convs]))
            rows = [{"index": c.index, "line": c.line, "prompt": conversation_prompt(c), "reference": c.reference,
                     "answer": a} for c, a in zip(convs, answers)]
        if "loss" in opts.metrics:
            metrics.update(assistant_loss(model, renderer, convs, batch_size=opts.batch_size))
    if was_training:
        model.train()
    return EvalResult(label, data.name, data.kind, metrics, round(time.time() - started, 2), rows)


# ---- loading what to evaluate ------------------------------------------------------------------------


def _is_run(spec: str) -> bool:
    p = Path(spec)
    return p.is_dir() and (p / "config.yaml").is_file() and (p / "adapter").is_dir()


def _to_device(model):
    import torch

    if torch.cuda.is_available() and next(model.parameters()).device.type == "cpu":
        model = model.to("cuda")
    return model


def load_for_eval(spec: str, chat_template: Optional[str] = None, trust_remote_code: bool = False,
                  allow_pickle: bool = False, precision: str = "auto"):
    """(model, renderer, run or None) for a run folder or a model (hub id, folder, .gguf, 'embedded')."""
    from seektune.data.render import ChatRenderer, resolve_template

    if _is_run(spec):
        from seektune.api import load

        loaded = load(spec, precision=precision)
        return _to_device(loaded.model), loaded.renderer, loaded.run
    if Path(spec).is_dir() and (Path(spec) / "config.yaml").is_file():
        raise SeektuneError(f"{spec}: a run folder without adapter/ (not finished?); finish or resume the run first")
    from seektune.models.load import load_model, load_tokenizer, pick_precision
    from seektune.models.source import resolve_source

    source = resolve_source(spec, allow_pickle=allow_pickle)
    tokenizer = load_tokenizer(source, trust_remote_code)
    template, _ = resolve_template(chat_template, tokenizer)
    model = load_model(source, pick_precision(precision), trust_remote_code, allow_pickle)
    return _to_device(model).eval(), ChatRenderer(tokenizer, template), None


def _base_label(run) -> str:
    return f"base: {run.config.model.source or 'embedded SmolLM2-135M-Instruct'}"


def _label(spec: str, run) -> str:
    return run.path.name if run is not None else spec


def evaluate(
    targets: list[str],
    data: list[Union[str, dict]],
    output: Optional[Union[str, Path]] = None,
    with_base: bool = False,
    options: Optional[EvalOptions] = None,
    chat_template: Optional[str] = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    console: Optional[Console] = None,
) -> dict:
    """Evaluate each target on each data file; write eval.json and eval.md to `output`; return the JSON dict.

    `data` items are paths or dicts with path, format, columns, task, max_records, system."""
    import torch

    console = console or Console()
    opts = options or EvalOptions()
    if not targets:
        raise SeektuneError("nothing to evaluate: give one or more models or run folders")
    if not data:
        raise SeektuneError("no held-out data: pass --data FILE")
    datasets = [load_eval_data(**({"path": d} if isinstance(d, (str, Path)) else d)) for d in data]
    for d in datasets:
        if len(d) == 0:
            raise SeektuneError(f"{d.path}: no records to evaluate")
        console.print(f"{d.name}: {len(d)} {'multiple-choice questions' if d.kind == 'choice' else 'prompts'}")
    out = Path(output) if output else Path("evals") / f"eval-{datetime.now():%Y%m%d-%H%M%S}"
    results: list[EvalResult] = []
    models: list[dict] = []
    bases_done: set = set()
    for spec in targets:
        model, renderer, run = load_for_eval(spec, chat_template, trust_remote_code, allow_pickle)
        passes = []
        if run is not None and with_base:
            key = (run.config.model.source, renderer.template)
            if key not in bases_done:
                bases_done.add(key)
                passes.append((_base_label(run), model.disable_adapter(), False))
        passes.append((_label(spec, run), nullcontext(), run is not None))
        for label, ctx, adapter in passes:
            models.append({"label": label, "spec": spec, "adapter": adapter})
            with ctx:
                for d in datasets:
                    console.print(f"[bold]{label}[/bold] on {d.name}")
                    results.append(evaluate_loaded(model, renderer, d, opts, label, console))
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    report = {
        "created_at": datetime.now().isoformat(timespec="seconds"),
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(opts).items()},
        "data": [{"path": str(d.path), "name": d.name, "kind": d.kind, "n": len(d)} for d in datasets],
        "models": models,
        "results": [{"model": r.model, "data": r.data, "kind": r.kind, "metrics": r.metrics, "seconds": r.seconds}
                    for r in results],
        "answers": [{"model": r.model, "data": r.data, "rows": r.answers} for r in results],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "eval.md").write_text(to_markdown(report), encoding="utf-8")
    _print_table(report, console)
    console.print(f"[green]wrote {out / 'eval.json'} and {out / 'eval.md'}[/green]")
    report["output"] = str(out)
    return report


# ---- presenting ---------------------------------------------------------------------------------------

GEN_COLUMNS = ["rouge-1", "rouge-2", "rouge-l", "bleu-4", "eval_loss", "perplexity"]
CHOICE_COLUMNS = ["accuracy_loglik", "accuracy_generated", "unparsed_generations"]


def _columns(kind: str, rows: list[dict]) -> list[str]:
    cols = CHOICE_COLUMNS if kind == "choice" else GEN_COLUMNS
    return [c for c in cols if any(c in r["metrics"] for r in rows)]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return "" if v is None else str(v)


def _cell(text: str, limit: int = 300) -> str:
    text = " ".join(str(text or "").split())
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.replace("|", "\\|")


def to_markdown(report: dict, show: int = 10) -> str:
    md = ["# Evaluation", "", f"Created {report['created_at']}; greedy decoding.", ""]
    for d in report["data"]:
        rows = [r for r in report["results"] if r["data"] == d["name"]]
        cols = _columns(d["kind"], rows)
        md += [f"## {d['name']} ({d['n']} {'questions' if d['kind'] == 'choice' else 'samples'})", "",
               "| model | " + " | ".join(cols) + " | seconds |", "|---|" + "---|" * (len(cols) + 1)]
        for r in rows:
            md.append(f"| {_cell(r['model'])} | " + " | ".join(_fmt(r["metrics"].get(c)) for c in cols)
                      + f" | {r['seconds']:.1f} |")
        md.append("")
        answers = [a for a in report["answers"] if a["data"] == d["name"] and a["rows"]]
        if not answers:
            continue
        n = min(show, len(answers[0]["rows"]))
        md += [f"### Answers (first {n} of {len(answers[0]['rows'])}; all in eval.json)", ""]
        for i in range(n):
            first = answers[0]["rows"][i]
            if d["kind"] == "choice":
                md += [f"**Q{i + 1}.** {_cell(first['question'])} — gold **{first['gold']}**", ""]
                for a in answers:
                    row = a["rows"][i]
                    md.append(f"- {_cell(a['model'])}: log-likelihood **{row['loglik_choice']}**, generated "
                              f"**{row['parsed_choice'] or '?'}** ({_cell(row['generated'], 120)})")
            else:
                md += [f"**{i + 1}. {_cell(first['prompt'])}**", "", f"- reference: {_cell(first['reference'])}"]
                md += [f"- {_cell(a['model'])}: {_cell(a['rows'][i]['answer'])}" for a in answers]
            md.append("")
    return "\n".join(md)


def _print_table(report: dict, console: Console) -> None:
    from rich.table import Table

    for d in report["data"]:
        rows = [r for r in report["results"] if r["data"] == d["name"]]
        cols = _columns(d["kind"], rows)
        table = Table(title=f"{d['name']} ({d['n']})")
        table.add_column("model")
        for c in cols:
            table.add_column(c, justify="right")
        for r in rows:
            table.add_row(r["model"], *[_fmt(r["metrics"].get(c)) for c in cols])
        console.print(table)
