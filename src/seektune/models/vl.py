"""DeepSeek-VL (transformers' native `deepseek_vl` / `deepseek_vl_hybrid` classes): loading, the image processor,
image-token expansion and the batch collator.

The PIL image processors (`DeepseekVLImageProcessorPil`, `...HybridImageProcessorPil`) are used: the default
(fast) ones import torchvision, which is not a seektune dependency. An image is one `<image>` placeholder in a user
turn; it becomes the model's image token repeated once per vision feature (SigLIP: (image_size / patch_size)^2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

VL_TYPES = ("deepseek_vl", "deepseek_vl_hybrid")
PLACEHOLDER = "<image>"


def folder_model_type(location: str) -> Optional[str]:
    cfg = Path(location) / "config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type")
    if Path(location).exists():
        return None
    try:  # a hub id: its config.json (cached after the first download)
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(location).model_type
    except Exception:
        return None


def is_vl(config_or_type) -> bool:
    t = config_or_type if isinstance(config_or_type, str) else getattr(config_or_type, "model_type", None)
    return t in VL_TYPES


def auto_model_class(location: str):
    """AutoModelForImageTextToText for DeepSeek-VL folders, AutoModelForCausalLM otherwise."""
    import transformers

    if is_vl(folder_model_type(location) or ""):
        return transformers.AutoModelForImageTextToText
    return transformers.AutoModelForCausalLM


@dataclass
class VisionSpec:
    image_token: str
    image_token_id: int
    tokens_per_image: int


def vision_spec(config, tokenizer) -> VisionSpec:
    from seektune.errors import ModelSourceError

    tid = config.image_token_id
    token = tokenizer.convert_ids_to_tokens(tid) if tid < len(tokenizer) else None
    if not token:
        raise ModelSourceError(
            f"the model's image_token_id {tid} is not in the tokenizer (size {len(tokenizer)}); the tokenizer must have "
            "DeepSeek-VL's image token (<image_placeholder>)"
        )
    v = config.vision_config
    return VisionSpec(token, tid, (v.image_size // v.patch_size) ** 2)


def image_processor(config, location: Optional[str] = None):
    from transformers.models.deepseek_vl.image_processing_pil_deepseek_vl import DeepseekVLImageProcessorPil

    cls = DeepseekVLImageProcessorPil
    kwargs = {}
    if config.model_type == "deepseek_vl_hybrid":
        from transformers.models.deepseek_vl_hybrid.image_processing_pil_deepseek_vl_hybrid import (
            DeepseekVLHybridImageProcessorPil as cls,
        )

        hr = config.high_res_vision_config.image_size
        kwargs["high_res_size"] = {"height": hr, "width": hr}
    size = config.vision_config.image_size
    if location and (Path(location) / "preprocessor_config.json").is_file():
        proc = cls.from_pretrained(location)
        _check_sizes(proc, config, Path(location) / "preprocessor_config.json")
        return proc
    return cls(size={"height": size, "width": size}, **kwargs)


def _check_sizes(proc, config, path: Path) -> None:
    """The folder's image sizes must be the encoders' own; otherwise the model fails mid-step with a shape error."""
    from seektune.errors import ModelSourceError

    want = {"size": config.vision_config.image_size}
    if config.model_type == "deepseek_vl_hybrid":  # the SAM encoder takes its own, larger image
        want["high_res_size"] = config.high_res_vision_config.image_size
    for field, px in want.items():
        h, w = (px, px) if isinstance(px, int) else tuple(px)  # SAM's image_size may be [height, width]
        got = getattr(proc, field, None)
        got = (got.get("height"), got.get("width")) if isinstance(got, dict) else (getattr(got, "height", None),
                                                                                  getattr(got, "width", None))
        if got != (h, w):
            raise ModelSourceError(
                f"{path}: {field} is {got[0]}x{got[1]} but the model's encoder takes {h}x{w} images (config.json); "
                f"set {field} to {{\"height\": {h}, \"width\": {w}}} or delete the file to use the model's sizes"
            )


def expand_image_tokens(ids: list[int], labels: list[int], spec: VisionSpec, ignore: int) -> tuple[list, list]:
    out_ids, out_labels = [], []
    for t, lab in zip(ids, labels):
        if t == spec.image_token_id:
            out_ids += [t] * spec.tokens_per_image
            out_labels += [ignore] * spec.tokens_per_image
        else:
            out_ids.append(t)
            out_labels.append(lab)
    return out_ids, out_labels


class VLCollator:
    """Pads text like PadCollator and adds the images of the batch (loaded when the batch is built)."""

    def __init__(self, text_collator, processor):
        self.text_collator, self.processor = text_collator, processor

    def __call__(self, features: list[dict]) -> dict:
        try:
            from PIL import Image
        except ImportError as e:
            from seektune.errors import SeektuneError

            raise SeektuneError("images need Pillow: pip install 'seektune[vision]' (or pillow)") from e

        batch = self.text_collator(features)
        paths = [p for f in features for p in f.get("images") or []]
        if paths:
            images = []
            for p in paths:
                with Image.open(p) as im:
                    images.append(im.convert("RGB"))
            batch.update({k: torch.as_tensor(v) for k, v in self.processor(images, return_tensors="pt").items()})
        return batch


def make_collator(model, tokenizer):
    """The batch collator for this model: text only, or text + images for DeepSeek-VL."""
    from seektune.training.collate import PadCollator

    text = PadCollator(tokenizer.pad_token_id)
    config = model.config
    if not is_vl(config):
        return text
    return VLCollator(text, image_processor(config, getattr(config, "_name_or_path", None)))


def renderer_vision(location: str, tokenizer, trust_remote_code: bool = False) -> Optional[VisionSpec]:
    """The VisionSpec for a DeepSeek-VL model folder or hub id, else None (read from its config alone)."""
    if not is_vl(folder_model_type(location) or ""):
        return None
    from transformers import AutoConfig

    return vision_spec(AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code), tokenizer)


def check_and_expand(renderer, conv, ids: list[int], labels: list[int], images: list[str]):
    """Each image's single token -> tokens_per_image copies (never supervised); counts must match the images."""
    from seektune.data.render import IGNORE, _where
    from seektune.errors import TemplateError

    spec = renderer.vision
    if spec is None:
        raise TemplateError(f"{_where(conv)}: the record has images but the model is not a vision-language model")
    found = ids.count(spec.image_token_id)
    if found != len(images):
        raise TemplateError(
            f"{_where(conv)}: {len(images)} images but {found} image tokens after rendering; every image needs one "
            f"{PLACEHOLDER} in a user turn that the chat template keeps"
        )
    return expand_image_tokens(ids, labels, spec, IGNORE)
