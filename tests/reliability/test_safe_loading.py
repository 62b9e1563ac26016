"""Safe loading: pickle weights and remote code never run unless asked (checked with files that WOULD run code),
outputs are safetensors only, checkpoint state is read without unpickling code, and no path taken from the
config or data leads a write outside the output folder."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

import seektune
from seektune.errors import SeektuneError
from seektune.run_folder import default_output, last_checkpoint
from seektune.config import RunConfig
from seektune.training.paths import check_output_path, safe_join
from tests.processes import run_cli
from tests.reliability.conftest import alpaca_records, tiny_config, write_json

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class _RunsCode:
    """Unpickling this creates a marker file: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_json(tmp_path_factory.mktemp("safe") / "d.json", alpaca_records(10))


def test_pickle_weights_are_refused_and_never_unpickled(tmp_path, tiny_llama, data, capsys):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_llama, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weight": _RunsCode(marker)}, f)
    for extra in ([], ["--dry-run"]):
        code, text = run_cli(capsys, "train", "--model", folder, "--data", data, "--output", tmp_path / "o", *extra)
        assert code == 2, text
        assert "pickle" in text.lower() and "--allow-pickle" in text and "Traceback" not in text
    assert not marker.exists()


def test_remote_code_is_refused_and_never_imported(tmp_path, tiny_llama, data, capsys):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_llama, folder)
    marker = tmp_path / "imported"
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="evil_llama", auto_map={"AutoConfig": "evil.EvilConfig",
                                                  "AutoModelForCausalLM": "evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    for extra in ([], ["--dry-run"]):
        code, text = run_cli(capsys, "train", "--model", folder, "--data", data, "--output", tmp_path / "o", *extra)
        assert code == 2, text
        assert "--trust-remote-code" in text and "Traceback" not in text
    assert not marker.exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_llama, data):
    d = tmp_path_factory.mktemp("safe-run")
    return seektune.train(tiny_config(tiny_llama, data, d / "run", max_steps=2, save_steps=1, save_total_limit=None))


def test_outputs_are_safetensors_only(finished):
    written = [p for p in finished.path.rglob("*") if p.is_file() and "checkpoints" not in p.parts]
    assert not [p for p in written if p.suffix in PICKLE_SUFFIXES], written
    assert (finished.adapter_dir / "adapter_model.safetensors").is_file()
    for ckpt in (finished.path / "checkpoints").iterdir():
        assert (ckpt / "adapter_model.safetensors").is_file()
        assert not [p for p in ckpt.iterdir() if p.name.endswith((".bin", ".pkl")) and p.name != "training_args.bin"]


def test_a_tampered_checkpoint_cannot_run_code_on_resume(tmp_path, tiny_llama, data):
    """Optimizer/scheduler/RNG state (the Trainer's .pt files) is read with torch's weights-only unpickler."""
    cfg = tiny_config(tiny_llama, data, tmp_path / "run", max_steps=4, save_steps=2)

    class StopAfterFirstSave(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            raise KeyboardInterrupt  # a crash after checkpoint-2

    with pytest.raises(KeyboardInterrupt):
        seektune.train(cfg, callbacks=[StopAfterFirstSave()])
    ckpt = last_checkpoint(tmp_path / "run.incomplete")
    marker = tmp_path / "pwned"
    torch.save({"state": _RunsCode(marker)}, ckpt / "optimizer.pt")
    with pytest.raises(Exception) as ei:
        seektune.train(cfg, resume=True)
    assert "weights_only" in str(ei.value) or "Unpickl" in type(ei.value).__name__ + str(ei.value)
    assert not marker.exists()


# ---- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "/etc/passwd", "..", "."])
def test_safe_join_refuses_names_that_leave_the_folder(tmp_path, name):
    with pytest.raises(SeektuneError, match="outside the output folder"):
        safe_join(tmp_path, name)


def test_safe_join_refuses_a_link_that_points_outside(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "checkpoints").symlink_to(tmp_path)
    with pytest.raises(SeektuneError):
        safe_join(tmp_path / "out", "checkpoints", "checkpoint-2")
    assert safe_join(tmp_path / "out", "adapter") == tmp_path / "out" / "adapter"


@pytest.mark.parametrize("source", ["../../../../tmp/evil", "x/..", "/", "..\\..\\evil", "a b/../c"])
def test_default_run_names_from_hostile_model_ids_stay_under_runs(source):
    out = default_output(RunConfig.model_validate({"model": {"source": source}}))
    assert out.parent == Path("runs") and ".." not in out.parts and "/" not in out.name


@pytest.mark.parametrize("bad", ["..", "runs/..", ".", "/"])
def test_output_must_end_in_a_plain_folder_name(bad, tmp_path, data, capsys):
    with pytest.raises(SeektuneError, match="must end in a new folder name"):
        check_output_path(bad)
    code, text = run_cli(capsys, "train", "--data", data, "--output", bad, "--dry-run")
    assert code == 2 and "must end in a new folder name" in text, text
