"""The Ollama TEMPLATE is measured from the training template: for ChatML (embedded) and the DeepSeek templates
its pieces re-render conversations byte for byte, and the Modelfile carries the right stop tokens."""

from __future__ import annotations

import pytest

from seektune.data.formats import Message
from seektune.data.render import ChatRenderer
from seektune.export.ollama import check_pieces, measure_pieces, modelfile_text, stop_strings

EXPECTED_STOPS = {
    "smollm2_chatml": ["<|im_end|>", "<|im_start|>"],
    "deepseek_llm_7b_chat": ["<｜end▁of▁sentence｜>", "User:"],
    "deepseek_v3": ["<｜end▁of▁sentence｜>", "<｜User｜>"],
    "deepseek_r1_distill_qwen": ["<｜end▁of▁sentence｜>", "<｜User｜>"],
    "llama3_instruct": ["<|eot_id|>", "<|start_header_id|>"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_STOPS))
def test_pieces_reproduce_the_training_template(template_tokenizers, name):
    renderer = ChatRenderer(template_tokenizers[name])
    pieces = measure_pieces(renderer)
    check_pieces(pieces, renderer)
    convo = [Message("system", "S"), Message("user", "q1"), Message("assistant", "a1"), Message("user", "q2")]
    assert pieces.render(convo) == renderer.render_text(convo, True)
    stops = stop_strings(renderer, pieces)
    assert stops[: len(EXPECTED_STOPS[name])] == EXPECTED_STOPS[name] or set(EXPECTED_STOPS[name]) <= set(stops)
    text = modelfile_text("model-q8_0.gguf", pieces, stops)
    assert text.startswith("FROM ./model-q8_0.gguf\n")
    for s in EXPECTED_STOPS[name]:
        assert f'PARAMETER stop "{s}"' in text
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    assert "{{ range $i, $_ := .Messages }}" in template and "{{-" not in template
    for piece in (pieces.user_prefix, pieces.assistant_suffix, pieces.generation_prompt):
        assert piece in template
    if name == "deepseek_r1_distill_qwen":
        assert pieces.generation_prompt == "<think>\n"  # R1's pre-fill, as in training
