"""Where weights come from: local folders (safetensors only unless --allow-pickle), remote-code refusal,
missing paths, and the cached GGUF -> safetensors conversion of the embedded model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from seektune.errors import ModelSourceError
from seektune.models.load import load_model
from seektune.models.source import (
    ModelSource,
    converted_gguf_folder,
    file_sha256,
    embedded_gguf_path,
    resolve_source,
)


def _tiny_llama():
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=64)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def tiny():
    return _tiny_llama()


@pytest.fixture
def safe_folder(tiny, tmp_path):
    d = tmp_path / "tiny-llama"
    tiny.save_pretrained(str(d), safe_serialization=True)
    return d


@pytest.fixture
def pickle_folder(tiny, tmp_path):
    d = tmp_path / "tiny-llama-bin"
    tiny.save_pretrained(str(d), safe_serialization=True)
    # transformers 5 always writes safetensors; a legacy checkpoint has only the pickle file.
    for f in d.glob("*.safetensors"):
        f.unlink()
    torch.save(tiny.state_dict(), d / "pytorch_model.bin")
    return d


def test_local_folder(safe_folder, tiny, monkeypatch):
    monkeypatch.chdir(safe_folder.parent)
    src = resolve_source("./tiny-llama")
    assert src.kind == "folder"
    assert src.location == str(safe_folder.resolve())
    assert Path(src.location).is_absolute()
    model = load_model(src)
    assert model.config.model_type == "llama"
    assert _same_weights(model, tiny)


def test_pickle_only_folder_needs_allow_pickle(pickle_folder, tiny):
    with pytest.raises(ModelSourceError) as e:
        resolve_source(str(pickle_folder))
    assert "--allow-pickle" in str(e.value) and "pytorch_model.bin" in str(e.value)
    # load_model refuses pickle too, even when handed the folder directly.
    with pytest.raises(ModelSourceError, match="--allow-pickle"):
        load_model(ModelSource("folder", str(pickle_folder), str(pickle_folder)))

    src = resolve_source(str(pickle_folder), allow_pickle=True)
    model = load_model(src, allow_pickle=True)
    assert _same_weights(model, tiny)


def test_remote_code_model_type_needs_trust(safe_folder):
    cfg_file = safe_folder / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["model_type"] = "my_custom"
    cfg["auto_map"] = {"AutoConfig": "configuration_my.MyConfig", "AutoModelForCausalLM": "modeling_my.MyModel"}
    cfg_file.write_text(json.dumps(cfg))
    src = resolve_source(str(safe_folder))  # the folder itself is fine; loading it would run its code
    with pytest.raises(ModelSourceError) as e:
        load_model(src)
    assert "--trust-remote-code" in str(e.value) and "my_custom" in str(e.value)


def test_folder_without_config_is_refused(safe_folder):
    (safe_folder / "config.json").unlink()
    with pytest.raises(ModelSourceError, match="config.json"):
        resolve_source(str(safe_folder))


@pytest.mark.parametrize("path", ["./no/such/model", "/definitely/not/here", "~/not-a-model-folder-xyz"])
def test_missing_local_path(path):
    with pytest.raises(ModelSourceError, match="no such folder"):
        resolve_source(path)


def test_missing_gguf(tmp_path):
    with pytest.raises(ModelSourceError, match="GGUF file not found"):
        resolve_source(str(tmp_path / "model.Q4_K_M.gguf"))


def test_plain_file_is_refused(tmp_path):
    f = tmp_path / "weights.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(ModelSourceError, match="not .gguf"):
        resolve_source(str(f))


def test_hub_id_passes_through():
    src = resolve_source("deepseek-ai/deepseek-llm-7b-chat", revision="main")
    assert (src.kind, src.location, src.revision) == ("hub", "deepseek-ai/deepseek-llm-7b-chat", "main")


def test_embedded_conversion_is_cached(smol_dir):
    gguf = embedded_gguf_path()
    first = converted_gguf_folder(gguf)  # smol_dir already converted it once
    assert first == Path(smol_dir)
    weights = first / "model.safetensors"
    assert weights.is_file()
    mtime = weights.stat().st_mtime_ns
    second = converted_gguf_folder(gguf)
    assert second == first
    assert weights.stat().st_mtime_ns == mtime  # not written again

    cfg = json.loads((first / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert cfg["model_type"] == "llama"
    # Keyed by content, not path: another install of the same file reuses the folder.
    assert json.loads((first / "seektune_source.json").read_text())["sha256"] == file_sha256(gguf)
    src = resolve_source(None)
    assert (src.kind, src.location) == ("embedded", str(first))


def test_embedded_safetensors_are_plain_floats(smol_dir):
    from safetensors import safe_open

    with safe_open(os.path.join(smol_dir, "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        dtypes = {f.get_slice(k).get_dtype() for k in keys}
    assert any(k.endswith("self_attn.q_proj.weight") for k in keys)
    assert dtypes <= {"F32", "F16", "BF16"}, dtypes
