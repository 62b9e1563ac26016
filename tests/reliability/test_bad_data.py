"""Bad data stops the run before training with file, record/line, field, what was expected and the
--skip-bad-records hint; with --skip-bad-records every skipped record lands in data_report.json."""

from __future__ import annotations

import json

import pytest

import seektune
from seektune.cli import main as cli_main
from seektune.config import DatasetSpec
from seektune.data.dataset import DatasetReport, load_conversations
from seektune.errors import DataError
from tests.reliability.conftest import alpaca_records, tiny_config, write_json

HINT = "--skip-bad-records"


def _load(path, skip=False, fmt="auto"):
    report = DatasetReport(file=str(path))
    convs = load_conversations(DatasetSpec(path=str(path), format=fmt), skip, report)
    return convs, report


def _error(path, fmt="auto") -> DataError:
    with pytest.raises(DataError) as ei:
        _load(path, fmt=fmt)
    return ei.value


def _jsonl(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"instruction": "hi", "output": "hello"})
GOOD_MSG = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})


# (file name, content lines, expected record, line, field fragment, words the message must contain)
RECORD_CASES = [
    ("missing_field.jsonl", [GOOD, json.dumps({"instruction": "no answer"})], 1, 2, "output",
     ["missing", "expects instruction and output"]),
    ("wrong_type.jsonl", [GOOD, GOOD, json.dumps({"instruction": ["a"], "output": "x"})], 2, 3, "instruction",
     ["expected text, got list"]),
    ("unknown_role.jsonl", [json.dumps({"messages": [{"role": "human", "content": "hi"},
                                                     {"role": "assistant", "content": "yo"}]})], 0, 1,
     "messages[0].role", ["unknown role 'human'", "expected one of system, user, assistant, tool"]),
    ("not_alternating.jsonl", [json.dumps({"messages": [{"role": "user", "content": "a"},
                                                        {"role": "user", "content": "b"},
                                                        {"role": "assistant", "content": "c"}]})], 0, 1,
     "turn 1", ["two user turns in a row", "alternate"]),
    ("empty_answer.jsonl", [GOOD_MSG, json.dumps({"messages": [{"role": "user", "content": "a"},
                                                           {"role": "assistant", "content": "  "}]})], 1, 2,
     "turn 1", ["empty assistant answer"]),
    ("sharegpt_speaker.jsonl", [json.dumps({"conversations": [{"from": "robot", "value": "a"}]})], 0, 1,
     "conversations[0].from", ["unknown speaker 'robot'"]),
]


@pytest.mark.parametrize("name,lines,record,line,field,words", RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
def test_bad_record_names_file_record_line_field_expectation_and_hint(tmp_path, name, lines, record, line, field, words):
    path = _jsonl(tmp_path / name, lines)
    e = _error(path)
    msg = str(e)
    assert (e.file, e.record, e.line) == (str(path), record, line), msg
    assert field in (e.field or ""), msg
    assert msg.startswith(f"{path}:{line}: record {record} field `"), msg
    for w in words + [HINT]:
        assert w in msg, (w, msg)
    convs, report = _load(path, skip=True)
    assert report.records_read == len(lines) == len(convs) + len(report.skipped)
    (skipped,) = report.skipped
    assert (skipped["index"], skipped["line"]) == (record, line) and field in skipped["field"]


def test_malformed_jsonl_line_names_line_and_column_and_can_be_skipped(tmp_path):
    path = _jsonl(tmp_path / "broken.jsonl", [GOOD, GOOD, '{"instruction": "x", "output": "y",}', GOOD])
    e = _error(path)
    assert (e.record, e.line, e.column) == (2, 3, 36)
    assert str(e).startswith(f"{path}:3:36: record 2:") and "invalid JSON" in str(e) and HINT in str(e)
    convs, report = _load(path, skip=True)
    assert len(convs) == 3 and report.records_read == 4
    assert report.skipped == [{"index": 2, "line": 3, "column": 36, "field": None,
                               "reason": report.skipped[0]["reason"]}]
    assert "invalid JSON" in report.skipped[0]["reason"]


def test_malformed_json_array_names_line_and_column(tmp_path):
    path = tmp_path / "array.json"
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c" "output": "d"}\n]\n')
    e = _error(path)
    assert (e.line, e.column) == (3, 23), str(e)
    assert f"{path}:3:23" in str(e) and "Expecting ',' delimiter" in str(e)


def test_non_utf8_line_in_jsonl_is_one_bad_record(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + '{"instruction": "café", "output": "ok"}'.encode("latin-1") + b"\n"
                     + GOOD.encode() + b"\n")
    e = _error(path)
    assert (e.record, e.line) == (1, 2) and "UTF-8" in str(e) and HINT in str(e)
    convs, report = _load(path, skip=True)
    assert len(convs) == 2 and len(report.skipped) == 1 and "byte offset" in report.skipped[0]["reason"]


def test_non_utf8_in_a_json_array_names_the_line(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'[\n{"instruction": "a", "output": "b"},\n{"instruction": "caf\xe9", "output": "b"}\n]')
    e = _error(path)
    assert e.line == 3 and "UTF-8" in str(e) and "re-save" in str(e)


def test_csv_missing_column_and_short_row(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,answer\nhi,hello\n", encoding="utf-8")  # `response` column missing
    e = _error(path, fmt="pair")
    assert (e.record, e.line, e.field) == (0, 2, "response") and "missing" in str(e) and HINT in str(e)
    path2 = tmp_path / "short.csv"
    path2.write_text("prompt,response\nhi,hello\nonly prompt\n", encoding="utf-8")
    e = _error(path2, fmt="pair")
    assert (e.record, e.line, e.field) == (1, 3, "response")
    path3 = tmp_path / "long.csv"
    path3.write_text("prompt,response\nhi,hello,extra\n", encoding="utf-8")
    e = _error(path3, fmt="pair")
    assert (e.record, e.line) == (0, 2) and "more value(s) than the 2 header columns" in str(e)
    convs, report = _load(path3, skip=True, fmt="pair")
    assert convs == [] and len(report.skipped) == 1


@pytest.mark.parametrize("name,content", [("empty.json", b""), ("blank.jsonl", b"\n\n  \n"), ("empty_array.json", b"[]"),
                                          ("header_only.csv", b"prompt,response\n")])
def test_empty_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    e = _error(path)
    assert str(path) in str(e) and ("empty" in str(e) or "no records" in str(e)), str(e)


def test_max_records_stops_reading_early(tmp_path):
    path = _jsonl(tmp_path / "many.jsonl", [GOOD] * 5 + ["{broken"])
    report = DatasetReport(str(path))
    convs = load_conversations(DatasetSpec(path=str(path), max_records=5), False, report)
    assert len(convs) == report.records_read == 5  # the broken 6th line is never read


def test_dry_run_lists_every_bad_record_at_once(tmp_path, tiny_llama, capsys):
    records = alpaca_records(12)
    records[3] = {"instruction": "no answer"}
    records[7]["output"] = ""
    records[9] = {"instruction": 5, "output": "x"}
    data = write_json(tmp_path / "three_bad.json", records)
    with pytest.raises(SystemExit) as ei:
        cli_main(["train", "--model", str(tiny_llama), "--data", str(data), "--output", str(tmp_path / "o"), "--dry-run"])
    text = capsys.readouterr().out
    assert ei.value.code == 2, text
    flat = " ".join(text.split())
    for idx in (3, 7, 9):
        assert f"record {idx} field" in flat, flat
    assert "3 bad record(s) of 12" in flat and HINT in flat and "Traceback" not in flat
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.incomplete").exists()


def test_skip_bad_records_trains_and_reports_every_skipped_record(tmp_path, tiny_llama, capsys):
    records = alpaca_records(14)
    records[2] = {"instruction": "no answer"}
    records[5] = ["not", "an", "object"]
    records[11]["output"] = " "
    data = write_json(tmp_path / "some_bad.json", records)
    cfg = tiny_config(tiny_llama, data, tmp_path / "run", max_steps=2, save_steps=10)
    cfg["data"]["skip_bad_records"] = True
    from rich.console import Console

    console = Console(width=200, no_color=True)
    run = seektune.train(cfg, console=console)
    out = capsys.readouterr().out
    assert "some_bad.json [alpaca]: 14 read" in out and "3 skipped" in out and "skipped 1x" in out
    report = json.loads((run.path / "data_report.json").read_text())
    (ds,) = report["datasets"]
    assert ds["records_read"] == 14 and ds["records_skipped"] == 3
    assert [s["index"] for s in ds["skipped"]] == [2, 5, 11]
    assert all(s["reason"] and s["line"] for s in ds["skipped"])
    assert ds["records_used_for_training"] + ds["records_held_out_for_eval"] + ds["records_held_out_for_samples"] \
        + ds["records_skipped"] == ds["records_read"]


def test_csv_with_a_long_field_is_read_whole(tmp_path):
    path = tmp_path / "long.csv"
    answer = "word " * 60_000  # 300 KB: over the csv module's default field limit
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write('prompt,response\nhi,"' + answer + '"\n')
    convs, report = _load(path, fmt="pair")
    assert convs[0].reference == answer and not report.skipped
