"""A tiny DeepSeek-VL model (transformers' native deepseek_vl classes: SigLIP encoder, aligner, Llama LM) trains a
step on image + text samples made here with PIL; LoRA goes on the language model, the vision encoder or both, the
projector is trained on request; text-only LoRA works with text-only data; image paths are checked."""

from __future__ import annotations

import json

import pytest
import torch

import seektune
from seektune.adapters.targets import adapted_names, condense, group_members
from seektune.config import DatasetSpec, LoraSection
from seektune.data.dataset import DatasetReport, load_conversations
from seektune.errors import DataError
from tests.conftest import shared, template_tokenizer

IMAGE_TOKEN = "<image_placeholder>"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


def vl_tokenizer(smol_dir):
    """The embedded tokenizer with DeepSeek-LLM's template and the image placeholder token."""
    tok = template_tokenizer(smol_dir, "deepseek_llm_7b_chat")
    tok.add_tokens([IMAGE_TOKEN], special_tokens=True)
    return tok


def tiny_language_config(tok) -> dict:
    """A 2-layer Llama language model over `tok` (DeepSeek-VL's and DeepSeek-VL-hybrid's text side)."""
    return dict(model_type="llama", vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def tiny_siglip_config(image_size: int) -> dict:
    return dict(model_type="siglip_vision_model", image_size=image_size, patch_size=16, hidden_size=32,
                intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def tiny_vl(tok):
    from transformers import AutoModelForImageTextToText, DeepseekVLConfig

    cfg = DeepseekVLConfig(text_config=tiny_language_config(tok), vision_config=tiny_siglip_config(32),
                           image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN))
    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_config(cfg)


def one_step(model_dir, dataset: dict, output, lora: dict | None = None):
    """One seektune.train step of batch 4 on one dataset (the image + text file, or text only)."""
    cfg = {
        "model": {"source": str(model_dir)},
        "data": {"datasets": [dataset], "max_length": 64, "holdout_prompts": 0},
        "train": {"max_steps": 1, "per_device_batch_size": 4, "learning_rate": 1e-2, "warmup_ratio": 0, "save_steps": 100},
        "output": str(output),
    }
    if lora is not None:
        cfg["lora"] = lora
    return seektune.train(cfg)


@pytest.fixture(scope="module")
def vl_dir(tmp_path_factory, smol_dir):
    tok = vl_tokenizer(smol_dir)
    d = tmp_path_factory.mktemp("models") / "tiny-deepseek-vl"
    tiny_vl(tok).save_pretrained(str(d), safe_serialization=True)
    tok.save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    return write_image_data(tmp_path_factory.mktemp("vl-data"), (40, 28), "vl.jsonl")


def write_image_data(root, size: tuple[int, int], name: str):
    """Three one-colour PNGs of `size` in root/imgs and four image + text conversations about them (one without
    an <image> placeholder) in root/`name`."""
    from PIL import Image

    (root / "imgs").mkdir()
    colors = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
    for color, rgb in colors.items():
        Image.new("RGB", size, rgb).save(root / "imgs" / f"{color}.png")
    rows = [{"messages": [{"role": "user", "content": "<image>\nWhat color is this square?"},
                          {"role": "assistant", "content": f"It is {color}."}], "images": [f"imgs/{color}.png"]}
            for color in colors]
    # no placeholder: one is put before the first user turn
    rows.append({"messages": [{"role": "user", "content": "Describe the picture."},
                              {"role": "assistant", "content": "A red square."}], "images": ["imgs/red.png"]})
    path = root / name
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def test_target_groups_of_a_vl_model(vl_dir):
    from transformers import AutoTokenizer

    model = tiny_vl(AutoTokenizer.from_pretrained(str(vl_dir)))
    groups = {g: [p for p, _ in condense(n)] for g, n in group_members(model).items()}
    assert set(groups) == {"language", "vision", "projector"}
    assert all(p.startswith("model.language_model.layers.*.") for p in groups["language"]) and len(groups["language"]) == 7
    assert {p.rsplit(".", 1)[1] for p in groups["vision"]} == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    assert all(p.startswith("model.vision_model.encoder.layers.*.") for p in groups["vision"])
    assert groups["projector"] == ["model.aligner (fully trained)"]
    from seektune.adapters.lora import attach_lora

    peft_model = attach_lora(model, LoraSection(targets="vision"))
    assert {n.split(".")[1] for n in adapted_names(peft_model)} == {"vision_model"}


def test_image_paths_are_checked(image_data, tmp_path):
    report = DatasetReport(file=str(image_data))
    convs = load_conversations(DatasetSpec(path=str(image_data)), False, report)
    assert [len(c.meta["images"]) for c in convs] == [1, 1, 1, 1]
    assert convs[3].messages[0].content.startswith("<image>\n")
    assert all(p.startswith(str(image_data.parent)) for c in convs for p in c.meta["images"])
    bad = image_data.parent / "bad.jsonl"
    for images, problem in ((["../outside.png"], "outside the data file's folder"), (["imgs/none.png"], "no such image"),
                            (["imgs/red.png", "imgs/blue.png"], "2 images but 1")):
        row = {"messages": [{"role": "user", "content": "<image> hi"}, {"role": "assistant", "content": "ok"}],
               "images": images}
        bad.write_text(json.dumps(row) + "\n", encoding="utf-8")
        with pytest.raises(DataError, match=problem) as e:
            load_conversations(DatasetSpec(path=str(bad)), False, DatasetReport(file=str(bad)))
        assert "bad.jsonl:1" in str(e.value) and "images" in str(e.value)


@pytest.fixture(scope="module")
def vl_run(vl_dir, image_data, tmp_path_factory):
    return one_step(vl_dir, {"path": str(image_data)}, tmp_path_factory.mktemp("runs") / "vl",
                    lora={"targets": ["language", "vision", "projector"], "r": 4})


def test_image_text_step_trains_language_vision_and_projector(vl_run, vl_dir):
    assert vl_run.complete
    model = vl_run.model
    groups = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = "projector" if "aligner" in name else "vision" if "vision_model" in name else "language"
            groups.setdefault(key, []).append((name, p))
    assert set(groups) == {"language", "vision", "projector"}
    # the vision LoRA only gets a gradient through pixel_values: it moved, so the images reached the model
    vision_b = [p for n, p in groups["vision"] if "lora_B" in n]
    assert vision_b and any(p.abs().max() > 0 for p in vision_b)
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(str(vl_dir))
    trained_aligner = [p for n, p in groups["projector"] if "modules_to_save" in n and n.endswith("linear1.weight")]
    assert trained_aligner and not torch.equal(trained_aligner[0].detach(), base.model.aligner.linear1.weight)
    from safetensors import safe_open

    with safe_open(str(vl_run.adapter_dir / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("vision_model" in k and "lora_A" in k for k in keys)
    assert any("language_model" in k and "lora_B" in k for k in keys)
    assert any("aligner.linear2.weight" in k for k in keys)
    report = json.loads((vl_run.path / "data_report.json").read_text())
    assert report["datasets"][0]["records_used_for_training"] == 4


def test_text_only_lora_of_a_vl_model(vl_dir, tmp_path):
    run = one_step(vl_dir, {"path": str(shared("identity/identity.json")), "max_records": 8}, tmp_path / "vl-text")
    assert run.complete
    names = adapted_names(run.model)
    assert names and all(".language_model." in n for n in names)  # default for a VL model: the language model
