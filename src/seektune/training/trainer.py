"""The transformers Trainer with what long runs need to survive: atomic checkpoints, and steps with a
non-finite loss or gradient skipped (no optimizer update), counted, and traced back to their records.

Atomic checkpoints: transformers 5 writes `checkpoint-N/` file by file in place and the resume logic
trusts any folder with a `trainer_state.json`, so a crash or a full disk mid-save can leave a broken
newest checkpoint -- and its rotation may already have deleted the good ones. Here each checkpoint is
written into `checkpoints/.saving/checkpoint-N/`, flushed to disk, then renamed into place (a rename
within one filesystem is atomic), and only then are old checkpoints rotated away.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from seektune.errors import SeektuneError
from seektune.training.paths import safe_join

SAMPLE_IDS = "seektune_sample_ids"  # travels with each batch so a bad step can name its records
STAGING = ".saving"


class CheckpointWriteError(SeektuneError):
    pass


class NonFiniteTrainingError(SeektuneError):
    pass


class _WithIds(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = dict(self.dataset[i])
        item[SAMPLE_IDS] = i
        return item


class _CollateWithIds:
    def __init__(self, inner):
        self.inner = inner

    def __call__(self, features):
        ids = [f.pop(SAMPLE_IDS, -1) for f in features]
        batch = self.inner(features)
        batch[SAMPLE_IDS] = ids
        return batch


class NonFiniteGuard(TrainerCallback):
    """Drops the update of any step whose loss or gradient is NaN/Inf; stops after `max_bad_steps` in a row."""

    def __init__(self, max_bad_steps: int, sources: Optional[list[str]] = None, metrics_path=None):
        self.max_bad_steps = max_bad_steps
        self.sources = sources or []
        self.metrics_path = Path(metrics_path) if metrics_path else None
        self.total = 0
        self.consecutive = 0
        self.stopped_at: Optional[int] = None
        self.bad_records: list[str] = []
        self._step_ids: list[int] = []
        self._loss_bad = False
        self._reason: Optional[str] = None

    # called by the trainer for every micro-batch
    def saw_batch(self, ids, loss) -> None:
        self._step_ids += [i for i in (ids or []) if i >= 0]
        if loss is not None and not torch.isfinite(loss.detach()).all():
            self._loss_bad = True

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_ids, self._loss_bad, self._reason = [], False, None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
        grads_bad = any(not torch.isfinite(p.grad).all() for p in params)
        if self._loss_bad or grads_bad:
            self._reason = "non-finite loss" if self._loss_bad else "non-finite gradient"
            for p in params:
                p.grad = None  # the optimizer skips parameters without a gradient: no update at all

    def on_step_end(self, args, state, control, **kwargs):
        if self._reason is None:
            self.consecutive = 0
            return control
        self.total += 1
        self.consecutive += 1
        control.should_save = False  # the newest checkpoint stays the last good step's
        records = [self.sources[i] if i < len(self.sources) else f"sample {i}" for i in sorted(set(self._step_ids))]
        self.bad_records += [r for r in records if r not in self.bad_records]
        if self.metrics_path is not None:
            row = {"step": state.global_step, "skipped_step": self._reason, "skipped_steps_total": self.total,
                   "records": records}
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"step {state.global_step}: {self._reason}; update skipped ({self.consecutive} in a row, "
              f"{self.total} in total)", flush=True)
        if self.consecutive >= self.max_bad_steps:
            self.stopped_at = state.global_step
            control.should_training_stop = True
        return control

    def message(self, last_good: Optional[Path], cfg) -> str:
        listed = ", ".join(self.bad_records[:10]) + (" ..." if len(self.bad_records) > 10 else "")
        where = f"The last good checkpoint is {last_good}." if last_good else "No checkpoint was saved before this."
        return (
            f"training stopped at step {self.stopped_at}: {self.consecutive} steps in a row had a non-finite "
            f"(NaN/Inf) loss or gradient, and their updates were skipped ({self.total} skipped in all, listed in "
            f"metrics.jsonl). {where} To fix: lower train.learning_rate (now {cfg.train.learning_rate:g}); check the "
            f"records of the bad steps: {listed or 'none recorded'}; use bf16 instead of fp16 (fp16 overflows "
            f"above 65504); then start again, or continue with --resume"
        )


class SeektuneTrainer(Trainer):
    def __init__(self, *args, max_bad_steps: int = 5, sample_sources=None, metrics_path=None, **kwargs):
        if kwargs.get("train_dataset") is not None:
            kwargs["train_dataset"] = _WithIds(kwargs["train_dataset"])
            kwargs["data_collator"] = _CollateWithIds(kwargs["data_collator"])
        super().__init__(*args, **kwargs)
        self.guard = NonFiniteGuard(max_bad_steps, sample_sources, metrics_path)
        self.add_callback(self.guard)
        self._staging_root: Optional[str] = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        ids = inputs.pop(SAMPLE_IDS, None)
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.guard.saw_batch(ids, loss)
        return loss

    def prediction_step(self, model, inputs, *args, **kwargs):
        inputs.pop(SAMPLE_IDS, None)
        return super().prediction_step(model, inputs, *args, **kwargs)

    # ---- atomic checkpoints ---------------------------------------------------------------------
    def _get_output_dir(self, trial):
        if self._staging_root is not None:
            return self._staging_root
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        root = self.args.output_dir
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        final = safe_join(root, name)
        staging = os.path.join(root, STAGING)
        shutil.rmtree(staging, ignore_errors=True)  # a save that crashed earlier
        os.makedirs(staging)
        self._staging_root = staging
        try:
            super()._save_checkpoint(model, trial)
            written = os.path.join(staging, name)
            _fsync_tree(written)
            if os.path.exists(final):  # the same step saved twice (a stop request on a save step)
                os.replace(final, os.path.join(staging, name + ".old"))
            os.replace(written, final)
            _fsync_dir(root)
        except Exception as e:
            raise CheckpointWriteError(_save_failure(e, root, name)) from e
        finally:
            self._staging_root = None
            shutil.rmtree(staging, ignore_errors=True)
        rotate_checkpoints(root, self.args.save_total_limit, self.state.best_model_checkpoint, use_mtime=False)


def _fsync_tree(folder: str) -> None:
    for dirpath, _, files in os.walk(folder):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(dirpath)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory
    finally:
        os.close(fd)


def _save_failure(e: Exception, root: str, name: str) -> str:
    from seektune.run_folder import last_checkpoint

    shutil.rmtree(os.path.join(root, STAGING), ignore_errors=True)
    prev = last_checkpoint(Path(root).parent)
    free = shutil.disk_usage(root).free
    err_no = getattr(e, "errno", None)
    if "No space left" in str(e) or "StorageFull" in str(e) or err_no == errno.ENOSPC or free < 1 << 20:
        what = "the disk is full"
    elif err_no == errno.EFBIG or "File too large" in str(e):
        what = "a file grew past the size this process may write (ulimit -f)"
    else:
        what = f"{type(e).__name__}: {e}"
    kept = f"the previous checkpoint {prev} is intact" if prev else "no earlier checkpoint exists"
    return (
        f"could not write {name} in {root}: {what} ({free / 2**20:.0f} MiB free). The partial checkpoint was "
        f"removed; {kept}. Free some space (or lower train.save_total_limit), then continue with "
        f"seektune train --resume --output <the run's folder>"
    )


def discard_partial_checkpoints(work: Path) -> list[str]:
    """Before resuming: remove checkpoint folders that were never completed (and any leftover staging)."""
    removed = []
    ckpts = Path(work) / "checkpoints"
    if not ckpts.is_dir():
        return removed
    for p in sorted(ckpts.iterdir()):
        partial = p.name == STAGING or (
            p.name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and p.is_dir() and not (p / "trainer_state.json").is_file()
        )
        if partial and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed
