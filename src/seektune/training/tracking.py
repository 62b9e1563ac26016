"""Experiment trackers through the Trainer's own integrations (`train.report_to`), kept local:

- tensorboard: event files in RUN/tensorboard (set in training/run.py);
- swanlab: offline mode (no account, no network) with its log in RUN/swanlog; `swanlab sync RUN/swanlog/run-*`
  uploads it later. An explicit SWANLAB_MODE (cloud, local with swanlab[dashboard]) is respected;
- wandb: WANDB_MODE=offline unless set, files in RUN/wandb (`wandb sync RUN/wandb/offline-run-*` later),
  no error reports sent;
- mlflow: a file store in RUN/mlruns unless MLFLOW_TRACKING_URI is set. MLflow 3 keeps its file store only
  behind MLFLOW_ALLOW_FILE_STORE=true (a database is its new default); a file store needs no server and no
  database package, and stays inside the run folder. MLflow's usage telemetry is off.

Every tracker's run also gets seektune's system details and config (`add_run_details`).
metrics.jsonl is written whatever is chosen.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import resource
import sys
from pathlib import Path

from transformers import TrainerCallback

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
            raise ConfigError(f"train.report_to includes {name}, but the {name} package is not installed: "
                              f"pip install 'seektune[{name}]'")
    _finish_open_runs()  # a run left open by an earlier failed training in this process would get our metrics
    if "swanlab" in report_to:
        _set("SWANLAB_MODE", "offline")
        _set("SWANLAB_LOG_DIR", str(work / "swanlog"))  # always inside the run folder
        _set("SWANLAB_INTERACTIVE", "false")  # never prompt for a login
        _start_swanlab(work)
    if "wandb" in report_to:
        _set("WANDB_MODE", "offline")
        _set("WANDB_DIR", str(work))
        _set("WANDB_PROJECT", "seektune")
        _set("WANDB_ERROR_REPORTING", "false")  # offline means offline: no crash reports from wandb's service
    if "mlflow" in report_to:
        _set("MLFLOW_TRACKING_URI", (work / "mlruns").resolve().as_uri())
        _set("MLFLOW_EXPERIMENT_NAME", "seektune")
        _set("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow 3 sends usage telemetry unless told not to
        if os.environ["MLFLOW_TRACKING_URI"] == _ours.get("MLFLOW_TRACKING_URI"):
            _set("MLFLOW_ALLOW_FILE_STORE", "true")  # only for our own file store, not a URI the user chose


def _start_swanlab(work: Path) -> None:
    """Open the SwanLab run ourselves: transformers 5.23's callback asks `swanlab.get_run()`, which raises
    in swanlab 0.10 when no run is open; with one open, the callback logs into it."""
    import swanlab

    if swanlab.has_run():
        swanlab.finish()
    swanlab.init(mode=os.environ["SWANLAB_MODE"], log_dir=os.environ["SWANLAB_LOG_DIR"],
                 project=os.environ.get("SWANLAB_PROJECT") or "seektune", name=run_display_name(work))


def _open_trackers() -> dict:
    """The tracker modules this process has imported that have a run open now, by name."""
    swanlab, wandb, mlflow = (sys.modules.get(m) for m in ("swanlab", "wandb", "mlflow"))
    found = {}
    if swanlab is not None and swanlab.has_run():
        found["swanlab"] = swanlab
    if wandb is not None and getattr(wandb, "run", None) is not None:
        found["wandb"] = wandb
    if mlflow is not None and hasattr(mlflow, "active_run") and mlflow.active_run() is not None:
        found["mlflow"] = mlflow
    return found


def _finish_open_runs(failed: bool = False) -> None:
    # The Trainer's SwanLab and wandb callbacks leave their run open (MLflow's too when training fails);
    # close it so that the log is complete when the run folder is published, and a next run in this
    # process starts its own.
    try:
        trackers = _open_trackers()
        if "swanlab" in trackers:
            trackers["swanlab"].finish(state="crashed") if failed else trackers["swanlab"].finish()
        if "wandb" in trackers:
            trackers["wandb"].finish(exit_code=1 if failed else 0)
        if "mlflow" in trackers:
            trackers["mlflow"].end_run(status="FAILED" if failed else "FINISHED")
    except Exception as e:  # a tracker failing to close must not lose the trained adapter
        print(f"warning: closing the tracker run failed: {e}", file=sys.stderr)


def close_after_failure() -> None:
    """Mark the trackers' open runs as failed and close them (training raised)."""
    _finish_open_runs(failed=True)


class RunDetails(TrainerCallback):
    """Puts seektune's system details and config into each tracker's run: the Trainer's integrations log
    only its own arguments and the model config. Added after them, so their runs are open by then."""

    def __init__(self, details: dict, tensorboard_callback=None):
        self.details = details
        self.tensorboard = tensorboard_callback

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        try:
            self._record()
        except Exception as e:  # a tracker refusing extra fields must not stop training
            print(f"warning: recording the run details in a tracker failed: {e}", file=sys.stderr)

    def _record(self) -> None:
        seektune = {"seektune": self.details}
        trackers = _open_trackers()
        if "wandb" in trackers:
            trackers["wandb"].run.config.update(seektune, allow_val_change=True)
        if "mlflow" in trackers:
            mlflow = trackers["mlflow"]
            limit = mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
            params = {k: v for k, v in _flat(seektune).items() if len(v) <= limit}  # too long: still in run.json
            items = sorted(params.items())
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params per call
                mlflow.log_params(dict(items[i:i + 100]))
        if "swanlab" in trackers:
            trackers["swanlab"].config.update(seektune)
        if self.tensorboard is not None and getattr(self.tensorboard, "tb_writer", None) is not None:
            self.tensorboard.tb_writer.add_text("seektune", json.dumps(self.details, indent=2))
            self.tensorboard.tb_writer.flush()


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return out


def add_run_details(trainer, config: dict, system: dict) -> None:
    """Have every tracker of `trainer` record seektune's config and system details (device, versions)."""
    if not trainer.args.report_to:
        return
    from transformers.integrations import TensorBoardCallback

    tensorboard = next((c for c in trainer.callback_handler.callbacks if isinstance(c, TensorBoardCallback)), None)
    trainer.add_callback(RunDetails({"system": {**system, **system_details()}, "config": config}, tensorboard))


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
