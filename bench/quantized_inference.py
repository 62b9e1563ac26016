"""Memory and generation speed of bf16 vs 8-bit vs 4-bit (bitsandbytes) inference -- what `--load-in` costs and
saves -- on a randomly initialised model of a real shape (default: deepseek-llm-7b; no download).

    python bench/quantized_inference.py                       # on an NVIDIA GPU: bf16, 8bit, 4bit
    python bench/quantized_inference.py --tiny --modes bf16   # a smoke run of the same code on CPU

Needs torch, transformers, accelerate and (for 8bit/4bit) bitsandbytes. Prints a table and writes
quantized_inference.json to $OUT when it is set. Random weights make answer quality meaningless, so
fidelity is measured instead: last-token logits of each quantized model against bf16 on the same inputs
(cosine similarity, top-1 agreement).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import torch

# deepseek-ai/deepseek-llm-7b-base config.json, written out here so nothing is downloaded.
DEEPSEEK_LLM_7B = dict(
    vocab_size=102400, hidden_size=4096, intermediate_size=11008, num_hidden_layers=30, num_attention_heads=32,
    num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=10000.0,
    bos_token_id=100000, eos_token_id=100001, tie_word_embeddings=False,
)
TINY = dict(vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=512, bos_token_id=0, eos_token_id=1)


def build_checkpoint(shape: dict, folder: str) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**shape)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load(folder: str, mode: str):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kw: dict = {"dtype": torch.bfloat16}
    if torch.cuda.is_available():
        kw["device_map"] = {"": 0}
    if mode == "8bit":
        kw["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    elif mode == "4bit":
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    return AutoModelForCausalLM.from_pretrained(folder, **kw).eval()


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@torch.no_grad()
def measure(folder: str, mode: str, args, probe: torch.Tensor, reference):
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = load(folder, mode)
    sync()
    load_s = time.perf_counter() - t0
    device = next(model.parameters()).device
    weights_mib = model.get_memory_footprint() / 2**20
    row = {"mode": mode, "load_s": round(load_s, 1), "weights_MiB": round(weights_mib, 1)}
    logits = model(probe.to(device)).logits[:, -1].float().cpu()
    if reference is not None:
        cos = torch.nn.functional.cosine_similarity(logits, reference, dim=-1)
        row["logit_cosine_vs_bf16"] = round(float(cos.mean()), 4)
        row["top1_agree_vs_bf16"] = round(float((logits.argmax(-1) == reference.argmax(-1)).float().mean()), 3)
    for batch in args.batches:
        ids = torch.randint(2, model.config.vocab_size, (batch, args.prompt_tokens), device=device)
        gen = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                   pad_token_id=model.config.eos_token_id)
        model.generate(ids, attention_mask=torch.ones_like(ids), **dict(gen, max_new_tokens=4, min_new_tokens=4))  # warm-up (kernels, caches)
        sync()
        t0 = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), **gen)
        sync()
        dt = time.perf_counter() - t0
        row[f"tok_s_batch{batch}"] = round(batch * args.new_tokens / dt, 1)
    if torch.cuda.is_available():
        row["peak_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del model
    return row, logits


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", nargs="+", default=["bf16", "8bit", "4bit"], choices=["bf16", "8bit", "4bit"])
    p.add_argument("--tiny", action="store_true", help="a tiny shape (CPU smoke run)")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--workdir", default=None, help="where the random checkpoint is written (default: a temp dir)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available() and any(m != "bf16" for m in args.modes):
        p.error("8bit/4bit need an NVIDIA GPU (bitsandbytes); on CPU use --tiny --modes bf16")
    shape = TINY if args.tiny else DEEPSEEK_LLM_7B
    work = args.workdir or tempfile.mkdtemp(prefix="seektune-qbench-")
    try:
        t0 = time.perf_counter()
        build_checkpoint(shape, work)
        print(f"random {'tiny' if args.tiny else 'deepseek-llm-7b'}-shaped checkpoint written in "
              f"{time.perf_counter() - t0:.0f} s")
        torch.manual_seed(1)
        probe = torch.randint(2, shape["vocab_size"], (8, 64))
        rows, reference = [], None
        for mode in args.modes:
            row, logits = measure(work, mode, args, probe, reference)
            if mode == "bf16":
                reference = logits
            rows.append(row)
            print(row, flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    info = {
        "shape": "tiny" if args.tiny else "deepseek-llm-7b", "rows": rows, "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
    }
    try:
        import bitsandbytes
        import transformers

        info.update(transformers=transformers.__version__, bitsandbytes=bitsandbytes.__version__)
    except ImportError:
        pass
    if os.environ.get("OUT"):
        os.makedirs(os.environ["OUT"], exist_ok=True)
        with open(os.path.join(os.environ["OUT"], "quantized_inference.json"), "w") as f:
            json.dump(info, f, indent=2)
    return info


if __name__ == "__main__":
    main()
