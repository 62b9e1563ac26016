"""A sweep stopped in the middle (SIGTERM to the `seektune sweep` process while its second run trains)
resumes: the finished run is skipped, the interrupted one continues from its checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import yaml

from seektune.sweep.runner import run_sweep
from tests.conftest import shared
from tests.processes import child_env, signal_when_file_appears


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    spec = {
        "base": {"data": {"datasets": [{"path": str(shared("alpaca_en_demo/alpaca_en_demo.json")), "max_records": 24}],
                          "max_length": 64, "holdout_prompts": 0},
                 "lora": {"dropout": 0.0, "r": 4},
                 "train": {"per_device_batch_size": 2, "save_steps": 2, "learning_rate": 1e-3}},
        "output": "out",
        "runs": [{"name": "short", "train.max_steps": 2}, {"name": "long", "train.max_steps": 8}],
    }
    f = d / "sweep.yaml"
    f.write_text(yaml.safe_dump(spec))
    out = d / "out"
    marker = out / "long.incomplete" / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    log = d / "first.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "seektune.cli", "sweep", str(f)], stdout=fh,
                                stderr=subprocess.STDOUT, env=child_env(), cwd=d)
        rc = signal_when_file_appears(proc, marker, signal.SIGTERM, log, timeout_s=400)  # run `long`'s checkpoint-2
    return f, out, rc, log.read_text(errors="replace")


def test_stopped_sweep_leaves_a_resumable_state(stopped):
    f, out, rc, text = stopped
    assert rc == 130, text[-3000:]
    status = json.loads((out / "sweep.json").read_text())["runs"]
    assert status["short"]["status"] == "finished" and status["long"]["status"] == "interrupted"
    assert (out / "short" / "results.json").is_file()
    assert (out / "long.incomplete" / "checkpoints").is_dir() and not (out / "long").exists()
    assert f"seektune sweep {f}" in " ".join(text.split())  # tells how to resume


def test_rerun_resumes_the_interrupted_run_and_skips_the_finished_one(stopped):
    f, out, rc, _ = stopped
    short_stamp = (out / "short" / "results.json").stat().st_mtime_ns
    info = json.loads((out / "long.incomplete" / "run.json").read_text())
    stopped_at = info["global_step"]
    assert 2 <= stopped_at < 8 and info["status"] == "interrupted by SIGTERM"
    result = run_sweep(f)
    assert result.statuses == {"short": "finished", "long": "finished"} and not result.failed
    assert (out / "short" / "results.json").stat().st_mtime_ns == short_stamp  # not retrained
    res = json.loads((out / "long" / "results.json").read_text())
    ti = res["train_info"]
    assert ti["status"] == "complete" and ti["global_step"] == 8
    assert ti["resumed_from"].endswith(f"checkpoint-{stopped_at}")
    steps = [m["step"] for m in ti["metrics"] if "loss" in m and not m.get("summary")]
    assert steps[-1] == 8 and set(range(1, 9)) <= set(steps)
    assert ti["train_time"] >= info["seconds"]  # the interrupted part counts too
    job = json.loads((out / "jobs" / "long.json").read_text())
    assert job["mode"] == "resume"
