"""Run folders (alone or in a sweep folder) -> what the report shows of each: config, curve, totals, samples."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from seektune.errors import SeektuneError
from seektune.run_folder import INCOMPLETE, Run
from seektune.sweep.results import curve_summary, read_results


@dataclass
class RunView:
    name: str
    path: Path
    status: str
    flat_config: dict
    rows: list[dict]  # training steps
    eval_rows: list[dict]  # rows with eval_loss
    summary: dict  # final/best losses, tokens/s
    info: dict  # run.json
    results: Optional[dict] = None  # results.json (sweeps)
    samples: list[dict] = field(default_factory=list)  # samples.md: prompt, base, tuned, reference
    params: dict = field(default_factory=dict)  # the varied settings, filled in once all runs are known

    @property
    def learning_rate(self) -> Optional[float]:
        return self.flat_config.get("train.learning_rate")

    @property
    def eval_metrics(self) -> dict:
        ev = (self.results or {}).get("eval_info") or {}
        return ev.get("metrics", {}) if isinstance(ev, dict) else {}

    @property
    def eval_answers(self) -> list[dict]:
        ev = (self.results or {}).get("eval_info") or {}
        return ev.get("answers", []) if isinstance(ev, dict) else []

    @property
    def train_time(self) -> Optional[float]:
        if self.results:
            return self.results["train_info"].get("train_time")
        return self.info.get("seconds")

    @property
    def peak_memory(self) -> Optional[int]:
        src = self.results["train_info"] if self.results else self.info
        return src.get("peak_memory_bytes")


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k != "columns":
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def parse_samples(text: str) -> list[dict]:
    """samples.md (written by training) -> [{prompt, base, tuned, reference}]."""
    out = []
    for block in re.split(r"\n(?=## )", text):
        m = re.match(r"## (.*?)\n\n\*\*base model:\*\* (.*?)\n\n\*\*fine-tuned:\*\* (.*?)\n\n\*\*reference:\*\* (.*)",
                     block.strip("\n"), flags=re.S)
        if m:
            out.append(dict(zip(("prompt", "base", "tuned", "reference"), (g.strip() for g in m.groups()))))
    return out


def load_run(path: Path) -> RunView:
    run = Run.open(path)
    summary = curve_summary(run)
    samples_md = path / "samples.md"
    status = run.info.get("status") or ("complete" if run.complete else "interrupted")
    name = path.name.removesuffix(INCOMPLETE)
    return RunView(
        name=name, path=path, status=status, flat_config=flatten(run.config.model_dump(mode="json")),
        rows=run.step_metrics, eval_rows=[m for m in run.metrics if "eval_loss" in m], summary=summary,
        info=run.info, results=read_results(path),
        samples=parse_samples(samples_md.read_text(encoding="utf-8")) if samples_md.is_file() else [],
    )


def _runs_in(folder: Path) -> list[Path]:
    sweep = folder / "sweep.json"
    if sweep.is_file():
        names = list(json.loads(sweep.read_text(encoding="utf-8"))["runs"])
        found = []
        for n in names:
            for cand in (folder / n, folder / (n + INCOMPLETE)):
                if (cand / "config.yaml").is_file():
                    found.append(cand)
                    break
        return found
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / "config.yaml").is_file())


def collect(paths: list[Path]) -> tuple[list[RunView], list[str]]:
    """(runs, varied dotted keys). A path is a run folder or a folder of runs (a sweep)."""
    folders: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise SeektuneError(f"{p}: not a folder; give a sweep folder or run folders")
        folders += [p] if (p / "config.yaml").is_file() else _runs_in(p)
    if not folders:
        raise SeektuneError(f"no run folders (with config.yaml) in {', '.join(map(str, paths))}")
    runs = [load_run(f) for f in folders]
    keys = sorted({k for r in runs for k in r.flat_config} - {"output"})
    varied = [k for k in keys
              if len({json.dumps(r.flat_config.get(k), sort_keys=True) for r in runs}) > 1]
    for r in runs:
        r.params = {k: r.flat_config.get(k) for k in varied}
    return runs, varied
