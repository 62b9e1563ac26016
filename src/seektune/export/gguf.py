"""`seektune export gguf`: a GGUF file llama.cpp loads, written with the `gguf` package (GGUFWriter,
tensor-name maps, numpy quantizers). Our own small converter for the architectures seektune fine-tunes
as dense decoders -- Llama (deepseek-llm, SmolLM2, R1-Distill-Llama) and Qwen2 (R1-Distill-Qwen).

What llama.cpp expects beyond renaming tensors:
  * Llama's q/k projections in llama.cpp's rotary layout (rows of each head interleaved, see `rope_permute`);
  * the vocabulary as tokens + types + merges, the pre-tokenizer's name, special token ids, and the chat
    template -- here the template the adapter was trained with;
  * 1-D tensors (norms, biases) in F32; 2-D tensors in the asked type where their rows fit its blocks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from seektune.errors import SeektuneError

ARCHS = {"llama": "LLAMA", "qwen2": "QWEN2"}
# Types the `gguf` package can write itself; k-quants need llama.cpp's llama-quantize (C code).
TYPES = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q5_1": ("Q5_1", "MOSTLY_Q5_1"),
    "q5_0": ("Q5_0", "MOSTLY_Q5_0"),
    "q4_1": ("Q4_1", "MOSTLY_Q4_1"),
    "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
}
LLAMA_CPP_ONLY = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k", "iq4_xs")


@dataclass
class GGUFReport:
    path: str
    arch: str
    type: str
    tensors: int
    bytes: int
    pre_tokenizer: str
    eos_token_id: Optional[int]
    eot_token_id: Optional[int]
    kept_f16: list[str] = field(default_factory=list)  # 2-D tensors whose rows do not fit the quant blocks
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"wrote {self.path}: {self.arch}, {self.type}, {self.tensors} tensors, {self.bytes / 2**20:.1f} MiB"]
        if self.pre_tokenizer != "-":  # a LoRA adapter file has no tokenizer
            out.append(f"tokenizer: pre-tokenizer {self.pre_tokenizer!r}, eos {self.eos_token_id}, "
                       f"end of turn {self.eot_token_id}")
        if self.kept_f16:
            out.append(f"{len(self.kept_f16)} tensors kept in F16 (rows not a multiple of the block size): "
                       + ", ".join(self.kept_f16[:4]))
        return out + [f"note: {n}" for n in self.notes]


def check_type(qtype: str) -> str:
    t = qtype.lower()
    if t in TYPES:
        return t
    if t in LLAMA_CPP_ONLY:
        raise SeektuneError(
            f"--type {qtype}: k-quants are made by llama.cpp's C quantizer, which the gguf package does not include. "
            f"Export --type f16, then run: llama-quantize model-f16.gguf model-{t}.gguf {t.upper()}"
        )
    raise SeektuneError(f"--type {qtype!r}: choose one of {', '.join(TYPES)} (or a k-quant via llama-quantize)")


def model_arch(config: dict) -> str:
    mt = config.get("model_type")
    if mt not in ARCHS:
        raise SeektuneError(
            f"GGUF export supports {', '.join(ARCHS)} models; this one is {mt!r}. For other architectures use "
            "llama.cpp's convert_hf_to_gguf.py on a merged folder (`seektune merge`)"
        )
    return mt


def rope_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF Llama rotates the two halves of each head; llama.cpp rotates adjacent pairs. Reorder the rows of a
    q/k projection (or of a LoRA B matrix) from the first layout into the second."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_theta(config: dict) -> float:
    rp = config.get("rope_parameters") or {}
    return float(config.get("rope_theta") or rp.get("rope_theta") or 10000.0)


def rope_scaling(config: dict) -> dict:
    rp = dict(config.get("rope_scaling") or {})
    rp.update({k: v for k, v in (config.get("rope_parameters") or {}).items() if k != "rope_theta"})
    rp["rope_type"] = rp.get("rope_type") or rp.get("type") or "default"
    return rp


def head_dim(config: dict) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def llama3_rope_factors(config: dict) -> np.ndarray:
    """Per-frequency divisors llama.cpp applies for Llama-3.1 style rope scaling (the `rope_freqs` tensor)."""
    rs = rope_scaling(config)
    dim = head_dim(config)
    freqs = 1.0 / (rope_theta(config) ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    factor, low, high = float(rs["factor"]), float(rs.get("low_freq_factor", 1.0)), float(rs.get("high_freq_factor", 4.0))
    old_ctx = float(rs.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def export_gguf(
    path, output, qtype: str = "f16", progress: Optional[Callable[[str], None]] = None,
) -> GGUFReport:
    """RUN_DIR (merged in memory), a merged folder or a model folder -> one GGUF file."""
    from seektune.export.hf_source import open_export_source

    qtype = check_type(qtype)
    src = open_export_source(path, progress)
    arch = model_arch(src.config)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_model_gguf(src, arch, out, qtype, progress)


def write_model_gguf(src, arch: str, out: Path, qtype: str, progress=None) -> GGUFReport:
    import gguf
    from tqdm import tqdm

    cfg = src.config
    gt, ftype = TYPES[qtype]
    writer = gguf.GGUFWriter(str(out) + ".partial", arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(src.name)
    writer.add_file_type(int(getattr(gguf.LlamaFileType, ftype)))
    if qtype not in ("f32", "f16", "bf16"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    n_layers, n_head = int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"])
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    writer.add_context_length(int(cfg.get("max_position_embeddings", 4096)))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(rope_theta(cfg))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    hd = head_dim(cfg)
    if arch == "llama":
        writer.add_rope_dimension_count(hd)
    if hd != cfg["hidden_size"] // n_head:
        writer.add_key_length(hd)
        writer.add_value_length(hd)
    notes: list[str] = []
    extra_tensors: dict[str, np.ndarray] = {}
    rs = rope_scaling(cfg)
    if rs["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rs["factor"]))
    elif rs["rope_type"] == "llama3":
        extra_tensors[gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"] = llama3_rope_factors(cfg)
    elif rs["rope_type"] != "default":
        raise SeektuneError(f"rope scaling {rs['rope_type']!r} is not supported by this GGUF export yet")
    vocab = write_tokenizer(writer, src, int(cfg["vocab_size"]), notes)

    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, ARCHS[arch]), n_layers)
    target = getattr(gguf.GGMLQuantizationType, gt)
    tied = bool(cfg.get("tie_word_embeddings", False))
    kept_f16, count = [], 0
    for hf_name, t in tqdm(src.tensors(), desc=f"writing {qtype} tensors", total=None, disable=progress is None):
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue  # llama.cpp computes rotary frequencies itself, and uses token_embd when output is absent
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise SeektuneError(f"no GGUF name for tensor {hf_name!r} of this {arch} model; it cannot be exported")
        t = t.detach().to(torch.float32)
        if arch == "llama" and hf_name.endswith("self_attn.q_proj.weight"):
            t = rope_permute(t, n_head)
        elif arch == "llama" and hf_name.endswith("self_attn.k_proj.weight"):
            t = rope_permute(t, n_kv)
        data, raw = encode_tensor(t.numpy(), target)
        if data.dtype == np.float16 and target not in (gguf.GGMLQuantizationType.F16,) and t.ndim == 2:
            kept_f16.append(name)
        writer.add_tensor(name, data, raw_dtype=raw)
        count += 1
    for name, arr in extra_tensors.items():
        writer.add_tensor(name, arr)
        count += 1
    finish_gguf(writer, out, progress)
    return GGUFReport(str(out), arch, qtype, count, out.stat().st_size, vocab["pre"], vocab["eos"], vocab["eot"],
                      kept_f16, notes)


def finish_gguf(writer, out: Path, progress=None) -> None:
    """Write everything the writer holds into `out`.partial, then rename: a file named `out` is always complete."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=progress is not None)
    writer.close()
    Path(str(out) + ".partial").replace(out)


def encode_tensor(a: np.ndarray, target):
    """(data, raw_dtype for add_tensor): 1-D tensors in F32, others in `target`, F16 where rows do not fit its blocks."""
    import gguf
    from gguf.quants import QuantError, quantize

    Q = gguf.GGMLQuantizationType
    if a.ndim <= 1 or target == Q.F32:
        return a.astype(np.float32), None
    if target == Q.F16:
        return a.astype(np.float16), None
    try:
        return quantize(a, target), target
    except QuantError:  # a row length that is not a multiple of the block size (e.g. 32 for q8_0)
        return a.astype(np.float16), None


# --- tokenizer ------------------------------------------------------------------------------------------

def detect_pre_tokenizer(tokenizer) -> str:
    """llama.cpp's name for how this tokenizer splits text before BPE, read from its tokenizer.json.

    The name must describe what the tokenizer really does (the embedded SmolLM2 tokenizer rebuilt by
    transformers splits like GPT-2), so prompts are cut into the same tokens as in training."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    pre = "\n".join(_split_patterns(spec.get("pre_tokenizer")))
    vocab = tokenizer.get_vocab()
    if "一-龥" in pre and "가-퟿" in pre:
        return "deepseek-llm"
    if "一-龥" in pre and "぀-ゟ" in pre:
        return "deepseek-v3"
    if r"\p{N}{1,3}" in pre and r"[^\r\n\p{L}\p{N}]?\p{L}+" in pre:
        return "llama-bpe"
    if r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|" in pre:
        return "deepseek-r1-qwen" if "<｜end▁of▁sentence｜>" in vocab else "qwen2"
    kinds = _pre_kinds(spec.get("pre_tokenizer"))
    if kinds == ["Digits", "ByteLevel"]:
        return "smollm"
    if kinds == ["ByteLevel"]:
        return "gpt-2"
    return "default"


def _split_patterns(node) -> list[str]:
    """The regexes of every Split pre-tokenizer (as the tokenizer uses them, not JSON-escaped)."""
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [p for n in node.get("pretokenizers", []) for p in _split_patterns(n)]
    pattern = node.get("pattern") or {}
    return [pattern.get("Regex") or pattern.get("String") or ""] if node.get("type") == "Split" else []


def _pre_kinds(node) -> list[str]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [k for p in node.get("pretokenizers", []) for k in _pre_kinds(p)]
    return [node.get("type")]


def write_tokenizer(writer, src, vocab_size: int, notes: list[str]) -> dict:
    """Vocabulary, merges, token types, special ids and the chat template, under llama.cpp's keys."""
    import gguf

    tok = src.tokenizer
    spec = json.loads(tok.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or "ByteLevel" not in json.dumps(spec.get("decoder")):
        raise SeektuneError(
            "GGUF export writes byte-level BPE vocabularies (DeepSeek, Qwen2, Llama-3, SmolLM2); this tokenizer is "
            f"{model.get('type')} with a {((spec.get('decoder') or {}).get('type'))} decoder"
        )
    by_id = {i: t for t, i in tok.get_vocab().items()}
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    if max(by_id) >= vocab_size:
        raise SeektuneError(
            f"the tokenizer has ids up to {max(by_id)} but the model's vocab_size is {vocab_size}; resize the "
            "embeddings before exporting"
        )
    tokens, types = [], []
    T = gguf.TokenType
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(T.UNUSED)
        elif i in added:
            tokens.append(added[i]["content"])
            types.append(T.CONTROL if added[i].get("special") else T.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(T.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    pre = detect_pre_tokenizer(tok)
    if pre == "default":
        notes.append("unknown pre-tokenizer: llama.cpp will use its default splitting, which may differ from training")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    ids = {k: getattr(tok, f"{k}_token_id", None) for k in ("bos", "eos", "unk", "pad")}
    for k, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                   ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
        if ids[k] is not None:
            add(int(ids[k]))
    probe = tok("a", add_special_tokens=True)["input_ids"]
    writer.add_add_bos_token(bool(ids["bos"] is not None and probe and probe[0] == ids["bos"]))
    writer.add_add_eos_token(bool(ids["eos"] is not None and probe and probe[-1] == ids["eos"]))
    # The template's end of turn (stop ids list it first), written even when it is EOS: without the key
    # llama.cpp guesses EOT from token texts (SmolLM2: <|endoftext|>, which the template never emits).
    eot = src.generation_eos[0] if src.generation_eos else None
    if eot is not None:
        writer.add_eot_token_id(int(eot))  # llama.cpp stops on it
    if src.template:
        writer.add_chat_template(src.template)
    else:
        notes.append("no chat template: llama.cpp chat mode will fall back to its own default")
    return {"pre": pre, "eos": ids["eos"], "eot": eot if eot is not None else ids["eos"]}
