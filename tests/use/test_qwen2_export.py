"""GGUF export of a Qwen2 model (the DeepSeek-R1-Distill-Qwen architecture): a tiny random Qwen2 with the real
R1 distill template, exported to f16 and read back by transformers' GGUF loader -- same greedy tokens."""

from __future__ import annotations

import pytest
import torch

from seektune.data.formats import Message
from seektune.data.render import ChatRenderer
from tests.conftest import template_tokenizer


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory, smol_dir):
    from transformers import AutoModelForCausalLM, Qwen2Config

    tok = template_tokenizer(smol_dir, "deepseek_r1_distill_qwen")
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False, initializer_range=0.1,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # Qwen2's q/k/v biases start at zero; make them count
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.1)
    d = tmp_path_factory.mktemp("models") / "tiny-qwen2-r1"
    model.save_pretrained(str(d), safe_serialization=True)
    tok.save_pretrained(str(d))
    return d, model, tok


def test_qwen2_f16_export_reads_back_with_same_greedy_tokens(tiny_qwen2, tmp_path):
    import gguf
    from transformers import AutoModelForCausalLM

    from seektune.export.gguf import export_gguf

    folder, model, tok = tiny_qwen2
    report = export_gguf(folder, tmp_path / "qwen2-f16.gguf", "f16")
    assert report.arch == "qwen2"
    reader = gguf.GGUFReader(report.path)
    assert reader.fields["general.architecture"].contents() == "qwen2"
    assert reader.fields["tokenizer.chat_template"].contents() == tok.chat_template
    assert reader.fields["tokenizer.ggml.eos_token_id"].contents() == tok.convert_tokens_to_ids("<｜end▁of▁sentence｜>")
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_q.bias", "output.weight", "token_embd.weight"} <= names

    back = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="qwen2-f16.gguf", dtype=torch.float32).eval()
    renderer = ChatRenderer(tok)
    for prompt in ["Who are you?", "What is 2+2?", "Write a poem about the sea."]:
        ids = torch.tensor([renderer.prompt_ids([Message("user", prompt)])])
        assert renderer.render_text([Message("user", prompt)], True).endswith("<think>\n")
        kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        want = model.generate(ids, **kw)
        got = back.generate(ids, **kw)
        assert torch.equal(want, got)
        with torch.no_grad():
            assert (model(ids).logits - back(ids).logits).abs().max() < 1e-2
