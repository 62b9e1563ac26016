"""SIGKILL a real training process after a checkpoint exists, plant the debris of a save that never finished,
and `--resume`: training continues from the last complete checkpoint and ends with the same adapter as a run
that was never interrupted (same seed)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

import seektune
from tests.processes import child_env, seektune_cmd, signal_when_file_appears
from tests.reliability.conftest import alpaca_records, tiny_config, write_json

MAX_STEPS, SAVE_STEPS = 12, 3
ADAPTER = "adapter/adapter_model.safetensors"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llama):
    d = tmp_path_factory.mktemp("kill")
    data = write_json(d / "data.json", alpaca_records(40))
    cfg = tiny_config(tiny_llama, data, d / "killed", max_steps=MAX_STEPS, save_steps=SAVE_STEPS, save_total_limit=2)
    cfg_file = d / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    return d, cfg


@pytest.fixture(scope="module")
def reference(setup):
    d, cfg = setup
    return seektune.train(dict(cfg, output=str(d / "reference")))


@pytest.fixture(scope="module")
def killed(setup):
    """(work folder, the step of the newest complete checkpoint at the kill, the child's log)."""
    d, _ = setup
    work = d / "killed.incomplete"
    log = d / "killed.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(seektune_cmd("train", d / "config.yaml"), stdout=fh, stderr=subprocess.STDOUT,
                                env=child_env(), cwd=d)
        marker = work / "checkpoints" / f"checkpoint-{2 * SAVE_STEPS}" / "trainer_state.json"
        rc = signal_when_file_appears(proc, marker, signal.SIGKILL, log, timeout_s=240, poll_s=0.05, wait_s=60)
    assert rc == -signal.SIGKILL
    steps = sorted(int(p.name.split("-")[1]) for p in (work / "checkpoints").glob("checkpoint-*"))
    return work, max(steps), log.read_text()


def test_sigkill_leaves_complete_checkpoints_only(killed):
    work, last, _ = killed
    assert last >= 2 * SAVE_STEPS and last < MAX_STEPS
    for p in (work / "checkpoints").glob("checkpoint-*"):
        # every checkpoint folder that exists is whole: it only appears by a rename after it was written
        assert (p / "trainer_state.json").is_file() and (p / "adapter_model.safetensors").is_file()
        assert (p / "optimizer.pt").is_file() and (p / "rng_state.pth").is_file()
        load_file(str(p / "adapter_model.safetensors"))
    assert not (work / "adapter").exists()


def test_resume_after_sigkill_and_a_half_written_checkpoint_matches_an_uninterrupted_run(setup, killed, reference):
    d, _ = setup
    work, last, _ = killed
    # Debris of a save that crashed: a newer checkpoint folder without its state file, and a staging folder.
    half = work / "checkpoints" / "checkpoint-99"
    half.mkdir()
    good = (work / "checkpoints" / f"checkpoint-{last}" / "adapter_model.safetensors").read_bytes()
    (half / "adapter_model.safetensors").write_bytes(good[: len(good) // 3])
    staging = work / "checkpoints" / ".saving" / "checkpoint-100"
    staging.mkdir(parents=True)
    (staging / "optimizer.pt").write_bytes(b"\0" * 100)

    p = subprocess.run(seektune_cmd("train", d / "config.yaml", "--resume"), capture_output=True, text=True,
                       env=child_env(), cwd=d, timeout=300)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log
    assert "removed the incomplete checkpoint checkpoint-99" in log
    out = d / "killed"
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["global_step"] == MAX_STEPS
    assert info["resumed_from"].endswith(f"checkpoint-{last}")
    steps = [r["step"] for r in seektune.run_folder.Run.open(out).step_metrics]
    assert steps[last:] == list(range(last + 1, MAX_STEPS + 1))  # continued at last+1: nothing repeated or lost

    ref = load_file(str(reference.path / ADAPTER))
    got = load_file(str(out / ADAPTER))
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.allclose(ref[k], got[k], rtol=1e-4, atol=1e-6), (k, float((ref[k] - got[k]).abs().max()))
    # and the adapter actually trained (lora_B left zero would make any two runs "equal")
    assert max(float(v.abs().max()) for k, v in got.items() if "lora_B" in k) > 1e-4


def test_sigterm_saves_the_current_step_and_exits_130(setup, tmp_path):
    """What a cluster scheduler sends before it kills a job: the step in progress is finished and saved."""
    d, cfg = setup
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(dict(cfg, output=str(tmp_path / "term"))))
    work = tmp_path / "term.incomplete"
    proc = subprocess.Popen(seektune_cmd("train", cfg_file), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=child_env(), cwd=tmp_path, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (work / "checkpoints" / f"checkpoint-{SAVE_STEPS}" / "trainer_state.json").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        log, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, log
    assert "SIGTERM received" in log and "--resume" in log
    info = json.loads((work / "run.json").read_text())
    assert info["status"] == "interrupted by SIGTERM"
    assert (work / "checkpoints" / f"checkpoint-{info['global_step']}" / "trainer_state.json").is_file()
