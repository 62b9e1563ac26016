"""Readers: every file kind gives the records the file holds, with the right index and start line, and
every malformed file raises a DataError that names the file and the line/column."""

from __future__ import annotations

import csv
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seektune.data.read import read_records
from seektune.errors import DataError
from tests.conftest import shared


def _read(path):
    return list(read_records(path))


# ---- JSON arrays: start lines -----------------------------------------------------------------


def test_json_array_start_lines_of_a_known_layout(tmp_path):
    # Line numbers written by hand next to each element; strings hold brackets, braces, commas,
    # escaped quotes and escaped newlines that must not confuse the scan.
    lines = [
        "[",  # 1
        '  {"a": "[not, {an} element]", "q": "say \\"hi\\", {"},',  # 2  -> record 0
        "",  # 3
        "  {",  # 4  -> record 1
        '    "nested": [1, [2, {"x": "]"}]],',  # 5
        '    "text": "line\\nbreak \\\\"',  # 6
        "  },",  # 7
        '  3, "four",',  # 8  -> records 2 and 3
        "  null",  # 9  -> record 4
        "  ,[5,",  # 10 -> record 5
        "6]",  # 11
        "]",  # 12
    ]
    path = tmp_path / "layout.json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    recs = _read(path)
    assert [r.data for r in recs] == json.loads(path.read_text(encoding="utf-8"))
    assert [r.index for r in recs] == [0, 1, 2, 3, 4, 5]
    assert [r.line for r in recs] == [2, 4, 8, 8, 9, 10]
    assert all(r.file == str(path) for r in recs)


def test_json_array_with_bom_and_first_element_on_line_one(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes('\ufeff[{"a": 1},\n{"a": 2}]'.encode("utf-8"))
    recs = _read(path)
    assert [(r.line, r.data) for r in recs] == [(1, {"a": 1}), (2, {"a": 2})]


def test_real_json_array_lines_match_the_file(tmp_path):
    # alpaca_en_demo.json is serialized with indent 2: each record opens with a line "  {".
    path = shared("alpaca_en_demo/alpaca_en_demo.json")
    text = path.read_text(encoding="utf-8")
    starts = [n for n, line in enumerate(text.split("\n"), start=1) if line == "  {"]
    recs = _read(path)
    assert len(recs) == 698  # SOURCE.md
    assert [r.data for r in recs] == json.loads(text)
    assert [r.line for r in recs] == starts
    assert [r.index for r in recs] == list(range(698))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(_json_values, min_size=1, max_size=6), indent=st.integers(1, 4))
def test_json_array_start_lines_property(tmp_path, values, indent):
    # json.dumps(indent=n) puts each top-level element on a fresh line; element i starts after
    # the "[" line and all lines of the elements before it.
    text = json.dumps(values, indent=indent, ensure_ascii=False)
    path = tmp_path / "prop.json"
    path.write_text(text, encoding="utf-8")
    sizes = [json.dumps(v, indent=indent, ensure_ascii=False).count("\n") + 1 for v in values]
    expected = [2 + sum(sizes[:i]) for i in range(len(values))]
    recs = _read(path)
    assert [r.data for r in recs] == values
    assert [r.line for r in recs] == expected


# ---- JSON Lines ---------------------------------------------------------------------------------


def test_jsonl_saved_as_json_is_read_line_by_line():
    path = shared("advertisegen/dev.json")
    raw_lines = path.read_text(encoding="utf-8").splitlines()
    recs = _read(path)
    assert len(recs) == 770  # SOURCE.md
    assert [r.data for r in recs] == [json.loads(line) for line in raw_lines]
    assert [r.line for r in recs] == list(range(1, 771))
    assert [r.index for r in recs] == list(range(770))
    assert set(recs[0].data) == {"content", "summary"}


def test_jsonl_file():
    path = shared("medicalgpt_medical_sft_zh/medical_sft_1K_format.jsonl")
    raw_lines = path.read_text(encoding="utf-8").splitlines()
    recs = _read(path)
    assert len(recs) == 700  # SOURCE.md
    assert [r.data for r in recs] == [json.loads(line) for line in raw_lines]
    assert [r.line for r in recs] == list(range(1, 701))


def test_jsonl_blank_lines_and_crlf_keep_true_line_numbers(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\r\n   \r\n{"a": 2}\r\n{"a": 3}')
    recs = _read(path)
    assert [(r.index, r.line, r.data) for r in recs] == [(0, 1, {"a": 1}), (1, 4, {"a": 2}), (2, 5, {"a": 3})]


def test_single_object_json_and_data_wrapper(tmp_path):
    one = tmp_path / "one.json"
    one.write_text('{"instruction": "a",\n "output": "b"}\n', encoding="utf-8")
    assert [(r.index, r.data) for r in _read(one)] == [(0, {"instruction": "a", "output": "b"})]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [{"x": 1}, {"x": 2}]}, indent=2), encoding="utf-8")
    assert [r.data for r in _read(wrapped)] == [{"x": 1}, {"x": 2}]


# ---- CSV ----------------------------------------------------------------------------------------


def test_csv_rows_and_line_numbers():
    path = shared("cmmlu/dev/anatomy.csv")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header == ["", "Question", "A", "B", "C", "D", "Answer"]  # SOURCE.md
    recs = _read(path)
    assert len(recs) == 5  # SOURCE.md: 5 per subject in dev
    assert [r.data for r in recs] == [dict(zip(header, row)) for row in body]
    # The file has one row per line: header on line 1, rows on lines 2..6.
    assert [r.line for r in recs] == [2, 3, 4, 5, 6]
    assert [r.data["Answer"] for r in recs] == [row[-1] for row in body]
    assert all(r.data["Answer"] in "ABCD" for r in recs)


def test_csv_multiline_row_reports_its_start_line(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text('q,a\n"first\nsecond",x\nplain,y\n', encoding="utf-8")
    recs = _read(path)
    assert [r.data for r in recs] == [{"q": "first\nsecond", "a": "x"}, {"q": "plain", "a": "y"}]
    assert [r.line for r in recs] == [2, 4]


def test_csv_row_with_extra_values_names_the_line(tmp_path):
    path = tmp_path / "extra.csv"
    path.write_text("x,y\n1,2\n3,4,5\n6,7\n", encoding="utf-8")
    with pytest.raises(DataError) as ei:
        _read(path)
    e = ei.value
    assert e.line == 3 and e.record == 1
    assert f"{path}:3" in str(e)
    assert "more value" in str(e)


# ---- Parquet ------------------------------------------------------------------------------------


def test_parquet_gives_the_same_records(tmp_path):
    pd = pytest.importorskip("pandas")
    records = json.loads(shared("alpaca_en_demo/alpaca_en_demo.json").read_text(encoding="utf-8"))
    path = tmp_path / "alpaca.parquet"
    # Small row groups so the reader has to walk several batches.
    pd.DataFrame(records).to_parquet(path, index=False, row_group_size=100)
    recs = _read(path)
    assert [r.data for r in recs] == records
    assert [r.index for r in recs] == list(range(len(records)))
    assert all(r.line is None for r in recs)


def test_broken_parquet_is_a_data_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError) as ei:
        _read(path)
    assert str(path) in str(ei.value) and "Parquet" in str(ei.value)


# ---- errors -------------------------------------------------------------------------------------


def _stdlib_error(text: str) -> json.JSONDecodeError:
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        return e
    raise AssertionError("expected invalid JSON")


def test_malformed_jsonl_line_names_file_line_column(tmp_path):
    bad = '{"a": 1,, "b": 2}'
    path = tmp_path / "bad.jsonl"
    path.write_text(f'{{"a": 1}}\n\n{bad}\n{{"a": 3}}\n', encoding="utf-8")
    col = _stdlib_error(bad).colno
    assert col > 1
    with pytest.raises(DataError) as ei:
        _read(path)
    e = ei.value
    assert f"{path}:3:{col}" in str(e)
    assert (e.line, e.column, e.record) == (3, col, 1)
    assert "invalid JSON" in str(e)


def test_malformed_jsonl_saved_as_json_names_line_column(tmp_path):
    bad = '{"b": 2,}'
    path = tmp_path / "bad_lines.json"
    path.write_text('{"a": 1}\n' + bad + "\n", encoding="utf-8")
    col = _stdlib_error(bad).colno
    with pytest.raises(DataError) as ei:
        _read(path)
    assert f"{path}:2:{col}" in str(ei.value)


def test_malformed_json_array_names_line_column(tmp_path):
    text = '[\n  {"a": 1},\n  {"b": 2,}\n]\n'
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    err = _stdlib_error(text)
    assert err.lineno == 3
    with pytest.raises(DataError) as ei:
        _read(path)
    e = ei.value
    assert (e.line, e.column) == (3, err.colno)
    assert f"{path}:3:{err.colno}" in str(e)


def test_json_that_is_not_an_array_of_records(tmp_path):
    path = tmp_path / "scalar.json"
    path.write_text("42\n", encoding="utf-8")
    with pytest.raises(DataError, match="JSON array"):
        _read(path)


def test_empty_file(tmp_path):
    for name in ("empty.json", "empty.jsonl", "empty.csv", "empty.parquet"):
        path = tmp_path / name
        path.write_bytes(b"")
        with pytest.raises(DataError) as ei:
            _read(path)
        assert str(path) in str(ei.value) and "empty" in str(ei.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        _read(tmp_path / "nope.json")


def test_non_utf8_bytes(tmp_path):
    for name, head in (("latin.jsonl", b'{"a": "caf'), ("latin.json", b'[{"a": "caf'), ("latin.csv", b"a\ncaf")):
        path = tmp_path / name
        tail = b'"}\n' if name.endswith("jsonl") else (b'"}]\n' if name.endswith("json") else b"\n")
        path.write_bytes(head + b"\xe9" + tail)  # Latin-1 e-acute
        with pytest.raises(DataError) as ei:
            _read(path)
        assert str(path) in str(ei.value) and "UTF-8" in str(ei.value)


def test_non_utf8_error_gives_the_true_byte_offset(tmp_path):
    good = (json.dumps({"a": "x" * 50}) + "\n").encode()
    prefix = good * 2000 + b'{"a": "'
    path = tmp_path / "late_bad.jsonl"
    path.write_bytes(prefix + b"\xff" + b'"}\n')
    with pytest.raises(DataError) as ei:
        _read(path)
    assert f"byte offset {len(prefix)}" in str(ei.value)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text('{"a": 1}\n', encoding="utf-8")
    with pytest.raises(DataError) as ei:
        _read(path)
    msg = str(ei.value)
    assert "'.txt'" in msg and ".jsonl" in msg and ".parquet" in msg
