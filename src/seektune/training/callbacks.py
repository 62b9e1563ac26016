"""Trainer callbacks: metrics.jsonl, readable console lines, and clean stops on SIGINT/SIGTERM."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

KEEP = ("loss", "grad_norm", "learning_rate", "eval_loss", "epoch")


class MetricsLogger(TrainerCallback):
    """Appends one JSON line per logging step: loss, grad norm, learning rate, tokens/s (real tokens only)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._last = None  # (time, tokens seen)

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = (time.perf_counter(), state.num_input_tokens_seen)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        row = {"step": state.global_step}
        row.update({k: logs[k] for k in KEEP if k in logs})
        now, seen = time.perf_counter(), state.num_input_tokens_seen
        if "loss" in logs and self._last is not None:
            dt = now - self._last[0]
            if dt > 0 and seen > self._last[1]:
                row["tokens_per_second"] = round((seen - self._last[1]) / dt, 1)
            self._last = (now, seen)
        if "train_loss" in logs:  # the Trainer's end-of-training summary (speed metrics come with every log)
            row.update({k: logs[k] for k in ("train_runtime", "train_loss") if k in logs})
            row["summary"] = True
        if len(row) > 1:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        state.seektune_last_row = row  # read by the console line below


class ConsoleProgress(ProgressCallback):
    """The Trainer's progress bar, with one readable line per log instead of a raw dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None:
            return
        row = getattr(state, "seektune_last_row", None) or {}
        parts = [f"step {state.global_step}/{state.max_steps}"]
        for key, label, fmt in (
            ("loss", "loss", "{:.4f}"),
            ("eval_loss", "eval_loss", "{:.4f}"),
            ("grad_norm", "grad_norm", "{:.3f}"),
            ("learning_rate", "lr", "{:.2e}"),
            ("tokens_per_second", "tok/s", "{:.0f}"),
        ):
            value = row.get(key, (logs or {}).get(key))
            if isinstance(value, (int, float)):
                parts.append(f"{label} " + fmt.format(value))
        if len(parts) > 1 and "summary" not in row:
            self.training_bar.write("  ".join(parts))


class StopOnSignal(TrainerCallback):
    """SIGINT/SIGTERM: finish the current step, save a checkpoint, and stop (a second Ctrl-C aborts)."""

    def __init__(self):
        self.requested: str | None = None
        self._previous = {}

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return self

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(f"\n{self.requested} received: saving a checkpoint after this step, then stopping "
              "(press Ctrl-C again to abort without saving)", flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control
