"""Running the real `seektune` command from tests: its command line, the child's environment, a CLI call inside
the test process, and interrupting a run once a file (a checkpoint) appears."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SEEKTUNE = Path(sys.executable).with_name("seektune")


def seektune_cmd(*args) -> list[str]:
    base = [str(SEEKTUNE)] if SEEKTUNE.is_file() else [sys.executable, "-m", "seektune.cli"]
    return base + [str(a) for a in args]


def child_env(one_thread: bool = True, **extra) -> dict:
    """Offline, plain wide output. One intra-op thread by default: on a small shared CPU a second one only adds
    synchronisation (two OpenMP threads per process made SmolLM2 steps 4-10x slower on 2 vCPUs)."""
    env = dict(os.environ, COLUMNS="200", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_COLOR="1",
               PYTHONUNBUFFERED="1")
    if one_thread:
        env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def run_cli(capsys, *args) -> tuple[int, str]:
    """The `seektune` entry point in this process: (exit code, its output with whitespace collapsed)."""
    from seektune.cli import main as cli_main

    try:
        cli_main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    cap = capsys.readouterr()
    return code, " ".join((cap.out + cap.err).split())


def log_tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def signal_when_file_appears(proc: subprocess.Popen, marker: Path, sig: int, log: Path, timeout_s: float,
                             poll_s: float = 0.1, wait_s: float = 300) -> int:
    """Wait for `marker`, send `sig`, return the exit code. Fails the test if the process ends first or the marker
    takes longer than `timeout_s`; never leaves the process running."""
    try:
        deadline = time.monotonic() + timeout_s
        while not marker.is_file():
            if proc.poll() is not None:
                pytest.fail(f"the process ended (rc {proc.returncode}) before {marker} appeared:\n{log_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {marker} after {timeout_s:.0f} s:\n{log_tail(log)}")
            time.sleep(poll_s)
        proc.send_signal(sig)
        return proc.wait(timeout=wait_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
