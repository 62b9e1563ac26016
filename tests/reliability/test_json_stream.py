"""JSON arrays are read element by element: the same records and start lines as a whole-file parse, for any
buffer size, and (slow test) a file of several hundred MB is read with bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seektune.data.read as read_mod
from seektune.data.read import read_records
from seektune.errors import DataError

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
    max_leaves=8,
)


def _expected_lines(text: str, n: int) -> list[int]:
    """Start line of each top-level element, from the stdlib decoder run element by element."""
    dec, pos, lines = json.JSONDecoder(), text.index("[") + 1, []
    ws = " \t\r\n,"
    for _ in range(n):
        while text[pos] in ws:
            pos += 1
        lines.append(text.count("\n", 0, pos) + 1)
        _, pos = dec.raw_decode(text, pos)
    return lines


@settings(max_examples=60, deadline=None)
@given(values=st.lists(VALUES, max_size=8), indent=st.sampled_from([None, 0, 2]), chunk=st.integers(1, 9))
def test_streamed_array_equals_whole_file_parse(tmp_path_factory, values, indent, chunk):
    path = tmp_path_factory.mktemp("arr") / "a.json"
    text = json.dumps(values, indent=indent, ensure_ascii=False)
    path.write_text(text, encoding="utf-8")
    saved = read_mod.CHUNK_CHARS
    read_mod.CHUNK_CHARS = chunk  # tiny buffers: every record and token is cut somewhere
    try:
        recs = list(read_records(path))
    finally:
        read_mod.CHUNK_CHARS = saved
    assert [r.data for r in recs] == values
    assert [r.index for r in recs] == list(range(len(values)))
    assert [r.line for r in recs] == _expected_lines(text, len(values))


def test_numbers_cut_by_the_buffer_are_not_truncated(tmp_path, monkeypatch):
    path = tmp_path / "n.json"
    path.write_text("[123456789, 1.5e10,\n-42]", encoding="utf-8")
    monkeypatch.setattr(read_mod, "CHUNK_CHARS", 3)
    assert [r.data for r in read_records(path)] == [123456789, 1.5e10, -42]
    assert [r.line for r in read_records(path)] == [1, 1, 2]


@pytest.mark.parametrize("text,line,col,words", [
    # the same line and column as json.loads reports for the whole text
    ('[\n {"a": 1},\n {"a": 2}\n {"a": 3}]', 4, 2, "Expecting ','"),
    ('[\n {"a": 1},\n {"a": tru}\n]', 3, 8, "Expecting value"),
    ('[\n {"a": 1}\n', 3, 1, "ends inside the array"),
    ('[{"a": 1}] extra', 1, 12, "Extra data"),
    ('[{"a": "unterminated}]', 1, 8, "unterminated"),
])
def test_malformed_arrays_name_line_and_column(tmp_path, monkeypatch, text, line, col, words):
    monkeypatch.setattr(read_mod, "CHUNK_CHARS", 4)
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as ei:
        list(read_records(path))
    e = ei.value
    assert (e.line, e.column) == (line, col), str(e)
    assert words.lower() in str(e).lower() and f"{path}:{line}:{col}" in str(e)


@pytest.mark.slow
def test_a_large_json_array_is_read_with_bounded_memory(tmp_path):
    """~400 MB array: peak RSS of a reader process stays far below the file size."""
    path = tmp_path / "big.json"
    rec = {"instruction": "Summarise the following text " + "lorem ipsum " * 30, "input": "", "output": "ok " * 40}
    one = json.dumps(rec)
    n = 400 * 2**20 // (len(one) + 4)
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n")
        block = (",\n".join([one] * 1000))
        for i in range(n // 1000):
            f.write(("" if i == 0 else ",\n") + block)
        f.write("\n]\n")
    size = path.stat().st_size
    count = (n // 1000) * 1000
    code = textwrap.dedent(f"""
        import resource, sys
        from seektune.data.read import read_records
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        n = last = 0
        for r in read_records({str(path)!r}):
            n += 1; last = r.line
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(n, last, base, peak)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, check=True)
    n_read, last_line, base_kb, peak_kb = map(int, out.stdout.split())
    print(f"{size / 2**20:.0f} MiB, {n_read} records, RSS +{(peak_kb - base_kb) / 1024:.0f} MiB")
    assert n_read == count and last_line == count + 1
    grown = (peak_kb - base_kb) * 1024
    assert grown < 64 * 2**20, f"reading a {size / 2**20:.0f} MiB file grew RSS by {grown / 2**20:.0f} MiB"
