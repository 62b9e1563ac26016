"""A tiny DeepSeek-VL *hybrid* model (transformers' native deepseek_vl_hybrid classes: a low-res SigLIP encoder, a
high-res SAM encoder, an aligner that joins both, a Llama LM) trains a step through seektune's real training path on
image + text samples made here with PIL.

Target groups of the hybrid: `vision` covers BOTH encoders' transformer blocks (SigLIP q/k/v/out_proj, fc1/fc2 and
SAM attn.qkv/proj, mlp.lin1/lin2); `projector` is the aligner, trained fully. The SAM-side convolutions
(high_res_vision_neck, high_res_vision_proj, SAM's own neck) and the scalar high_res_vision_alpha are in no group:
they stay frozen, as in DeepSeek-VL's own recipe, where only the aligner is trained on top of the encoders."""

from __future__ import annotations

import json
import math

import pytest
import torch

from seektune.adapters.targets import adapted_names, condense, group_members
from seektune.config import LoraSection
from tests.conftest import shared
from tests.models.test_deepseek_vl import (
    IMAGE_TOKEN, one_step, tiny_language_config, tiny_siglip_config, vl_tokenizer, write_image_data,
)

LOW, HIGH = 32, 64  # image sizes of the SigLIP and SAM encoders: (32 / 16)^2 = 4 image tokens


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


def tiny_hybrid(tok):
    from transformers import AutoModelForImageTextToText, DeepseekVLHybridConfig

    cfg = DeepseekVLHybridConfig(
        text_config=tiny_language_config(tok),
        vision_config=tiny_siglip_config(LOW),
        # SAM's default initializer_range (1e-10) would leave its gradients ~1e-30: the high-res LoRA could not move
        high_res_vision_config=dict(model_type="sam_vision_model", image_size=HIGH, patch_size=16, hidden_size=32,
                                    output_channels=16, num_hidden_layers=2, num_attention_heads=2, window_size=2,
                                    global_attn_indexes=[1], mlp_dim=64, initializer_range=0.02),
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_config(cfg)


@pytest.fixture(scope="module")
def hybrid_dir(tmp_path_factory, smol_dir):
    tok = vl_tokenizer(smol_dir)
    d = tmp_path_factory.mktemp("models") / "tiny-deepseek-vl-hybrid"
    tiny_hybrid(tok).save_pretrained(str(d), safe_serialization=True)
    tok.save_pretrained(str(d))
    hybrid_processor().save_pretrained(str(d))  # as in the hub folders: training reads the processor from here
    return d


def hybrid_processor(low=LOW, high=HIGH):
    from transformers.models.deepseek_vl_hybrid.image_processing_pil_deepseek_vl_hybrid import (
        DeepseekVLHybridImageProcessorPil,
    )

    return DeepseekVLHybridImageProcessorPil(size={"height": low, "width": low}, high_res_size={"height": high, "width": high})


@pytest.fixture(scope="module")
def hybrid_model(hybrid_dir):
    from transformers import AutoTokenizer

    return tiny_hybrid(AutoTokenizer.from_pretrained(str(hybrid_dir)))


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    # not square: both resizes pad to a square
    return write_image_data(tmp_path_factory.mktemp("vlh-data"), (50, 30), "vlh.jsonl")


def test_target_groups_of_a_hybrid_model(hybrid_model):
    groups = {g: [p for p, _ in condense(n)] for g, n in group_members(hybrid_model).items()}
    assert set(groups) == {"language", "vision", "projector"}
    assert all(p.startswith("model.language_model.layers.*.") for p in groups["language"]) and len(groups["language"]) == 7
    siglip = sorted(p.rsplit(".", 1)[1] for p in groups["vision"] if p.startswith("model.vision_model.encoder.layers.*."))
    sam = sorted(p.rsplit(".", 1)[1] for p in groups["vision"]
                 if p.startswith("model.high_res_vision_model.vision_encoder.layers.*."))
    assert siglip == ["fc1", "fc2", "k_proj", "out_proj", "q_proj", "v_proj"]
    assert sam == ["lin1", "lin2", "proj", "qkv"]
    assert len(groups["vision"]) == len(siglip) + len(sam)  # nothing else: no SigLIP head, no convolutions
    assert groups["projector"] == ["model.aligner (fully trained)"]


def test_vision_lora_touches_both_encoders_only(hybrid_model):
    from seektune.adapters.lora import attach_lora

    import copy

    peft_model = attach_lora(copy.deepcopy(hybrid_model), LoraSection(targets="vision", r=2))
    names = adapted_names(peft_model)
    assert {n.split(".")[1] for n in names} == {"vision_model", "high_res_vision_model"}
    assert len(names) == 2 * 6 + 2 * 4  # 2 SigLIP layers x 6 linears + 2 SAM layers x 4 linears
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)  # the aligner and the SAM convolutions stay frozen


@pytest.fixture(scope="module")
def hybrid_run(hybrid_dir, image_data, tmp_path_factory):
    return one_step(hybrid_dir, {"path": str(image_data)}, tmp_path_factory.mktemp("runs") / "vlh",
                    lora={"targets": ["language", "vision", "projector"], "r": 4})


def test_image_text_step_trains_both_encoders_and_projector(hybrid_run, hybrid_dir):
    assert hybrid_run.complete
    assert math.isfinite(hybrid_run.info["train_loss"]) and hybrid_run.info["non_finite_steps_skipped"] == 0
    assert [math.isfinite(m["loss"]) for m in hybrid_run.step_metrics] == [True]
    moved = {}
    for name, p in hybrid_run.model.named_parameters():
        if p.requires_grad and "lora_B" in name:
            key = ("sam" if "high_res_vision_model" in name else "siglip" if "vision_model" in name else "language")
            moved[key] = moved.get(key, False) or bool(p.abs().max() > 0)
    # each encoder's LoRA only gets a gradient through its own pixels: pixel_values AND high_res_pixel_values arrived
    assert moved == {"language": True, "siglip": True, "sam": True}
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(str(hybrid_dir))
    trained = dict(hybrid_run.model.named_parameters())
    for part in ("high_res_vision_proj", "vision_proj", "proj"):
        key = next(n for n in trained if n.endswith(f"aligner.modules_to_save.default.{part}.weight"))
        assert not torch.equal(trained[key].detach(), getattr(base.model.aligner, part).weight), part
    from safetensors import safe_open

    with safe_open(str(hybrid_run.adapter_dir / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("high_res_vision_model" in k and "lora_B" in k for k in keys)
    assert any(".vision_model." in k and "lora_A" in k for k in keys)
    assert any("language_model" in k and "lora_B" in k for k in keys)
    assert any("aligner.high_res_vision_proj.weight" in k for k in keys)
    report = json.loads((hybrid_run.path / "data_report.json").read_text())
    assert report["datasets"][0]["records_used_for_training"] == 4  # none dropped


def test_collator_passes_high_res_pixels(hybrid_model, hybrid_dir, image_data):
    from transformers import AutoTokenizer

    from seektune.models.vl import make_collator

    collate = make_collator(hybrid_model, AutoTokenizer.from_pretrained(str(hybrid_dir)))
    red = str(image_data.parent / "imgs" / "red.png")
    batch = collate([{"input_ids": [1, 2], "labels": [1, 2], "images": [red, red]}, {"input_ids": [3], "labels": [3]}])
    assert batch["pixel_values"].shape == (2, 3, LOW, LOW)
    assert batch["high_res_pixel_values"].shape == (2, 3, HIGH, HIGH)


def test_text_only_lora_of_a_hybrid_model(hybrid_dir, tmp_path):
    run = one_step(hybrid_dir, {"path": str(shared("identity/identity.json")), "max_records": 8}, tmp_path / "vlh-text")
    assert run.complete
    assert math.isfinite(run.info["train_loss"]) and run.info["non_finite_steps_skipped"] == 0
    names = adapted_names(run.model)
    assert names and all(".language_model." in n for n in names)  # default for a VL model: the language model
    trainable = [n for n, p in run.model.named_parameters() if p.requires_grad]
    assert trainable and all(".language_model." in n and "lora_" in n for n in trainable)
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()


def test_processor_sizes_must_fit_the_encoders(hybrid_dir, tmp_path):
    import shutil

    from transformers import AutoConfig

    from seektune.errors import ModelSourceError
    from seektune.models.vl import image_processor

    config = AutoConfig.from_pretrained(str(hybrid_dir))
    proc = image_processor(config, str(hybrid_dir))
    assert type(proc).__name__ == "DeepseekVLHybridImageProcessorPil" and proc.high_res_size.height == HIGH
    for low, high, field in ((LOW, 2 * HIGH, "high_res_size is 128x128"), (2 * LOW, HIGH, "size is 64x64")):
        d = tmp_path / f"{low}-{high}"
        shutil.copytree(hybrid_dir, d)
        hybrid_processor(low, high).save_pretrained(str(d))
        with pytest.raises(ModelSourceError, match=field) as e:
            image_processor(config, str(d))
        assert "preprocessor_config.json" in str(e.value)
