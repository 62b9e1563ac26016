"""The run folder: the unit every later command reads.

  adapter/            PEFT adapter (adapter_config.json + adapter_model.safetensors)
  tokenizer/          tokenizer with the chat template used in training
  config.yaml         fully resolved config; `seektune train config.yaml` replays the run
  metrics.jsonl       one line per logging step
  data_report.json    records read / skipped (with reasons) / truncated, supervised fraction
  samples.md          before/after answers on held-out prompts
  run.json            status, base model, timings, trainable parameters
  checkpoints/        Trainer checkpoints (resume)

A run is written into `<name>.incomplete/` and renamed to `<name>/` only when complete.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

from seektune.config import RunConfig
from seektune.errors import SeektuneError

INCOMPLETE = ".incomplete"


def default_output(cfg: RunConfig) -> Path:
    name = Path(cfg.model.source).name if cfg.model.source else "smollm2-135m"
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name.removesuffix(".gguf")).strip("-") or "model"
    return Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"


def work_dir(out: Path) -> Path:
    return out.with_name(out.name + INCOMPLETE)


def last_checkpoint(folder: Path) -> Optional[Path]:
    ckpts = [p for p in (folder / "checkpoints").glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    # A checkpoint is complete once the Trainer has written its state file (the last thing it writes).
    ckpts = [p for p in ckpts if (p / "trainer_state.json").is_file()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1]), default=None)


@dataclass
class Run:
    """A finished (or interrupted) run folder."""

    path: Path
    config: RunConfig
    complete: bool
    info: dict = field(default_factory=dict)
    model: object = field(default=None, repr=False)  # the trained PeftModel, when train() just ran in this process

    @property
    def metrics(self) -> list[dict]:
        f = self.path / "metrics.jsonl"
        if not f.is_file():
            return []
        return [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]

    @property
    def step_metrics(self) -> list[dict]:
        """One row per logged training step (without the end-of-training summary row)."""
        return [m for m in self.metrics if "loss" in m and not m.get("summary")]

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @classmethod
    def open(cls, path) -> "Run":
        path = Path(path)
        if not (path / "config.yaml").is_file():
            hint = ""
            if work_dir(path).is_dir():
                hint = f"; the run was interrupted: resume it with `seektune train --resume --output {path}`"
            raise SeektuneError(f"{path} is not a seektune run folder (no config.yaml){hint}")
        from seektune.config import load_config

        cfg = load_config(path / "config.yaml")
        info_file = path / "run.json"
        info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
        return cls(path, cfg, complete=not path.name.endswith(INCOMPLETE), info=info)
