"""One sweep run in its own process: train (or resume), measure peak memory, evaluate, write results.json.

  python -m seektune.sweep.worker JOB.json

A process per run gives each run its own peak-memory figure and its own GPU (CUDA_VISIBLE_DEVICES set
by the sweep), and a crash in one run cannot take the sweep down. Exit codes: 0 done, 130 stopped by
a signal (checkpoint saved; the sweep resumes it), 1 failed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rich.console import Console


def _evaluate(run, spec: dict, console: Console) -> dict:
    from seektune.evaluate.runner import EvalOptions, evaluate_loaded
    from seektune.evaluate.tasks import load_eval_data

    opt_keys = {"max_new_tokens", "batch_size", "max_length", "metrics"}
    opts = EvalOptions(**{k: (tuple(v) if k == "metrics" else v) for k, v in spec.items() if k in opt_keys})
    data = load_eval_data(**{k: v for k, v in spec.items() if k not in opt_keys and k != "data"}, path=spec["data"])
    if run.model is not None:
        from transformers import AutoTokenizer

        from seektune.data.render import ChatRenderer

        model = run.model
        tok = AutoTokenizer.from_pretrained(str(run.path / "tokenizer"))
        renderer = ChatRenderer(tok, None, run.config.data.loss_on, run.config.data.max_length)
    else:
        from seektune.evaluate.runner import load_for_eval

        model, renderer, _ = load_for_eval(str(run.path))
    result = evaluate_loaded(model, renderer, data, opts, run.path.name, console)
    return {"data": data.name, "kind": result.kind, "metrics": result.metrics, "seconds": result.seconds,
            "answers": result.answers}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    console = Console()
    started = time.time()
    from seektune.config import RunConfig
    from seektune.run_folder import Run
    from seektune.sweep.results import build_results, peak_memory

    cfg = RunConfig.model_validate(job["config"])
    if job["mode"] == "results":  # trained already; only the results file is missing
        run, peak = Run.open(cfg.output), None
    else:
        from seektune.training.run import train

        run = train(cfg, resume=job["mode"] == "resume", console=console)
        if not run.complete:
            return 130
        peak = peak_memory()
    eval_info = _evaluate(run, job["eval"], console) if job.get("eval") else None
    results = build_results(run, job["name"], job.get("sweep"), job["overrides"], peak, eval_info,
                            time.time() - started, job.get("previous_seconds", 0.0))
    tmp = run.path / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(run.path / "results.json")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        from seektune.errors import SeektuneError

        if not isinstance(e, SeektuneError):
            raise
        Console().print(f"[bold red]error:[/bold red] {e}", highlight=False)
        sys.exit(1)
