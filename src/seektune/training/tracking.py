"""Experiment trackers through the Trainer's own integrations (`train.report_to`), kept local:

- tensorboard: event files in RUN/tensorboard (set in training/run.py);
- swanlab: offline mode (no account, no network) with its log in RUN/swanlog; `swanlab sync RUN/swanlog/run-*`
  uploads it later. An explicit SWANLAB_MODE (cloud, local with swanlab[dashboard]) is respected;
- wandb: WANDB_MODE=offline unless set, files in RUN/wandb (`wandb sync` later);
- mlflow: a file store in RUN/mlruns unless MLFLOW_TRACKING_URI is set.

metrics.jsonl is written whatever is chosen.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import resource
import sys
from pathlib import Path

from seektune.errors import ConfigError
from seektune.run_folder import INCOMPLETE

PACKAGES = {"tensorboard": "tensorboard", "swanlab": "swanlab", "wandb": "wandb", "mlflow": "mlflow"}
# Values we put in the environment, so that a later run in the same process gets its own folder while a
# value the user exported is left alone.
_ours: dict[str, str] = {}


def _set(name: str, value: str) -> None:
    current = os.environ.get(name)
    if current is not None and current != _ours.get(name):
        return  # exported by the user: their choice wins
    os.environ[name] = value
    _ours[name] = value


def run_display_name(work: Path) -> str:
    return work.name.removesuffix(INCOMPLETE)


def configure_trackers(report_to: list[str], work: Path) -> None:
    for name in report_to:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            extra = f"pip install 'seektune[{name}]'" if name in ("tensorboard", "swanlab") else f"pip install {name}"
            raise ConfigError(f"train.report_to includes {name}, but the {name} package is not installed: {extra}")
    if "swanlab" in report_to:
        _set("SWANLAB_MODE", "offline")
        _set("SWANLAB_LOG_DIR", str(work / "swanlog"))  # always inside the run folder
        _set("SWANLAB_INTERACTIVE", "false")  # never prompt for a login
        _start_swanlab(work)
    if "wandb" in report_to:
        _set("WANDB_MODE", "offline")
        _set("WANDB_DIR", str(work))
        _set("WANDB_PROJECT", "seektune")
    if "mlflow" in report_to:
        _set("MLFLOW_TRACKING_URI", (work / "mlruns").resolve().as_uri())
        _set("MLFLOW_EXPERIMENT_NAME", "seektune")


def _start_swanlab(work: Path) -> None:
    """Open the SwanLab run ourselves: transformers 5.23's callback asks `swanlab.get_run()`, which raises
    in swanlab 0.10 when no run is open; with one open, the callback logs into it."""
    import swanlab

    if swanlab.has_run():
        swanlab.finish()
    swanlab.init(mode=os.environ["SWANLAB_MODE"], log_dir=os.environ["SWANLAB_LOG_DIR"],
                 project=os.environ.get("SWANLAB_PROJECT") or "seektune", name=run_display_name(work))


def _finish_open_runs() -> None:
    # The Trainer's SwanLab and wandb callbacks leave their run open; close it so that the log is complete
    # when the run folder is published, and a next run in this process starts its own.
    swanlab, wandb = sys.modules.get("swanlab"), sys.modules.get("wandb")
    try:
        if swanlab is not None and swanlab.has_run():
            swanlab.finish()
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()
    except Exception as e:  # a tracker failing to close must not lose the trained adapter
        print(f"warning: closing the tracker run failed: {e}", file=sys.stderr)


def peak_memory() -> dict:
    """Peak accelerator memory of this process (CUDA), or its peak resident set size on CPU."""
    import torch

    if torch.cuda.is_available():
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated()),
                "peak_memory_reserved_bytes": int(torch.cuda.max_memory_reserved()),
                "peak_memory_kind": "cuda max allocated"}
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_bytes": int(rss if sys.platform == "darwin" else rss * 1024),
            "peak_memory_kind": "cpu max resident set (whole process)"}


def system_details() -> dict:
    import torch

    d = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        import seektune

        d["seektune"] = seektune.__version__
    except Exception:
        pass
    if torch.cuda.is_available():
        d["cuda"] = torch.version.cuda
        d["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        d["gpu_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
    return d


def after_training() -> dict:
    """Close tracker runs; peak memory and system details for run.json."""
    _finish_open_runs()
    return {**peak_memory(), "system_details": system_details()}
