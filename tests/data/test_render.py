"""Rendering with real chat templates: the supervised tokens are exactly the assistant answers plus the
template's end-of-turn token, for every data format and every template; the prompt a sample is trained
on is the prompt the model gets at inference.

The expected answers are computed here from the raw records, with facts read off the real templates
(tests/fixtures/chat_templates):
  chatml (SmolLM2)         "<|im_start|>assistant\\n" + content + "<|im_end|>"
  deepseek_llm_7b_chat     "Assistant:" (generation prompt), then " " + content + EOS
  deepseek_v3              "<｜Assistant｜>" + content + EOS (after tool outputs: "<｜tool▁outputs▁end｜>" + content + EOS)
  llama3_instruct          header + content|trim + "<|eot_id|>"
  deepseek_r1_distill_qwen generation prompt "<｜Assistant｜><think>\\n" (none after tool outputs), content + EOS;
                           history assistant turns are rendered with everything up to "</think>" removed.
"""

from __future__ import annotations

import functools
import json

import pytest

from seektune.config import DatasetSpec
from seektune.data.dataset import DatasetReport, encode_all, load_conversations
from seektune.data.render import IGNORE, ChatRenderer, resolve_template
from seektune.errors import TemplateError
from tests.conftest import shared

N = 15
EOS_DS = "<｜end▁of▁sentence｜>"
END = {
    "smollm2_chatml": "<|im_end|>",
    "deepseek_llm_7b_chat": EOS_DS,
    "deepseek_v3": EOS_DS,
    "deepseek_r1_distill_qwen": EOS_DS,
    "llama3_instruct": "<|eot_id|>",
}
TEMPLATES = list(END)
R1 = "deepseek_r1_distill_qwen"
R1_PREFILL = "<think>\n"


def _think(cot: str, answer: str) -> str:
    return "<think>\n" + cot.strip() + "\n</think>\n\n" + answer.strip()


# ---- data: conversations from our loader, answers straight from the raw records ------------------


def _raw_json(rel):
    return json.loads(shared(rel).read_text(encoding="utf-8"))[:N]


def _raw_jsonl(rel):
    return [json.loads(x) for x in shared(rel).read_text(encoding="utf-8").splitlines() if x.strip()][:N]


def _sharegpt_answers(raw):
    out, prev = [], None
    for t in raw["conversations"]:
        if t["from"] in ("gpt", "function_call"):
            out.append((t["value"].strip(), prev == "observation"))
        prev = t["from"]
    return out


# name -> (path relative to shared data or a callable writing a tmp file, columns, raw loader, answers of a record)
DATASETS = {
    "alpaca": ("alpaca_en_demo/alpaca_en_demo.json", {}, _raw_json, lambda r: [(r["output"].strip(), False)]),
    "pair": ("advertisegen/dev.json", {"prompt": "content", "response": "summary"}, _raw_jsonl,
             lambda r: [(r["summary"].strip(), False)]),
    "conversation": ("emollm_data/data.json", {}, _raw_json,
                     lambda r: [(t["output"].strip(), False) for t in r["conversation"]]),
    "sharegpt": ("medicalgpt_medical_sft_zh/medical_sft_1K_format.jsonl", {}, _raw_jsonl, _sharegpt_answers),
    "sharegpt_tools": ("glaive_toolcall_en_demo/glaive_toolcall_en_demo.json", {}, _raw_json, _sharegpt_answers),
    "reasoning": ("medical_o1_demo/demo_data.json", {}, _raw_json,
                  lambda r: [(_think(r["Complex_CoT"], r["Response"]), False)]),
    # No real dataset ships in the messages format: the medical_o1 records, written as OpenAI-style
    # messages with reasoning_content (see _messages_file).
    "messages": ("messages", {}, None, lambda r: [(_think(r["Complex_CoT"], r["Response"]), False)]),
}
MULTI_TURN = {"conversation", "sharegpt_tools"}


@functools.lru_cache(maxsize=None)
def _messages_file(tmp_dir: str) -> str:
    path = f"{tmp_dir}/medical_o1_messages.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in _raw_json("medical_o1_demo/demo_data.json"):
            msgs = [{"role": "user", "content": r["Question"]},
                    {"role": "assistant", "content": r["Response"], "reasoning_content": r["Complex_CoT"]}]
            f.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("render_data"))
    out = {}
    for name, (rel, columns, raw_loader, answers) in DATASETS.items():
        if name == "messages":
            path, raws = _messages_file(tmp), _raw_json("medical_o1_demo/demo_data.json")
        else:
            path, raws = str(shared(rel)), raw_loader(rel)
        report = DatasetReport(file=path)
        convs = load_conversations(DatasetSpec(path=path, columns=columns, max_records=N), False, report)
        assert len(convs) == len(raws) == N and not report.skipped
        out[name] = (convs, raws, [answers(r) for r in raws], report.format)
    return out


def test_fixture_formats(data):
    assert {name: d[3] for name, d in data.items()} == {
        "alpaca": "alpaca", "pair": "pair", "conversation": "conversation", "sharegpt": "sharegpt",
        "sharegpt_tools": "sharegpt", "reasoning": "reasoning", "messages": "messages",
    }
    # the multi-turn sets really are multi-turn (and the tool set really has tool turns)
    for name in MULTI_TURN:
        assert max(len(a) for a in data[name][2]) > 1
    assert any(after_tool for a in data["sharegpt_tools"][2] for _, after_tool in a)


# ---- helpers ------------------------------------------------------------------------------------


def _runs(labels):
    """(start, end) of each contiguous run of supervised positions."""
    runs, start = [], None
    for i, lab in enumerate(labels + [IGNORE]):
        if lab != IGNORE and start is None:
            start = i
        elif lab == IGNORE and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _decoded_runs(tok, enc):
    return [tok.decode(enc.input_ids[a:b]) for a, b in _runs(enc.labels)]


def _expected(template: str, answer: str, after_tool: bool) -> str:
    end = END[template]
    if template == "deepseek_llm_7b_chat":
        return " " + answer + end
    if template == R1 and not after_tool:
        full = answer if answer.startswith("<think>\n") else "<think>\n\n</think>\n\n" + answer
        assert full.startswith(R1_PREFILL)
        return full[len(R1_PREFILL):] + end
    return answer + end


# ---- the key property ---------------------------------------------------------------------------

def _combo_params():
    params = []
    for ds in DATASETS:
        for tpl in TEMPLATES:
            params.append(pytest.param(ds, tpl, id=f"{ds}-{tpl}"))
    return params


@pytest.mark.parametrize(
    "ds,tpl", _combo_params()
)
def test_supervised_tokens_are_exactly_the_answers(data, template_tokenizers, ds, tpl):
    tok = template_tokenizers[tpl]
    convs, raws, answers, _ = data[ds]
    # R1 renders history turns without their reasoning: one sample can only supervise the last turn.
    loss_on = "last_assistant" if (tpl == R1 and ds in MULTI_TURN) else "all_assistant"
    renderer = ChatRenderer(tok, loss_on=loss_on)
    for conv, ans in zip(convs, answers):
        enc = renderer.encode(conv)
        assert len(enc.input_ids) == len(enc.labels) and not enc.truncated
        expected = [_expected(tpl, a, t) for a, t in ans]
        if loss_on == "last_assistant":
            expected = expected[-1:]
        got = _decoded_runs(tok, enc)
        assert "".join(got) == "".join(expected), f"record {conv.index}"
        assert got == expected, f"record {conv.index}"
        # each answer's last supervised token is the end-of-turn token, a single token
        end_id = tok.convert_tokens_to_ids(END[tpl])
        assert all(enc.input_ids[b - 1] == end_id for _, b in _runs(enc.labels))


@pytest.mark.parametrize("ds", sorted(MULTI_TURN))
def test_r1_refuses_to_supervise_every_turn_of_multi_turn_data(data, template_tokenizers, ds):
    renderer = ChatRenderer(template_tokenizers[R1], loss_on="all_assistant")
    convs, _, answers, _ = data[ds]
    multi = [c for c, a in zip(convs, answers) if len(a) > 1]
    assert multi
    for conv in multi:
        with pytest.raises(TemplateError, match="last_assistant"):
            renderer.encode(conv)


@pytest.mark.parametrize("tpl", [t for t in TEMPLATES if t != R1])
@pytest.mark.parametrize("ds", sorted(MULTI_TURN))
def test_last_assistant_supervises_only_the_last_answer(data, template_tokenizers, ds, tpl):
    tok = template_tokenizers[tpl]
    convs, _, answers, _ = data[ds]
    last = ChatRenderer(tok, loss_on="last_assistant")
    every = ChatRenderer(tok, loss_on="all_assistant")
    for conv, ans in zip(convs, answers):
        enc, full = last.encode(conv), every.encode(conv)
        assert enc.input_ids == full.input_ids  # same text, fewer labels
        assert _decoded_runs(tok, enc) == [_expected(tpl, *ans[-1])]
        assert _runs(enc.labels) == _runs(full.labels)[-1:]


@pytest.mark.parametrize("tpl", TEMPLATES)
def test_loss_on_all_supervises_every_token(data, template_tokenizers, tpl):
    tok = template_tokenizers[tpl]
    renderer = ChatRenderer(tok, loss_on="all")
    names = ["alpaca", "reasoning"] + ([] if tpl == R1 else ["conversation", "sharegpt_tools"])
    for name in names:
        for conv in data[name][0][:5]:
            enc = renderer.encode(conv)
            assert enc.labels == enc.input_ids and enc.n_supervised == len(enc.input_ids)
            # and it is the same token sequence as the assistant-only sample
            assert enc.input_ids == ChatRenderer(tok).encode(conv).input_ids


# ---- training prompt == inference prompt --------------------------------------------------------


@pytest.mark.parametrize("ds,tpl", _combo_params())
def test_training_prompt_equals_inference_prompt(data, template_tokenizers, ds, tpl):
    tok = template_tokenizers[tpl]
    loss_on = "last_assistant" if (tpl == R1 and ds in MULTI_TURN) else "all_assistant"
    renderer = ChatRenderer(tok, loss_on=loss_on)
    for conv in data[ds][0]:
        enc = renderer.encode(conv)
        start_of_last_answer = _runs(enc.labels)[-1][0]
        assert enc.input_ids[:start_of_last_answer] == renderer.prompt_ids(conv.prompt_messages), f"record {conv.index}"


# ---- truncation, stop tokens, template problems --------------------------------------------------


def test_truncation_sets_flag_and_counts_dropped_tokens(data, smol_tokenizer):
    conv = data["conversation"][0][0]
    full = ChatRenderer(smol_tokenizer).encode(conv)
    n = len(full.input_ids)
    assert n > 64
    cut = ChatRenderer(smol_tokenizer, max_length=n // 2).encode(conv)
    assert cut.truncated and cut.dropped_tokens == n - n // 2
    assert cut.input_ids == full.input_ids[: n // 2] and cut.labels == full.labels[: n // 2]
    exact = ChatRenderer(smol_tokenizer, max_length=n).encode(conv)
    assert not exact.truncated and exact.dropped_tokens == 0 and exact.input_ids == full.input_ids


def test_encode_all_reports_truncation(data, smol_tokenizer):
    convs = data["alpaca"][0]
    lengths = [len(ChatRenderer(smol_tokenizer).encode(c).input_ids) for c in convs]
    max_len = sorted(lengths)[len(lengths) // 2]
    report = DatasetReport(file="x")
    out = encode_all(convs, ChatRenderer(smol_tokenizer, max_length=max_len), False, report)
    over = [n for n in lengths if n > max_len]
    assert report.samples_truncated == len(over) > 0
    assert report.tokens_cut_by_truncation == sum(n - max_len for n in over)
    assert len(out) + report.dropped_no_supervised_after_truncation == len(convs)
    assert report.tokens == sum(len(e.input_ids) for e in out)


@pytest.mark.parametrize("tpl", TEMPLATES)
def test_stop_token_ids_contain_the_end_token(template_tokenizers, tpl):
    tok = template_tokenizers[tpl]
    renderer = ChatRenderer(tok)
    end_id = tok.convert_tokens_to_ids(END[tpl])
    assert tok.decode([end_id]) == END[tpl]
    assert renderer.end_of_turn == END[tpl]
    assert end_id in renderer.stop_token_ids
    assert tok.eos_token_id in renderer.stop_token_ids


def test_tokenizer_without_chat_template_is_refused(smol_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    tok.chat_template = None
    with pytest.raises(TemplateError, match="built-in"):
        ChatRenderer(tok)
    with pytest.raises(TemplateError, match="built-in"):
        resolve_template(None, tok)


def test_the_built_in_option_names_a_usable_template(smol_dir, smol_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    tok.chat_template = None
    with pytest.raises(TemplateError) as ei:
        ChatRenderer(tok)
    listed = str(ei.value).split("built-in: ", 1)[1].split(")", 1)[0]
    names = [n.strip() for n in listed.split(",") if n.strip()]
    assert names
    text, _ = resolve_template(names[0], tok)
    from seektune.data.formats import Conversation, Message

    enc = ChatRenderer(tok, template=text).encode(Conversation([Message("user", "hi"), Message("assistant", "ok")]))
    assert _decoded_runs(tok, enc)[0].startswith("ok")


def test_deepseek_llm_has_no_tool_role_so_tool_turns_become_user_turns(data, template_tokenizers):
    convs, raws, _, _ = data["sharegpt_tools"]
    n_observations = sum(t["from"] == "observation" for r in raws for t in r["conversations"])
    assert n_observations > 0
    for tpl in ("smollm2_chatml", "deepseek_v3", "llama3_instruct"):
        assert ChatRenderer(template_tokenizers[tpl]).supports_role("tool"), tpl
    tok = template_tokenizers["deepseek_llm_7b_chat"]
    renderer = ChatRenderer(tok)
    assert renderer.supports_role("tool") is False
    report = DatasetReport(file="glaive")
    out = encode_all(convs, renderer, False, report)
    assert len(out) == len(convs) and not report.skipped
    assert report.tool_turns_rendered_as_user == n_observations
    # the tool output is in the sample, as a user turn of this template ("User: ...\n\n")
    for enc, raw in zip(out, raws):
        text = tok.decode(enc.input_ids)
        for t in raw["conversations"]:
            if t["from"] == "observation":
                assert "User: " + t["value"] + "\n\n" in text
    # a template with a tool role counts nothing
    other = DatasetReport(file="glaive")
    encode_all(convs, ChatRenderer(template_tokenizers["deepseek_v3"]), False, other)
    assert other.tool_turns_rendered_as_user == 0
