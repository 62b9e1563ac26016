"""Out of memory inside a training step: the run stops with the settings to change and the estimated need,
and keeps its checkpoints. The trigger is a real torch.OutOfMemoryError raised from within a training step
(a Trainer callback), since this machine has no GPU to exhaust."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

import seektune
from seektune.run_folder import last_checkpoint
from seektune.training.guards import OutOfMemory
from tests.reliability.conftest import alpaca_records, tiny_config, write_json


class OutOfMemoryAtStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_names_the_settings_and_keeps_checkpoints(tmp_path, tiny_llama):
    data = write_json(tmp_path / "d.json", alpaca_records(16))
    cfg = tiny_config(tiny_llama, data, tmp_path / "run", max_steps=6, save_steps=2)
    with pytest.raises(OutOfMemory) as ei:
        seektune.train(cfg, callbacks=[OutOfMemoryAtStep(3)])
    msg = str(ei.value)
    assert "out of memory at step 3 (CUDA out of memory. Tried to allocate 2.00 GiB)" in msg
    assert "estimated to need" in msg and "LoRA + optimizer" in msg
    for setting in ("train.per_device_batch_size (now 2)", "train.gradient_accumulation (now 1)",
                    "train.gradient_checkpointing=true", "data.max_length (now 64)", "4-bit", "--resume"):
        assert setting in msg, (setting, msg)
    work = tmp_path / "run.incomplete"
    assert last_checkpoint(work).name == "checkpoint-2"
