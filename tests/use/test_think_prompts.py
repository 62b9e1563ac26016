"""Fast pieces: <think> handling (streaming and whole), prompt files of every kind, --load-in on CPU."""

from __future__ import annotations

import json

import pytest

from seektune.errors import DataError, SeektuneError
from seektune.infer.prompts import read_prompts
from seektune.infer.think import ThinkFilter, prompt_prefill, shown, split_thinking
from tests.conftest import shared


def test_split_thinking_with_and_without_prefill():
    assert split_thinking("<think>\nhmm\n</think>\n\nYes.") == ("hmm", "Yes.")
    assert split_thinking("hmm\n</think>\n\nYes.", prefill="<think>\n") == ("hmm", "Yes.")
    assert split_thinking("Just an answer") == (None, "Just an answer")
    assert split_thinking("still thinking", prefill="<think>\n") == ("still thinking", "")
    assert shown("hmm\n</think>\n\nYes.", "<think>\n", True) == "<think>\nhmm\n</think>\n\nYes."
    assert shown("hmm\n</think>\n\nYes.", "<think>\n", False) == "Yes."
    assert prompt_prefill("<｜User｜>hi<｜Assistant｜><think>\n") == "<think>\n"
    assert prompt_prefill("<|im_start|>assistant\n") == ""


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7])
def test_think_filter_streams_like_the_whole_text(cut):
    text = "<think>\nlet me see </thi\n</think>\n\nThe answer is 4. <think>x</think>Done"
    f = ThinkFilter()
    pieces = [text[i:i + cut] for i in range(0, len(text), cut)]
    out = "".join(f.feed(p) for p in pieces) + f.feed("", final=True)
    assert out == "The answer is 4. Done"
    f = ThinkFilter("<think>\n")  # R1: the prompt opened the block
    assert "".join(f.feed(p) for p in ["reason", "ing</th", "ink>\n\nOK"]) + f.feed("", True) == "OK"


def test_prompt_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("Who are you?\n\n  What can you do?  \n", encoding="utf-8")
    items = read_prompts(txt, system="Be brief.")
    assert [i.label for i in items] == ["Who are you?", "What can you do?"]
    assert items[0].messages[0].role == "system" and items[0].reference is None
    jl = tmp_path / "p.jsonl"
    jl.write_text(json.dumps({"prompt": "Hi"}) + "\n" + json.dumps({"messages": [{"role": "user", "content": "Yo"}]}) + "\n")
    assert [i.label for i in read_prompts(jl)] == ["Hi", "Yo"]
    # Any training format: its prompts, and its answers as references.
    ident = read_prompts(shared("identity/identity.json"), limit=3)
    assert len(ident) == 3 and all(i.reference for i in ident)
    adgen = read_prompts(shared("advertisegen/dev.json"), columns={"prompt": "content", "response": "summary"}, limit=2)
    assert adgen[0].label.startswith("类型#") and adgen[0].reference
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"nothing": 1}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2.*no prompt in fields"):
        read_prompts(bad)


def test_load_in_on_cpu_says_gpu_only():
    import torch

    from seektune.infer.quantized import quantization_kwargs

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SeektuneError, match="needs an NVIDIA GPU"):
        quantization_kwargs("4bit", torch.bfloat16)
    with pytest.raises(SeektuneError, match="choose 8bit or 4bit"):
        quantization_kwargs("3bit", torch.bfloat16)


def test_gguf_types_and_k_quants():
    from seektune.export.gguf import check_type

    assert check_type("Q8_0") == "q8_0"
    with pytest.raises(SeektuneError, match="llama-quantize model-f16.gguf model-q4_k_m.gguf Q4_K_M"):
        check_type("q4_k_m")
    with pytest.raises(SeektuneError, match="choose one of"):
        check_type("q3")


def test_pre_tokenizer_names_for_llama_cpp(smol_dir):
    """llama.cpp must split text as the training tokenizer did: its name is read from the tokenizer itself."""
    from tokenizers import Regex, pre_tokenizers
    from transformers import AutoTokenizer
    from transformers.integrations.gguf.gguf_tokenizer_mapping import _LLAMA3_SPLIT
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_SPLIT

    from seektune.export.gguf import detect_pre_tokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    assert detect_pre_tokenizer(tok) == "gpt-2"  # the embedded tokenizer, rebuilt from GGUF by transformers

    def with_split(regex):
        t = AutoTokenizer.from_pretrained(smol_dir)
        t.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(regex), behavior="isolated"), pre_tokenizers.ByteLevel(use_regex=False)])
        return t

    assert detect_pre_tokenizer(with_split(_LLAMA3_SPLIT)) == "llama-bpe"
    qwen = with_split(QWEN2_SPLIT)
    assert detect_pre_tokenizer(qwen) == "qwen2"
    qwen.add_special_tokens({"additional_special_tokens": ["<｜end▁of▁sentence｜>"]})
    assert detect_pre_tokenizer(qwen) == "deepseek-r1-qwen"
    digits = AutoTokenizer.from_pretrained(smol_dir)
    digits.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    assert detect_pre_tokenizer(digits) == "smollm"
