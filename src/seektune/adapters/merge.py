"""`seektune merge`: fold a run's LoRA adapter into the base weights and prove the result.

Trap 4 of DESIGN.md: merges that silently equal the base model, or drift from base + adapter. Before
merging we record the logits of base and base + adapter on fixed prompts; after saving we reload the
merged folder and compare. A merged model equal to the base while the adapter changes the logits is
an error, not a warning.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from seektune.errors import SeektuneError

CHECK_PROMPTS = [
    "Who are you?",
    "Write one sentence about the sea.",
    "What is 17 times 23?",
    "Give me three tips for a good night's sleep.",
]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".pkl")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass
class MergeReport:
    output: str
    base: str
    adapter: str
    dtype: str
    max_logit_diff_merged_vs_adapter: float
    max_logit_diff_merged_vs_base: float
    max_logit_diff_adapter_vs_base: float
    eos_token_ids: list[int]
    copied_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"merged model: {self.output} ({self.dtype})",
            f"max |logit diff| base+adapter vs merged: {self.max_logit_diff_merged_vs_adapter:.3g}",
            f"max |logit diff| base vs merged:         {self.max_logit_diff_merged_vs_base:.3g} "
            f"(the adapter's effect: {self.max_logit_diff_adapter_vs_base:.3g})",
            f"generation stops on token ids {self.eos_token_ids}",
        ]
        return out + [f"note: {n}" for n in self.notes]


def merge(
    run_dir,
    output,
    dtype: str = "auto",
    max_shard_size: str = "5GB",
    overwrite: bool = False,
    progress: Optional[Callable[[str], None]] = None,
) -> MergeReport:
    from seektune.adapters.lora import load_adapter
    from seektune.data.render import ChatRenderer
    from seektune.infer.target import describe, qlora_note
    from seektune.models.load import load_model, load_tokenizer
    from seektune.models.source import resolve_source

    say = progress or (lambda m: None)
    spec = describe(str(run_dir))
    if spec.adapter_dir is None:
        raise SeektuneError(f"{run_dir}: not a run folder or an adapter folder; nothing to merge")
    out = Path(output)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SeektuneError(f"{out} exists and is not empty; choose another --output or pass --overwrite")
        shutil.rmtree(out)
    source = resolve_source(spec.base, allow_pickle=spec.allow_pickle, progress=say)
    dtype = _pick_dtype(dtype, source.location)
    from transformers import AutoTokenizer

    tokenizer = (AutoTokenizer.from_pretrained(spec.tokenizer_dir) if spec.tokenizer_dir
                 else load_tokenizer(source, spec.trust_remote_code))
    renderer = ChatRenderer(tokenizer)
    stops = renderer.stop_token_ids

    say(f"loading {source.display_name} in {dtype} and the adapter {spec.adapter_dir}")
    base = load_model(source, dtype, spec.trust_remote_code, spec.allow_pickle)
    model = load_adapter(base, spec.adapter_dir).eval()
    _check_adapter_nonzero(model, spec.adapter_dir)
    prompts = [renderer.prompt_ids([_user(p)]) for p in CHECK_PROMPTS]
    with_adapter = _logits(model, prompts)
    with model.disable_adapter():
        base_logits = _logits(model, prompts)

    say("merging (PEFT merge_and_unload)")
    merged = model.merge_and_unload()
    merged.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    if tokenizer.pad_token_id is not None:
        merged.generation_config.pad_token_id = tokenizer.pad_token_id
    merged.config.eos_token_id = merged.generation_config.eos_token_id
    out.mkdir(parents=True, exist_ok=True)
    say(f"saving safetensors shards to {out}")
    merged.save_pretrained(str(out), safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(str(out))
    copied = copy_non_weight_files(source, out)
    del merged, model, base

    say("reloading the merged folder to check it")
    from seektune.models.source import ModelSource

    reloaded = load_model(ModelSource("folder", str(out), str(out)), dtype).eval()
    merged_logits = _logits(reloaded, prompts)
    del reloaded
    report = MergeReport(
        output=str(out), base=source.original, adapter=spec.adapter_dir, dtype=dtype,
        max_logit_diff_merged_vs_adapter=_maxdiff(merged_logits, with_adapter),
        max_logit_diff_merged_vs_base=_maxdiff(merged_logits, base_logits),
        max_logit_diff_adapter_vs_base=_maxdiff(with_adapter, base_logits),
        eos_token_ids=stops, copied_files=copied,
    )
    note = qlora_note(spec.raw_config)
    if note:
        report.notes.append(
            f"{note}: merged onto the de-quantized base in {dtype}, so the merged model is close to, not identical "
            "with, the quantized model it was trained on"
        )
    (out / "seektune_merge.json").write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
    _verdict(report)
    return report


def _verdict(r: MergeReport) -> None:
    if r.max_logit_diff_adapter_vs_base > 1e-4 and r.max_logit_diff_merged_vs_base <= 1e-6:
        raise SeektuneError(
            f"the merged model in {r.output} equals the base model (max logit diff {r.max_logit_diff_merged_vs_base:.2g}) "
            f"although the adapter changes the logits by {r.max_logit_diff_adapter_vs_base:.3g}: the merge lost the "
            "adapter. Do not use this folder"
        )
    if r.max_logit_diff_merged_vs_adapter > max(r.max_logit_diff_merged_vs_base, 1e-3):
        r.notes.append(
            "the merged model is further from base+adapter than from the base: in this dtype the merge loses most of "
            "the adapter's effect; merge with --dtype fp32"
        )


def _pick_dtype(asked: str, location: str) -> str:
    from seektune.models.load import DTYPES

    if asked != "auto":
        if asked not in DTYPES:
            raise SeektuneError(f"--dtype {asked!r}: choose bf16, fp16, fp32 or auto")
        return asked
    cfg = Path(location) / "config.json"
    name = ""
    if cfg.is_file():
        c = json.loads(cfg.read_text(encoding="utf-8"))
        name = str(c.get("dtype") or c.get("torch_dtype") or "")
    return {"bfloat16": "bf16", "float16": "fp16"}.get(name, "fp32")


def _user(text):
    from seektune.data.formats import Message

    return Message("user", text)


@torch.no_grad()
def _logits(model, prompts: list[list[int]]) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    return [model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu() for ids in prompts]


def _maxdiff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def _check_adapter_nonzero(model, adapter_dir) -> None:
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    if not lora_b:
        raise SeektuneError(f"{adapter_dir}: the adapter attached no LoRA weights to this base model")
    if all(float(p.abs().max()) == 0.0 for p in lora_b):
        raise SeektuneError(f"{adapter_dir}: every lora_B is zero, so the adapter does nothing; nothing to merge")


def copy_non_weight_files(source, out: Path) -> list[str]:
    """Licence, README, extra configs, templates, remote code... everything of the base folder but weights.
    Files the merge wrote itself (config, tokenizer with the training template) are kept."""
    folder = _source_folder(source)
    if folder is None:
        return []
    copied = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if p.name.endswith(WEIGHT_SUFFIXES) or p.name in WEIGHT_INDEXES or (out / rel).exists():
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, out / rel)
        copied.append(str(rel))
    return copied


def _source_folder(source) -> Optional[Path]:
    if source.kind != "hub":
        return Path(source.location)
    try:  # the hub snapshot transformers downloaded; never download here
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source.location, revision=source.revision, local_files_only=True))
    except Exception:
        return None
