"""A full disk while a checkpoint is written: a clear error, the previous checkpoint intact, no partial folder
left behind; after space is freed, --resume finishes the run. A real full disk: a small tmpfs mounted here."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from safetensors.torch import load_file

import seektune
from seektune.run_folder import last_checkpoint
from seektune.training.trainer import CheckpointWriteError
from tests.reliability.conftest import alpaca_records, tiny_config, write_json


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip()}); run as root to test a real full disk")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _remount(mnt, size: str):
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(small_disk, tmp_path, tiny_llama):
    data = write_json(tmp_path / "data.json", alpaca_records(24))
    # Measure one checkpoint on a roomy disk first, then size the disk for the run folder plus 1.5 checkpoints.
    probe = seektune.train(tiny_config(tiny_llama, data, tmp_path / "probe", max_steps=2, save_steps=2))
    ckpt = sum(f.stat().st_size for f in (probe.path / "checkpoints" / "checkpoint-2").rglob("*") if f.is_file())
    out = small_disk / "run"
    cfg = tiny_config(tiny_llama, data, out, max_steps=6, save_steps=2, save_total_limit=3)
    _remount(small_disk, str(int(ckpt * 1.6) + 256 * 1024))

    with pytest.raises(CheckpointWriteError) as ei:
        seektune.train(cfg)
    msg = str(ei.value)
    work = small_disk / "run.incomplete"
    assert "could not write checkpoint-4" in msg and "the disk is full" in msg, msg
    assert f"the previous checkpoint {work / 'checkpoints' / 'checkpoint-2'} is intact" in msg, msg
    assert "--resume" in msg
    names = sorted(p.name for p in (work / "checkpoints").iterdir())
    assert names == ["checkpoint-2"], names  # no partial checkpoint-4, no staging folder
    prev = work / "checkpoints" / "checkpoint-2"
    assert last_checkpoint(work) == prev
    assert json.loads((prev / "trainer_state.json").read_text())["global_step"] == 2
    load_file(str(prev / "adapter_model.safetensors"))

    # Free space, resume: the run finishes from checkpoint-2.
    _remount(small_disk, "64m")
    run = seektune.train(cfg, resume=True)
    assert run.complete and run.info["global_step"] == 6
    assert run.info["resumed_from"].endswith("checkpoint-2")
    shutil.rmtree(run.path)  # keep the tmpfs unmountable without leftovers


LIMITED_RUN = """
import json, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing us
import seektune
from transformers import TrainerCallback

class LimitAfterFirstSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

try:
    seektune.train(json.loads(sys.argv[1]), callbacks=[LimitAfterFirstSave()])
except Exception as e:
    print("ERROR", type(e).__name__, e)
"""


def test_a_write_that_fails_mid_checkpoint_keeps_the_previous_one(tmp_path, tiny_llama):
    """Without root (no tmpfs): a real EFBIG from RLIMIT_FSIZE, set after the first checkpoint, in a child process."""
    import sys

    from tests.processes import child_env

    data = write_json(tmp_path / "data.json", alpaca_records(24))
    cfg = tiny_config(tiny_llama, data, tmp_path / "run", max_steps=6, save_steps=2)
    p = subprocess.run([sys.executable, "-c", LIMITED_RUN, json.dumps(cfg)], capture_output=True, text=True,
                       env=child_env(), timeout=300)
    out = " ".join(p.stdout.split())
    assert "ERROR CheckpointWriteError could not write checkpoint-4" in out, p.stdout + p.stderr
    assert "ulimit -f" in out and "checkpoint-2 is intact" in out
    work = tmp_path / "run.incomplete"
    assert sorted(x.name for x in (work / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert last_checkpoint(work).name == "checkpoint-2"
    load_file(str(work / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors"))
