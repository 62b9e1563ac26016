"""The `seektune` command line, run as a real subprocess: exit codes, messages without tracebacks."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import shared
from tests.processes import child_env, seektune_cmd

def _start(args, cwd):
    return subprocess.Popen(seektune_cmd(*args), cwd=cwd, env=child_env(one_thread=False), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=240):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{proc.args} timed out:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# Each command spends ~8 s importing torch/transformers, so the commands of this module start together
# (the first test that needs one waits for it); each gets its own working folder.
COMMANDS = {
    "bad_set": lambda d: ["train", "--set", "lora.r=-1", "--output", d / "out"],
    "missing_data": lambda d: ["train", "--data", "missing.json", "--output", d / "out"],
    "bad_format": lambda d: ["train", "--data", shared("identity/identity.json"), "--format", "nope", "--output",
                             d / "out"],
    "format_without_data": lambda d: ["train", "--format", "alpaca"],
    "inspect": lambda d: ["inspect", "--set", "lora.r=8"],
    "inspect_data": lambda d: ["inspect-data", "--data", shared("identity/identity.json"), "-n", "1"],
}


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    procs = {}
    for name, args in COMMANDS.items():
        d = tmp_path_factory.mktemp(name)
        procs[name] = (d, _start(args(d), d))
    yield procs
    for _, proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def seektune(launched, name):
    d, proc = launched[name]
    if not hasattr(proc, "result"):
        proc.result = _finish(proc)
        proc.result.all = proc.result.stdout + proc.result.stderr
    return d, proc.result


def test_train_help_lists_options(tmp_path):
    p = _finish(_start(["train", "--help"], tmp_path))
    assert p.returncode == 0, p.all
    for opt in ("--model", "--data", "--format", "--output", "--set", "--resume"):
        assert opt in p.stdout, opt


def test_bad_set_value_exits_2_without_traceback(launched):
    d, p = seektune(launched, "bad_set")
    assert p.returncode == 2, p.all
    assert "lora.r" in p.all and "-1" in p.all and "greater than 0" in p.all
    assert "Traceback" not in p.all
    assert not (d / "out").exists() and not (d / "out.incomplete").exists()


def test_missing_data_file_exits_2_naming_it(launched):
    d, p = seektune(launched, "missing_data")
    assert p.returncode == 2, p.all
    assert "missing.json" in p.all and "not found" in p.all
    assert "Traceback" not in p.all
    assert not (d / "out").exists()


def test_unknown_format_lists_the_formats(launched):
    d, p = seektune(launched, "bad_format")
    assert p.returncode == 2, p.all
    assert "format" in p.all and "'nope'" in p.all
    for fmt in ("alpaca", "sharegpt", "messages"):
        assert fmt in p.all
    assert "Traceback" not in p.all
    assert not (d / "out.incomplete").exists()


def test_format_without_data_is_refused(launched):
    d, p = seektune(launched, "format_without_data")
    assert p.returncode == 2, p.all
    assert "--data" in p.all and "Traceback" not in p.all
    assert not (d / "runs").exists()


def test_inspect_embedded_model(launched):
    _, p = seektune(launched, "inspect")
    assert p.returncode == 0, p.all
    out = p.stdout
    assert "llama" in out and "q_proj" in out and "down_proj" in out
    assert re.search(r"LlamaDecoderLayer\s+×30", out), out
    m = re.search(r"LoRA: ([\d,]+) trainable parameters", out)
    assert m, out
    # r=8 on q,k,v,o,gate,up,down of 30 layers (576 hidden, 192 kv, 1536 mlp): r * sum(in + out) * 30
    per_layer = (576 + 576) * 2 + (576 + 192) * 2 + (576 + 1536) * 3
    assert int(m.group(1).replace(",", "")) == 8 * per_layer * 30
    assert "lm_head" not in out.split("LoRA:")[1]


def test_inspect_data_shows_samples_and_summary(launched):
    _, p = seektune(launched, "inspect_data")
    assert p.returncode == 0, p.all
    assert p.stdout.count("green = supervised") == 1  # -n 1: one sample shown
    line = next((l for l in p.stdout.splitlines() if l.startswith("identity.json")), None)
    assert line is not None, p.stdout
    assert re.search(r"71 read.*supervised \d+(\.\d+)?% of \d+ tokens", line), line
    assert "<|im_start|>assistant" in p.stdout


def test_inspect_of_an_unreachable_hub_id_is_a_clear_error():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "seektune.cli", "inspect", "no-such-org/no-such-model"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "no-such-org/no-such-model" in out and "Traceback" not in out
    assert "download the model folder" in out
