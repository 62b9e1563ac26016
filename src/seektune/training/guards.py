"""Turning an out-of-memory crash into the settings to change."""

from __future__ import annotations

import torch

from seektune.errors import SeektuneError


class OutOfMemory(SeektuneError):
    pass


def out_of_memory_error(err: BaseException, cfg, estimate, step: int, checkpointing=None) -> OutOfMemory:
    from seektune.training.preflight import oom_advice

    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # so that what follows (saving run.json, the message) can still allocate
    need = f" The run was estimated to need {estimate.line().removeprefix('estimated memory: ')}." if estimate else ""
    first = str(err).strip().splitlines()[0] if str(err).strip() else "out of memory"
    return OutOfMemory(
        f"out of memory at step {step} ({first}).{need} {oom_advice(cfg, checkpointing)}. Checkpoints saved so far are kept: "
        "change the settings and continue with --resume (train.* settings may change on resume)"
    )
