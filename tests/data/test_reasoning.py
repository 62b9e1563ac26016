"""R1 reasoning options with the real DeepSeek-R1-Distill template (pre-fills "<think>\\n", strips reasoning from
history) and the DeepSeek-V3 template (keeps history as given): the training prompt bytes equal the inference
prompt bytes (ChatRenderer.prompt_ids) under every option, and the supervised tokens are exactly reasoning + answer
(or the answer only, per option)."""

from __future__ import annotations

import json

import pytest

from seektune.config import DataSection, DatasetSpec
from seektune.data.dataset import DatasetReport, load_conversations, prepare_data
from seektune.data.formats import Conversation, Message
from seektune.data.reasoning import ReasoningOptions
from seektune.data.render import IGNORE, ChatRenderer
from seektune.errors import TemplateError
from tests.conftest import shared

R1, V3 = "deepseek_r1_distill_qwen", "deepseek_v3"
EOS = "<｜end▁of▁sentence｜>"


def supervised_text(tok, enc) -> str:
    return tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE])


@pytest.fixture(scope="module")
def medical():
    report = DatasetReport(file="medical")
    path = str(shared("medical_o1_demo/demo_data.json"))
    return load_conversations(DatasetSpec(path=path, max_records=6), False, report)


@pytest.mark.parametrize("prefill", ["prompt", "response"])
def test_medical_o1_train_prompt_equals_inference_prompt(template_tokenizers, medical, prefill):
    tok = template_tokenizers[R1]
    renderer = ChatRenderer(tok, reasoning=ReasoningOptions(think_prefill=prefill))
    for conv in medical:
        enc = renderer.encode(conv)
        inference = renderer.prompt_ids(conv.prompt_messages)
        assert enc.input_ids[: len(inference)] == inference
        assert tok.decode(enc.input_ids[: len(inference)]).encode() == renderer.prompt_text(conv.prompt_messages).encode()
        assert enc.labels[: len(inference)] == [IGNORE] * len(inference)
        answer = conv.messages[-1]
        body = f"{answer.reasoning.strip()}\n</think>\n\n{answer.content.strip()}{EOS}"
        if prefill == "prompt":  # the template's "<think>\n" is given, not learned
            assert renderer.prompt_text(conv.prompt_messages).endswith("<｜Assistant｜><think>\n")
            assert supervised_text(tok, enc) == body
        else:  # the model learns to open its think block; the inference prompt stops before it
            assert renderer.prompt_text(conv.prompt_messages).endswith("<｜Assistant｜>")
            assert supervised_text(tok, enc) == "<think>\n" + body
        assert all(lab == IGNORE for lab in enc.labels[: len(inference)])
        assert len(inference) + len([x for x in enc.labels if x != IGNORE]) == len(enc.input_ids)


def _messages(*turns) -> Conversation:
    msgs = [Message("user", "Question one?")]
    for k, t in enumerate(turns):
        if k:
            msgs.append(Message("user", f"Follow-up {k}?"))
        msgs.append(t)
    return Conversation(msgs, "mem.jsonl", 0, 1)


@pytest.mark.parametrize("mode,expected", [("supervise", "\n</think>\n\nJust the answer." + EOS),
                                           ("ignore", "Just the answer." + EOS)])
@pytest.mark.parametrize("how", ["reasoning_content", "inline", "none"])
def test_empty_think_option(template_tokenizers, mode, expected, how):
    tok = template_tokenizers[R1]
    msg = {"reasoning_content": Message("assistant", "Just the answer.", reasoning=""),
           "inline": Message("assistant", "<think>\n\n</think>\n\nJust the answer."),
           "none": Message("assistant", "Just the answer.")}[how]  # R1 pre-fills <think>: an empty block is implied
    renderer = ChatRenderer(tok, reasoning=ReasoningOptions(empty_think=mode))
    conv = _messages(msg)
    enc = renderer.encode(conv)
    assert supervised_text(tok, enc) == expected
    inference = renderer.prompt_ids(conv.prompt_messages)
    assert enc.input_ids[: len(inference)] == inference  # the unsupervised empty block comes after the prompt
    assert ReasoningOptions().empty_think == "supervise" == DataSection().empty_think  # the default


def test_multi_turn_r1_split_turns(template_tokenizers):
    tok = template_tokenizers[R1]
    conv = _messages(Message("assistant", "First answer.", reasoning="First thoughts."),
                     Message("assistant", "<think>Second thoughts.</think>Second answer."))
    with pytest.raises(TemplateError, match="split_turns"):
        ChatRenderer(tok).encode(conv)  # the default: one sample, which R1's history stripping makes impossible
    renderer = ChatRenderer(tok, reasoning=ReasoningOptions(split_turns=True))
    first, second = renderer.encode_turns(conv)
    assert supervised_text(tok, first) == f"First thoughts.\n</think>\n\nFirst answer.{EOS}"
    assert supervised_text(tok, second) == f"Second thoughts.\n</think>\n\nSecond answer.{EOS}"
    history = renderer.prompt_ids(conv.messages[:3])
    assert second.input_ids[: len(history)] == history
    assert "First thoughts" not in tok.decode(history)  # dropped from history, as at inference
    with pytest.raises(TemplateError, match="history_reasoning: keep"):
        ChatRenderer(tok, reasoning=ReasoningOptions(split_turns=True, history="keep")).encode_turns(conv)


def test_history_reasoning_keep_or_drop_v3(template_tokenizers):
    tok = template_tokenizers[V3]
    conv = _messages(Message("assistant", "First answer.", reasoning="First thoughts."),
                     Message("assistant", "Second answer.", reasoning="Second thoughts."))
    keep = ChatRenderer(tok, reasoning=ReasoningOptions(history="keep"))
    [enc] = keep.encode_turns(conv)  # the V3 template keeps history as given: one sample supervises both turns
    runs = supervised_text(tok, enc)
    assert "First thoughts." in runs and "Second thoughts." in runs
    assert "First thoughts" in tok.decode(keep.prompt_ids(conv.messages[:3]))
    with pytest.raises(TemplateError, match="split_turns"):
        ChatRenderer(tok).encode(conv)  # drop (default) + one sample: the history would contradict turn 1's labels
    drop = ChatRenderer(tok, reasoning=ReasoningOptions(split_turns=True))
    first, second = drop.encode_turns(conv)
    history = drop.prompt_ids(conv.messages[:3])
    assert second.input_ids[: len(history)] == history and "First thoughts" not in tok.decode(history)
    assert supervised_text(tok, second).startswith("<think>\nSecond thoughts.\n</think>\n\nSecond answer.")


def test_split_turns_through_prepare_data(template_tokenizers, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}", "reasoning_content": f"r{i}"},
                          {"role": "user", "content": "more?"},
                          {"role": "assistant", "content": f"<think>deep {i}</think>b{i}"}]} for i in range(4)]
    path = tmp_path / "multi.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    cfg = DataSection(datasets=[DatasetSpec(path=str(path))], holdout_prompts=0, split_turns=True)
    data = prepare_data(cfg, ChatRenderer(template_tokenizers[R1], reasoning=ReasoningOptions.from_data(cfg)))
    [rep] = data.reports
    assert len(data.train) == 8 and rep.records_used_for_training == 4 and rep.extra_samples_from_split_turns == 4
