"""`seektune sweep SWEEP.yaml`: the runs of a sweep, one process each, resumable.

  SWEEP_DIR/
    sweep.yaml          copy of the spec
    sweep.json          every run: overrides, status, exit code, log
    logs/NAME.log       each run's console output
    jobs/NAME.json      what the worker was asked to do
    NAME/               the run folder (seektune train's), with results.json when finished

Rerunning the same spec skips finished runs (results.json present), resumes interrupted ones from
their last checkpoint, rebuilds a missing results.json without retraining, and starts the rest.
With several GPUs, runs go one per GPU at once (CUDA_VISIBLE_DEVICES); otherwise one after another.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from rich.console import Console

from seektune.run_folder import last_checkpoint, work_dir
from seektune.sweep.results import read_results
from seektune.sweep.spec import SweepRun, SweepSpec, load_sweep


@dataclass
class SweepResult:
    folder: Path
    statuses: dict[str, str]
    interrupted: bool = False
    failed: list[str] = field(default_factory=list)


def run_state(run: SweepRun) -> str:
    """finished | results (trained, results.json missing) | resume | stale (no checkpoint) | new"""
    out = Path(run.config.output)
    if out.is_dir():
        res = read_results(out)
        return "finished" if res and res["train_info"].get("status") == "complete" else "results"
    work = work_dir(out)
    if work.is_dir():
        return "resume" if last_checkpoint(work) else "stale"
    return "new"


def visible_gpus() -> list[str]:
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [x.strip() for x in env.split(",") if x.strip()] if env else [str(i) for i in range(n)]
    return ids[:n]


class _Slots:
    """Where runs go: one GPU each when several are visible, else a single slot that leaves the env alone."""

    def __init__(self, gpus: Optional[int]):
        ids = visible_gpus()
        if gpus is not None:
            ids = ids[: max(gpus, 0)]
        self.gpu_ids = ids if len(ids) > 1 else []
        self.free = list(self.gpu_ids) if self.gpu_ids else [None]

    @property
    def parallel(self) -> int:
        return len(self.gpu_ids) or 1


def _job(spec: SweepSpec, run: SweepRun, mode: str) -> dict:
    previous = 0.0
    if mode == "resume":
        info = work_dir(Path(run.config.output)) / "run.json"
        if info.is_file():
            previous = float(json.loads(info.read_text(encoding="utf-8")).get("seconds", 0.0))
    return {"name": run.name, "sweep": spec.output.name, "overrides": run.overrides, "mode": mode,
            "config": run.config.model_dump(mode="json"), "eval": spec.eval, "previous_seconds": previous}


def _pump(proc: subprocess.Popen, log: Path, echo: bool) -> threading.Thread:
    def copy():
        with open(log, "ab") as fh:
            for line in iter(proc.stdout.readline, b""):
                fh.write(line)
                fh.flush()
                if echo:
                    sys.stdout.buffer.write(line)
                    sys.stdout.flush()

    t = threading.Thread(target=copy, daemon=True)
    t.start()
    return t


def run_sweep(spec_path, output: Optional[str] = None, gpus: Optional[int] = None,
              console: Optional[Console] = None) -> SweepResult:
    console = console or Console()
    spec = load_sweep(Path(spec_path), output)  # every run's config is validated here, before any training
    folder = spec.output
    for sub in ("logs", "jobs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec.path, folder / "sweep.yaml")
    states = {r.name: run_state(r) for r in spec.runs}
    status_file = folder / "sweep.json"
    record = {"spec": str(spec.path), "varied": spec.varied,
              "runs": {r.name: {"overrides": r.overrides, "status": states[r.name], "log": f"logs/{r.name}.log"}
                       for r in spec.runs}}

    def save():
        status_file.write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")

    save()
    slots = _Slots(gpus)
    todo = [r for r in spec.runs if states[r.name] != "finished"]
    console.print(f"sweep [bold]{folder}[/bold]: {len(spec.runs)} runs, {len(spec.runs) - len(todo)} finished, "
                  f"{sum(states[r.name] == 'resume' for r in todo)} to resume, varied: {', '.join(spec.varied)}; "
                  f"{slots.parallel} at a time" + (f" on GPUs {','.join(slots.gpu_ids)}" if slots.gpu_ids else ""))
    stop = {"signal": None}
    running: dict[str, tuple[subprocess.Popen, threading.Thread, Optional[str]]] = {}

    def on_signal(signum, frame):
        if stop["signal"] is None:
            stop["signal"] = signal.Signals(signum).name
            console.print(f"\n[yellow]{stop['signal']}: stopping the running runs at a checkpoint; "
                          f"run `seektune sweep {spec.path}` again to resume[/yellow]")
        # Workers run in their own sessions (a terminal's Ctrl-C reaches only us): pass the stop on once.
        for proc, _, _ in running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    in_main = threading.current_thread() is threading.main_thread()  # signal handlers live only there
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    failed: list[str] = []
    try:
        queue = list(todo)
        while queue or running:
            while queue and slots.free and stop["signal"] is None:
                run = queue.pop(0)
                state = run_state(run)
                if state == "stale":
                    # Killed before its first checkpoint: nothing to resume, start it again.
                    console.print(f"[dim]{run.name}: no checkpoint in the interrupted folder; starting it again[/dim]")
                    shutil.rmtree(work_dir(Path(run.config.output)))
                mode = {"resume": "resume", "results": "results"}.get(state, "train")
                job_file = folder / "jobs" / f"{run.name}.json"
                job_file.write_text(json.dumps(_job(spec, run, mode), indent=2, ensure_ascii=False), encoding="utf-8")
                gpu = slots.free.pop(0)
                env = dict(os.environ)
                if gpu is not None:
                    env["CUDA_VISIBLE_DEVICES"] = gpu
                console.print(f"[bold]▶ {run.name}[/bold] ({mode}{f', GPU {gpu}' if gpu is not None else ''}): "
                              + ", ".join(f"{k}={v}" for k, v in run.overrides.items()))
                proc = subprocess.Popen([sys.executable, "-m", "seektune.sweep.worker", str(job_file)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
                running[run.name] = (proc, _pump(proc, folder / "logs" / f"{run.name}.log", slots.parallel == 1), gpu)
                record["runs"][run.name].update(status="running", mode=mode)
                save()
            if not running:
                break  # stopped with runs still queued
            time.sleep(0.2)
            for name, (proc, pump, gpu) in list(running.items()):
                if proc.poll() is None:
                    continue
                pump.join()
                del running[name]
                slots.free.append(gpu)
                rc = proc.returncode
                status = {0: "finished", 130: "interrupted"}.get(rc, "failed")
                if status == "failed":
                    failed.append(name)
                record["runs"][name].update(status=status, exit_code=rc)
                save()
                console.print(f"{'[green]✓' if rc == 0 else '[yellow]■' if rc == 130 else '[red]✗'} {name}: "
                              f"{status}[/]" + (f" (see {folder / 'logs' / (name + '.log')})" if status == "failed" else ""))
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    statuses = {r.name: record["runs"][r.name]["status"] for r in spec.runs}
    interrupted = stop["signal"] is not None
    if interrupted:
        console.print(f"[yellow]sweep stopped; resume with: seektune sweep {spec.path}"
                      + (f" --output {folder}" if output else "") + "[/yellow]")
    else:
        console.print(f"[green]sweep folder: {folder}[/green]  report: seektune report {folder}")
    return SweepResult(folder, statuses, interrupted, failed)
