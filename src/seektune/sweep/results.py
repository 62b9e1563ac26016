"""One results JSON per run, after PEFT's method_comparison convention: run_info, train_info
(time, peak memory, trainable parameters, final/best losses, the logged curve), eval_info, meta_info.

Built from the run folder's own files (run.json, metrics.jsonl, adapter_config.json), so it can be
rebuilt for any finished run."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Optional

from seektune.run_folder import Run
from seektune.training.tracking import peak_memory  # noqa: F401  (used by the worker)


def _finite(xs):
    return [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]


def curve_summary(run: Run) -> dict:
    rows = run.step_metrics
    losses = [m["loss"] for m in rows]
    evals = [m["eval_loss"] for m in run.metrics if "eval_loss" in m]
    speeds = _finite(m.get("tokens_per_second") for m in rows)
    summary = next((m for m in run.metrics if m.get("summary")), {})
    fl, fe = _finite(losses), _finite(evals)
    return {
        "final_train_loss": losses[-1] if losses else None,
        "best_train_loss": min(fl) if fl else None,
        "final_eval_loss": evals[-1] if evals else None,
        "best_eval_loss": min(fe) if fe else None,
        "train_loss_mean": summary.get("train_loss"),
        "tokens_per_second": round(sum(speeds) / len(speeds), 1) if speeds else None,
        "logged_steps": len(rows),
    }


def build_results(run: Run, name: str, sweep: Optional[str], overrides: dict, peak: Optional[dict],
                  eval_info: Optional[dict], total_time: float, previous_seconds: float = 0.0,
                  error: str = "") -> dict:
    info = run.info
    adapter_cfg = run.path / "adapter" / "adapter_config.json"
    train_info = {
        "status": info.get("status", "unknown"),
        "train_time": round(float(info.get("seconds", 0.0)) + previous_seconds, 1),
        "global_step": info.get("global_step"),
        "max_steps": info.get("max_steps"),
        "num_trainable_params": info.get("trainable_parameters"),
        "num_total_params": info.get("total_parameters"),
        "resumed_from": info.get("resumed_from"),
        **(peak or {k: v for k, v in info.items() if k.startswith("peak_memory")}),
        **curve_summary(run),
        "metrics": run.metrics,
    }
    return {
        "run_info": {
            "created_at": datetime.now().isoformat(timespec="seconds"),
            "total_time": round(total_time + previous_seconds, 1),
            "experiment_name": name,
            "sweep": sweep,
            "overrides": overrides,
            "run_folder": str(run.path),
            "train_config": run.config.model_dump(mode="json"),
            "peft_config": json.loads(adapter_cfg.read_text(encoding="utf-8")) if adapter_cfg.is_file() else None,
            "error_msg": error,
        },
        "train_info": train_info,
        "eval_info": eval_info or {},
        "meta_info": {
            "base_model": info.get("base_model"),
            "precision": info.get("precision"),
            "system": info.get("system", {}),
        },
    }


def read_results(folder: Path) -> Optional[dict]:
    f = Path(folder) / "results.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # a results file cut short by a crash: rebuilt on the next sweep
