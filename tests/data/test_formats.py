"""Formats: each real dataset is recognised and EVERY record converts to the conversation its raw
fields describe; bad records raise a DataError naming the record and the field; skipping bad records
accounts for every record."""

from __future__ import annotations

import csv
import json

import pytest

from seektune.config import DataSection, DatasetSpec
from seektune.data.dataset import DatasetReport, load_conversations, prepare_data
from seektune.data.formats import detect_format, to_conversation
from seektune.data.read import read_records
from seektune.data.render import ChatRenderer
from seektune.errors import DataError
from tests.conftest import shared


def _load(path, columns=None, fmt="auto", skip_bad=False):
    spec = DatasetSpec(path=str(path), columns=columns or {}, format=fmt)
    report = DatasetReport(file=str(path))
    convs = load_conversations(spec, skip_bad, report)
    return convs, report


def _roles(conv):
    return [m.role for m in conv.messages]


def _texts(conv, role):
    return [m.content for m in conv.messages if m.role == role]


def _raw_json(rel):
    return json.loads(shared(rel).read_text(encoding="utf-8"))


def _raw_jsonl(rel):
    return [json.loads(line) for line in shared(rel).read_text(encoding="utf-8").splitlines() if line.strip()]


# ---- real datasets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rel,count",
    [
        ("alpaca_en_demo/alpaca_en_demo.json", 698),
        ("alpaca_zh_demo/alpaca_zh_demo.json", 700),
        ("identity/identity.json", 71),
    ],
)
def test_alpaca_datasets(rel, count):
    raw = _raw_json(rel)
    assert len(raw) == count  # SOURCE.md
    convs, report = _load(shared(rel))
    assert report.format == "alpaca"
    assert report.records_read == count and not report.skipped
    assert len(convs) == count
    for r, c in zip(raw, convs):
        user = r["instruction"] + ("\n" + r["input"] if r["input"].strip() else "")
        assert _roles(c) == ["user", "assistant"]
        assert _texts(c, "user") == [user]
        assert _texts(c, "assistant") == [r["output"]]
        assert c.reference == r["output"]
        assert c.prompt_messages == c.messages[:1]


def test_advertisegen_with_column_mapping():
    raw = _raw_jsonl("advertisegen/dev.json")
    convs, report = _load(shared("advertisegen/dev.json"), {"prompt": "content", "response": "summary"})
    assert report.format == "pair" and len(convs) == len(raw) == 770 and not report.skipped
    for r, c in zip(raw, convs):
        assert [(m.role, m.content) for m in c.messages] == [("user", r["content"]), ("assistant", r["summary"])]


def test_advertisegen_without_mapping_suggests_it():
    with pytest.raises(DataError) as ei:
        _load(shared("advertisegen/dev.json"))
    msg = str(ei.value)
    assert ei.value.record == 0 and ei.value.line == 1
    assert "content" in msg and "summary" in msg  # the fields it found
    assert "columns" in msg and "prompt" in msg and "response" in msg  # how to map them


def test_emollm_multi_turn_conversations():
    raw = _raw_json("emollm_data/data.json")
    convs, report = _load(shared("emollm_data/data.json"))
    assert report.format == "conversation" and len(convs) == len(raw) == 750 and not report.skipped
    for r, c in zip(raw, convs):
        turns = r["conversation"]
        assert len(_texts(c, "assistant")) == len(turns)
        assert _texts(c, "assistant") == [t["output"] for t in turns]
        assert _texts(c, "user") == [t["input"] for t in turns]
        assert c.messages[0].role == "system" and c.messages[0].content == turns[0]["system"]
        assert _roles(c)[1:] == ["user", "assistant"] * len(turns)
    assert {len(r["conversation"]) for r in raw} == {2, 3, 4}  # really multi-turn


def test_medicalgpt_sharegpt():
    raw = _raw_jsonl("medicalgpt_medical_sft_zh/medical_sft_1K_format.jsonl")
    convs, report = _load(shared("medicalgpt_medical_sft_zh/medical_sft_1K_format.jsonl"))
    assert report.format == "sharegpt" and len(convs) == len(raw) == 700 and not report.skipped
    role = {"human": "user", "gpt": "assistant"}
    for r, c in zip(raw, convs):
        assert [(m.role, m.content) for m in c.messages] == [(role[t["from"]], t["value"]) for t in r["conversations"]]


@pytest.mark.parametrize("rel", ["glaive_toolcall_en_demo/glaive_toolcall_en_demo.json",
                                 "glaive_toolcall_zh_demo/glaive_toolcall_zh_demo.json"])
def test_glaive_toolcall_sharegpt(rel):
    raw = _raw_json(rel)
    convs, report = _load(shared(rel))
    assert report.format == "sharegpt" and len(convs) == len(raw) == 200 and not report.skipped
    role = {"human": "user", "gpt": "assistant", "function_call": "assistant", "observation": "tool"}
    n_calls = 0
    for r, c in zip(raw, convs):
        assert [(m.role, m.content) for m in c.messages] == [(role[t["from"]], t["value"]) for t in r["conversations"]]
        n_calls += sum(t["from"] == "function_call" for t in r["conversations"])
        tools = json.loads(r["tools"]) if r["tools"].strip() else None
        if isinstance(tools, list) and tools:
            assert c.tools == tools
    assert n_calls > 0


def test_medical_o1_reasoning():
    raw = _raw_json("medical_o1_demo/demo_data.json")
    convs, report = _load(shared("medical_o1_demo/demo_data.json"))
    assert report.format == "reasoning" and len(convs) == len(raw) == 138 and not report.skipped
    for r, c in zip(raw, convs):
        assert _roles(c) == ["user", "assistant"]
        assert c.messages[0].content == r["Question"]
        assert c.messages[1].content == r["Response"]
        assert c.messages[1].reasoning == r["Complex_CoT"]


CMMLU_PATTERN = "{Question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}"


def test_cmmlu_csv_with_a_composed_column():
    files = sorted(shared("cmmlu/dev").glob("*.csv")) + sorted(shared("cmmlu/test").glob("*.csv"))
    assert len(files) == 67 + 4  # SOURCE.md
    total = 0
    for path in files:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        convs, report = _load(path, {"prompt": CMMLU_PATTERN, "response": "Answer"})
        assert report.format == "pair" and not report.skipped and len(convs) == len(rows)
        for row, c in zip(rows, convs):
            prompt = (f"{row['Question']}\nA. {row['A']}\nB. {row['B']}\nC. {row['C']}\nD. {row['D']}")
            assert [(m.role, m.content) for m in c.messages] == [("user", prompt), ("assistant", row["Answer"])]
        total += len(rows)
    assert total == 335 + 966  # SOURCE.md


def test_composed_column_missing_field_is_named(tmp_path):
    path = tmp_path / "mc.csv"
    path.write_text("Question,A,Answer\nq1,a1,A\n", encoding="utf-8")
    with pytest.raises(DataError) as ei:
        _load(path, {"prompt": CMMLU_PATTERN, "response": "Answer"})
    assert ei.value.field == "B" and ei.value.record == 0 and "`B`" in str(ei.value)


def test_default_system_is_added_only_where_missing():
    recs = list(read_records(shared("emollm_data/data.json")))[:2] + list(
        read_records(shared("alpaca_en_demo/alpaca_en_demo.json"))
    )[:2]
    for rec in recs:
        fmt = detect_format(rec, {})
        conv = to_conversation(rec, fmt, {}, default_system="SYS")
        systems = [m.content for m in conv.messages if m.role == "system"]
        assert systems == (["SYS"] if fmt == "alpaca" else [rec.data["conversation"][0]["system"]])


# ---- bad records --------------------------------------------------------------------------------


def _write_json(tmp_path, name, records):
    path = tmp_path / name
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def _error(path, fmt="auto", columns=None) -> DataError:
    with pytest.raises(DataError) as ei:
        _load(path, columns, fmt=fmt)
    return ei.value


def test_missing_output_names_field_and_record(tmp_path):
    recs = [{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": ""}]
    path = _write_json(tmp_path, "alpaca.json", recs)
    e = _error(path)
    assert e.field == "output" and e.record == 1
    # indent=2: record 0 spans lines 2-6, record 1 starts on line 7.
    assert e.line == 7
    msg = str(e)
    assert f"{path}:7" in msg and "record 1" in msg and "`output`" in msg and "missing" in msg
    assert "--skip-bad-records" in msg


def test_unknown_sharegpt_speaker(tmp_path):
    recs = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "robot", "value": "beep"}]}]
    e = _error(_write_json(tmp_path, "sg.json", recs))
    assert e.record == 0 and e.field == "conversations[1].from"
    assert "'robot'" in str(e) and "unknown speaker" in str(e)


def test_unknown_messages_role(tmp_path):
    recs = [{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]}]
    e = _error(_write_json(tmp_path, "msgs.json", recs))
    assert e.field == "messages[1].role" and "'bot'" in str(e)


def test_two_user_turns_in_a_row(tmp_path):
    recs = [{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                          {"role": "assistant", "content": "c"}]}]
    e = _error(_write_json(tmp_path, "msgs.json", recs))
    assert e.record == 0 and e.field == "turn 1"
    assert "two user turns in a row" in str(e)


def test_empty_assistant_answer(tmp_path):
    sg = [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": " \n "}]}]
    e = _error(_write_json(tmp_path, "sg.json", sg))
    assert e.field == "turn 1" and "empty assistant answer" in str(e)
    alpaca = [{"instruction": "q", "input": "", "output": "   "}]
    e = _error(_write_json(tmp_path, "al.json", alpaca))
    assert e.field == "output" and "empty" in str(e)


def test_conversation_must_have_an_answer_and_start_with_user(tmp_path):
    e = _error(_write_json(tmp_path, "a.json", [{"messages": [{"role": "user", "content": "q"}]}]))
    assert "no assistant turn" in str(e)
    e = _error(_write_json(tmp_path, "b.json", [{"messages": [{"role": "assistant", "content": "x"},
                                                              {"role": "user", "content": "q"},
                                                              {"role": "assistant", "content": "y"}]}]))
    assert "must start with a user turn" in str(e)


def test_non_object_record(tmp_path):
    path = _write_json(tmp_path, "mixed.json", [{"instruction": "a", "input": "", "output": "b"}, ["a", "b"]])
    for fmt in ("auto", "alpaca"):
        e = _error(path, fmt=fmt)
        assert e.record == 1 and e.line == 7 and "object" in str(e) and "got list" in str(e)
    # As the first record, where the format is detected from it.
    e = _error(_write_json(tmp_path, "first.json", ["text", {"instruction": "a", "input": "", "output": "b"}]))
    assert e.record == 0 and "expected a JSON object" in str(e) and "got str" in str(e)


def test_mapped_field_missing_names_both_names(tmp_path):
    path = _write_json(tmp_path, "pair.json", [{"content": "x"}])
    e = _error(path, fmt="pair", columns={"prompt": "content", "response": "summary"})
    assert e.field == "summary" and "response" in str(e)


# ---- skipping bad records -----------------------------------------------------------------------

BAD = [
    {"instruction": "no output", "input": ""},
    ["not", "an", "object"],
    {"instruction": "empty", "input": "", "output": ""},
    {"instruction": 7, "input": "", "output": "not text instruction"},
]


def _mixed_file(tmp_path, n_good=20):
    good = _raw_json("alpaca_en_demo/alpaca_en_demo.json")[:n_good]
    records, bad_at = [], []
    for i, r in enumerate(good):
        records.append(r)
        if i % 5 == 2 and len(bad_at) < len(BAD):
            bad_at.append(len(records))
            records.append(BAD[len(bad_at) - 1])
    return _write_json(tmp_path, "mixed.json", records), records, bad_at


def test_load_conversations_skips_and_reports_each_bad_record(tmp_path):
    path, records, bad_at = _mixed_file(tmp_path)
    convs, report = _load(path, skip_bad=True)
    assert report.records_read == len(records)
    assert report.records_read == len(convs) + len(report.skipped)
    assert sorted(s["index"] for s in report.skipped) == bad_at
    assert all(isinstance(s["reason"], str) and s["reason"].strip() for s in report.skipped)
    good_outputs = [r["output"] for i, r in enumerate(records) if i not in bad_at]
    assert [c.reference for c in convs] == good_outputs
    with pytest.raises(DataError) as ei:
        _load(path, skip_bad=False)
    assert ei.value.record == bad_at[0]


def test_prepare_data_accounts_for_every_record(tmp_path, smol_tokenizer):
    path, records, bad_at = _mixed_file(tmp_path)
    cfg = DataSection(
        datasets=[{"path": str(path)}], skip_bad_records=True, eval_split=0.25, holdout_prompts=2, max_length=2048
    )
    data = prepare_data(cfg, ChatRenderer(smol_tokenizer))
    (rep,) = data.reports
    assert rep.records_read == len(records)
    assert len(rep.skipped) == len(bad_at) and all(s["reason"] for s in rep.skipped)
    assert rep.records_used_for_training == len(data.train)
    assert rep.records_held_out_for_eval == len(data.eval) > 0
    assert rep.records_held_out_for_samples == len(data.holdout) == 2
    assert rep.records_read == (
        rep.records_used_for_training + rep.records_held_out_for_eval + rep.records_held_out_for_samples
        + len(rep.skipped)
    )


def test_prepare_data_accounting_when_rendering_skips_eval_records(template_tokenizers):
    # R1's template cannot supervise every turn of a multi-turn record (TemplateError): those are skipped.
    path = shared("glaive_toolcall_zh_demo/glaive_toolcall_zh_demo.json")
    cfg = DataSection(
        datasets=[{"path": str(path), "max_records": 20}], skip_bad_records=True, eval_split=0.3,
        holdout_prompts=2, max_length=4096,
    )
    data = prepare_data(cfg, ChatRenderer(template_tokenizers["deepseek_r1_distill_qwen"]))
    (rep,) = data.reports
    assert rep.skipped  # the situation under test
    assert rep.records_held_out_for_eval == len(data.eval)
    assert rep.records_read == (
        rep.records_used_for_training + rep.records_held_out_for_eval + rep.records_held_out_for_samples
        + len(rep.skipped)
    )
