"""Merge and GGUF export of a really trained adapter on the embedded model, read back by independent readers
(transformers' GGUF loader, gguf's GGUFReader)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

import seektune
from seektune.data.formats import Message
from seektune.infer.engine import Sampling, generate

PROMPTS = ["Who are you?", "What is your name?", "Who made you?", "Tell me about yourself.", "Hello, nice to meet you"]


@pytest.fixture(scope="module")
def adapter_model(trained_run):
    return seektune.load(trained_run.path, precision="fp32")


@pytest.fixture(scope="module")
def merged_model(merged_dir):
    from seektune.infer.target import load_target

    return load_target(str(merged_dir[0]), precision="fp32")


def _greedy_ids(model, renderer, n=24):
    answers = generate(model, renderer, [[Message("user", p)] for p in PROMPTS], Sampling(max_new_tokens=n))
    return [a.token_ids for a in answers]


def test_merge_equals_base_plus_adapter(trained_run, merged_dir, adapter_model, merged_model):
    out, report = merged_dir
    assert report.max_logit_diff_merged_vs_adapter < 1e-3
    assert report.max_logit_diff_merged_vs_base > 0.5  # the adapter survived the merge
    # The merged folder is complete: shards, tokenizer with the training template, stop ids, base files.
    assert list(out.glob("*.safetensors"))
    assert merged_model.tokenizer.chat_template == adapter_model.tokenizer.chat_template
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] in (report.eos_token_ids, report.eos_token_ids[0])
    assert "seektune_source.json" in report.copied_files and (out / "seektune_source.json").is_file()
    assert json.loads((out / "seektune_merge.json").read_text())["dtype"] == "fp32"

    with_adapter = _greedy_ids(adapter_model.model, adapter_model.renderer)
    merged = _greedy_ids(merged_model.model, merged_model.renderer)
    assert merged == with_adapter
    with adapter_model.model.disable_adapter():
        base = _greedy_ids(adapter_model.model, adapter_model.renderer)
    assert base != merged
    ids = torch.tensor([adapter_model.renderer.prompt_ids([Message("user", PROMPTS[0])])])
    with torch.no_grad():
        diff = (adapter_model.model(ids).logits - merged_model.model(ids).logits).abs().max()
    assert diff < 1e-3


def test_generation_stops_on_held_out_prompts(trained_run, adapter_model):
    """Trap 2: after fine-tuning the model ends its answers with the end-of-turn token by itself."""
    from seektune.data.dataset import prepare_data

    data = prepare_data(trained_run.config.data, adapter_model.renderer)
    assert len(data.holdout) == 5
    answers = generate(adapter_model.model, adapter_model.renderer, [c.prompt_messages for c in data.holdout],
                       Sampling(max_new_tokens=96))
    assert all(a.stopped for a in answers), [(a.tokens, a.text) for a in answers]
    assert all(0 < a.tokens < 96 for a in answers)


@pytest.fixture(scope="module")
def gguf_files(merged_dir, tmp_path_factory):
    from seektune.export.gguf import export_gguf

    d = tmp_path_factory.mktemp("gguf")
    return {t: export_gguf(merged_dir[0], d / f"model-{t}.gguf", t) for t in ("f16", "q8_0")}


def _read_back(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model, tok


def test_gguf_f16_same_greedy_tokens(gguf_files, merged_model):
    from pathlib import Path

    report = gguf_files["f16"]
    model, tok = _read_back(Path(report.path))
    assert tok.chat_template == merged_model.tokenizer.chat_template
    assert tok.eos_token == "<|im_end|>"
    renderer = merged_model.renderer
    for p in PROMPTS:  # the tokenizer in the file cuts the training prompt into the same ids
        text = renderer.render_text([Message("user", p)], True)
        assert tok(text, add_special_tokens=False)["input_ids"] == renderer.prompt_ids([Message("user", p)])
    assert _greedy_ids(model, renderer) == _greedy_ids(merged_model.model, renderer)


def test_gguf_q8_0_reads_back_close(gguf_files, merged_model):
    from pathlib import Path

    import gguf

    f16, q8 = gguf_files["f16"], gguf_files["q8_0"]
    assert q8.bytes < 0.6 * f16.bytes
    reader = gguf.GGUFReader(q8.path)
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q8_0" and kinds["blk.0.attn_norm.weight"] == "F32"
    assert reader.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    eot = merged_model.tokenizer.convert_tokens_to_ids(merged_model.renderer.end_of_turn)
    assert reader.fields["tokenizer.ggml.eot_token_id"].contents() == eot  # written even though it is also EOS
    model, _ = _read_back(Path(q8.path))
    renderer = merged_model.renderer
    agree = 0
    for p in PROMPTS:
        ids = torch.tensor([renderer.prompt_ids([Message("user", p)])])
        with torch.no_grad():
            a, b = model(ids).logits[0, -1], merged_model.model(ids).logits[0, -1]
        agree += int(a.argmax() == b.argmax())
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99
    assert agree >= 4


def test_gguf_lora_adapter_matches_merged_weights(trained_run, merged_dir, tmp_path):
    """The GGUF LoRA carries llama.cpp's keys, and base + alpha/r * B @ A gives the merged tensor in
    llama.cpp's layout (q rows permuted)."""
    import gguf
    from safetensors import safe_open

    from seektune.export.gguf import rope_permute
    from seektune.export.gguf_lora import export_gguf_lora
    from seektune.models.source import resolve_source

    report = export_gguf_lora(trained_run.path, tmp_path / "lora.gguf", "f32")
    r = gguf.GGUFReader(report.path)
    assert r.fields["general.type"].contents() == "adapter"
    assert r.fields["adapter.type"].contents() == "lora"
    assert r.fields["general.architecture"].contents() == "llama"
    alpha = r.fields["adapter.lora.alpha"].contents()
    assert alpha == trained_run.config.lora.alpha
    t = {x.name: np.array(x.data) for x in r.tensors}
    assert len(t) == 2 * 7 * 30  # 7 projections in each of 30 layers, A and B each
    a, b = t["blk.3.attn_q.weight.lora_a"], t["blk.3.attn_q.weight.lora_b"]
    rank = a.shape[0]
    name = "model.layers.3.self_attn.q_proj.weight"
    base_dir = resolve_source(None).location
    with safe_open(f"{base_dir}/model.safetensors", "pt") as f:
        base = f.get_tensor(name)
    with safe_open(str(next(merged_dir[0].glob("*.safetensors"))), "pt") as f:
        merged = f.get_tensor(name)
    n_head = 9
    rebuilt = rope_permute(base, n_head).numpy() + alpha / rank * (b @ a)
    want = rope_permute(merged, n_head).numpy()
    assert np.abs(rebuilt - want).max() < 1e-4
    assert np.abs(b @ a).max() > 1e-3


# --- llama.cpp itself (llama-cpp-python, which pip builds from source: `pip install '.[llama]'`) -----------------

needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (pip builds it from source: pip install -c constraints.txt '.[llama]')")
LLAMA_TOKENS = 24


def _llama(path, **kw):
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=2, seed=0, verbose=False, **kw)


def _llama_greedy(llm, renderer, prompt, n=LLAMA_TOKENS):
    """Greedy decode of the training prompt's ids, cut at the template's stop tokens like seektune's own decode."""
    ids = renderer.prompt_ids([Message("user", prompt)])
    stops, got = set(renderer.stop_token_ids), []
    for t in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
        if t in stops or len(got) == n:
            break
        got.append(t)
    return got


@pytest.mark.slow
@needs_llama_cpp
def test_gguf_f16_in_llama_cpp(gguf_files, merged_model):
    """llama.cpp loads the f16 file, reads the training chat template and end-of-turn token from its metadata,
    cuts prompts into the training ids, decodes greedily the same tokens as the merged HF model, and its chat
    API (the template from the file) stops at the end of turn with the same answer."""
    import llama_cpp

    llm = _llama(gguf_files["f16"].path)
    renderer, tok = merged_model.renderer, merged_model.tokenizer
    assert llm.metadata["tokenizer.chat_template"] == tok.chat_template
    end_of_turn = tok.convert_tokens_to_ids(renderer.end_of_turn)
    assert renderer.end_of_turn == "<|im_end|>"
    assert llm.token_eos() == end_of_turn
    assert llm._model.token_eot() == end_of_turn  # from the file, not guessed by llama.cpp from token texts
    assert llama_cpp.llama_vocab_is_eog(llm._model.vocab, end_of_turn)
    assert not llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok.convert_tokens_to_ids("<|im_start|>"))

    want = _greedy_ids(merged_model.model, renderer, n=LLAMA_TOKENS)
    got = []
    for prompt in PROMPTS:
        text = renderer.render_text([Message("user", prompt)], True)
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == renderer.prompt_ids([Message("user", prompt)])
        got.append(_llama_greedy(llm, renderer, prompt))
    same = sum(g == w for g, w in zip(got, want))
    print(f"\nllama.cpp f16: greedy tokens identical to the merged HF model on {same}/{len(PROMPTS)} prompts "
          f"(up to {LLAMA_TOKENS} tokens each, cut at the end of turn)")
    assert got == want

    answers = generate(merged_model.model, renderer, [[Message("user", p)] for p in PROMPTS], Sampling(max_new_tokens=96))
    for prompt, a in zip(PROMPTS, answers):
        out = llm.create_chat_completion([{"role": "user", "content": prompt}], temperature=0.0, top_k=1, top_p=1.0,
                                         min_p=0.0, repeat_penalty=1.0, max_tokens=96)
        choice = out["choices"][0]
        assert choice["message"]["content"].strip() == a.text
        assert (choice["finish_reason"] == "stop") == a.stopped
    print(f"llama.cpp f16 chat API: same answers as HF on {len(PROMPTS)}/{len(PROMPTS)} prompts, "
          f"{sum(a.stopped for a in answers)} of them ended by the model at <|im_end|>")


@pytest.mark.slow
@needs_llama_cpp
def test_gguf_q8_0_in_llama_cpp(gguf_files, merged_model):
    """llama.cpp loads the q8_0 file; its greedy answers stay close to the merged HF model (quantization may
    change a late token, so this counts agreement rather than requiring it everywhere)."""
    llm = _llama(gguf_files["q8_0"].path)
    renderer = merged_model.renderer
    assert llm.metadata["general.file_type"] == "7"  # LLAMA_FTYPE_MOSTLY_Q8_0
    want = _greedy_ids(merged_model.model, renderer, n=LLAMA_TOKENS)
    got = [_llama_greedy(llm, renderer, p) for p in PROMPTS]
    same = sum(g == w for g, w in zip(got, want))
    first = sum(g[:1] == w[:1] for g, w in zip(got, want))
    print(f"\nllama.cpp q8_0: greedy tokens identical to the merged HF model on {same}/{len(PROMPTS)} prompts "
          f"(up to {LLAMA_TOKENS} tokens each); first token agrees on {first}/{len(PROMPTS)}")
    for g in got:
        print("  q8_0:", repr(merged_model.tokenizer.decode(g)))
    assert first >= 4
    assert all(g for g in got)


@pytest.fixture(scope="module")
def base_gguf(tmp_path_factory):
    from seektune.export.gguf import export_gguf
    from seektune.models.source import resolve_source

    return export_gguf(resolve_source(None).location, tmp_path_factory.mktemp("base-gguf") / "base-f16.gguf", "f16")


@pytest.mark.slow
@needs_llama_cpp
@pytest.mark.parametrize("qtype", ["f16", "f32"])  # f16: the CLI's default
def test_gguf_lora_in_llama_cpp(trained_run, base_gguf, merged_model, tmp_path, qtype):
    """`export gguf --adapter-only` on top of the base model's GGUF in llama.cpp (its --lora) decodes greedily
    the same tokens as the merged HF model."""
    from seektune.export.gguf_lora import export_gguf_lora

    lora = export_gguf_lora(trained_run.path, tmp_path / "lora.gguf", qtype)
    llm = _llama(base_gguf.path, lora_path=lora.path)
    plain = _llama(base_gguf.path)
    renderer = merged_model.renderer
    want = _greedy_ids(merged_model.model, renderer, n=LLAMA_TOKENS)
    got = [_llama_greedy(llm, renderer, p) for p in PROMPTS]
    without = [_llama_greedy(plain, renderer, p) for p in PROMPTS]
    same = sum(g == w for g, w in zip(got, want))
    print(f"\nllama.cpp base f16 + GGUF LoRA ({qtype}): greedy tokens identical to the merged HF model on "
          f"{same}/{len(PROMPTS)} prompts; the base alone on {sum(g == w for g, w in zip(without, want))}")
    assert without != want  # the adapter matters, so agreement means it was applied
    assert got == want
