"""Ctrl-C during training saves a checkpoint and leaves `<out>.incomplete/`; `--resume` continues from it.

Real `seektune` processes and real signals on the embedded SmolLM2."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from seektune.cli import main as cli_main
from seektune.run_folder import Run
from tests.conftest import shared
from tests.processes import child_env, seektune_cmd, signal_when_file_appears

MAX_STEPS = 12
SAVE_STEPS = 4


def _log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _cli(capsys, *args) -> tuple[int, str]:
    """The same entry point as the `seektune` script, in this process (for the fast error paths)."""
    with pytest.raises(SystemExit) as e:
        cli_main([str(a) for a in args])
    cap = capsys.readouterr()
    return e.value.code, cap.out + cap.err


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("resume")
    cfg = {
        "data": {"datasets": [{"path": str(shared("alpaca_en_demo/alpaca_en_demo.json")), "max_records": 64}],
                 "max_length": 128, "holdout_prompts": 0},
        "lora": {"dropout": 0.0},
        "train": {"max_steps": MAX_STEPS, "save_steps": SAVE_STEPS, "per_device_batch_size": 2, "logging_steps": 1},
    }
    f = d / "config.yaml"
    f.write_text(yaml.safe_dump(cfg))
    return f


@pytest.fixture(scope="module")
def interrupted(config_file):
    """Start a run, wait for its first checkpoint, send SIGINT: (out folder, exit code, log, checkpoint step)."""
    out = config_file.parent / "run"
    work = out.with_name("run.incomplete")
    log = config_file.parent / "first.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(seektune_cmd("train", config_file, "--output", out), stdout=fh, stderr=subprocess.STDOUT,
                                env=child_env(), cwd=config_file.parent)
        marker = work / "checkpoints" / f"checkpoint-{SAVE_STEPS}" / "trainer_state.json"
        rc = signal_when_file_appears(proc, marker, signal.SIGINT, log, timeout_s=180, poll_s=0.2, wait_s=120)
    return out, rc, _log(log)


def _ckpt_steps(work: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (work / "checkpoints").glob("checkpoint-*")
                  if (p / "trainer_state.json").is_file())


def _loss_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in Run.open(run_dir).step_metrics]


def test_sigint_saves_a_checkpoint_and_exits_130(interrupted):
    out, rc, log = interrupted
    work = out.with_name(out.name + ".incomplete")
    assert rc == 130, log
    assert "SIGINT received" in log
    assert "--resume" in log and "Traceback" not in log
    assert not out.exists()
    info = json.loads((work / "run.json").read_text())
    assert info["status"].startswith("interrupted"), info
    assert "SIGINT" in info["status"]
    steps = _ckpt_steps(work)
    n = max(steps)
    assert n >= SAVE_STEPS and n < MAX_STEPS, steps
    assert info["global_step"] == n  # the stop step was saved, not lost
    assert _loss_steps(work) == list(range(1, n + 1))
    assert not (work / "adapter").exists()  # the adapter is only written by a finished run


def test_restart_without_resume_is_refused(interrupted, config_file, capsys):
    out, _, _ = interrupted
    code, text = _cli(capsys, "train", config_file, "--output", out)
    assert code == 2, text
    assert "--resume" in text and "interrupted" in text and "Traceback" not in text


def test_resume_with_other_lora_settings_is_refused(interrupted, config_file, capsys):
    out, _, _ = interrupted
    code, text = _cli(capsys, "train", config_file, "--output", out, "--resume", "--set", "lora.r=8")
    assert code == 2, text
    assert "differ" in text


def test_resume_with_nothing_to_resume(config_file, tmp_path, capsys):
    out = tmp_path / "never-started"
    code, text = _cli(capsys, "train", config_file, "--output", out, "--resume")
    assert code == 2, text
    assert "--resume" in text and "checkpoint" in text
    assert not out.exists() and not out.with_name(out.name + ".incomplete").exists()


def test_resume_finishes_the_run(interrupted, config_file):
    out, _, _ = interrupted
    work = out.with_name(out.name + ".incomplete")
    n = max(_ckpt_steps(work))
    log = config_file.parent / "resume.log"
    with open(log, "w") as fh:
        p = subprocess.run(seektune_cmd("train", config_file, "--output", out, "--resume"), stdout=fh, stderr=subprocess.STDOUT,
                           env=child_env(), cwd=config_file.parent, timeout=300)
    assert p.returncode == 0, _log(log)
    assert out.is_dir() and not work.exists()
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete"
    assert info["global_step"] == MAX_STEPS
    assert info["resumed_from"].endswith(f"checkpoint-{n}")
    steps = _loss_steps(out)
    first, resumed = steps[:n], steps[n:]
    assert first == list(range(1, n + 1))
    assert resumed == list(range(n + 1, MAX_STEPS + 1)), steps  # starts at N+1, no step trained twice
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    # the finished folder can be opened like any other run
    from seektune.run_folder import Run

    run = Run.open(out)
    assert run.complete and run.info["resumed_from"] == info["resumed_from"]


def test_a_run_that_fails_before_training_leaves_nothing_to_resume(tmp_path, capsys):
    out = tmp_path / "early"
    code, text = _cli(capsys, "train", "--data", tmp_path / "missing.json", "--output", out)
    assert code == 2 and "missing.json" in text, text
    assert not out.exists() and not out.with_name("early.incomplete").exists()
