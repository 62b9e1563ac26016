"""Files -> records, each with its index and (where the file has lines) its line number.

JSON arrays, JSON Lines (also when saved with a .json suffix, as AdvertiseGen is), CSV and
Parquet. Every reader streams: a 2 GB file is read with memory bounded by its largest record.
Errors name the file and the line/column; nothing is skipped here silently. With `skip_bad=True`
a record that cannot be read (a malformed JSONL line, a line that is not UTF-8, a CSV row with
extra values) comes back as a RawRecord carrying its `error`, so the caller counts and reports it.
"""

from __future__ import annotations

import codecs
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from seektune.errors import DataError

SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
CHUNK_CHARS = 1 << 20  # characters read at a time from a JSON array
MAX_RECORD_CHARS = 256 << 20  # one record larger than this is almost surely an unterminated string


@dataclass(frozen=True)
class RawRecord:
    file: str
    index: int  # 0-based position in the file
    line: int | None  # 1-based line where the record starts (JSON/JSONL/CSV)
    data: Any
    error: Optional[DataError] = None  # set only when read with skip_bad=True and the record is unreadable


def read_records(path: str | Path, skip_bad: bool = False) -> Iterator[RawRecord]:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, None, "file not found" if not path.exists() else "not a file")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(path, None, None, f"unknown data file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    if path.stat().st_size == 0:
        raise DataError(path, None, None, "the file is empty; expected records (JSON array, JSON Lines, CSV or Parquet)")
    if kind == "parquet":
        yield from _read_parquet(path)
    elif kind == "csv":
        yield from _read_csv(path, skip_bad)
    elif kind == "jsonl":
        yield from _read_jsonl(path, skip_bad)
    else:
        yield from _read_json(path, skip_bad)


def _open_text(path: Path):
    return open(path, "r", encoding="utf-8-sig", newline="")


def _first_bad_utf8(path: Path) -> tuple[int, int]:
    """(byte offset, line) of the first byte that is not UTF-8, found by streaming the file."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, newlines = 0, 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                start = offset - pending + e.start
                data = block[: max(start - offset, 0)]
                return start, newlines + data.count(b"\n")
            offset += len(block)
            newlines += block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return offset - len(decoder.getstate()[0]), newlines + 1
    return -1, 0


def _decode_guard(path: Path, gen: Iterator[RawRecord]) -> Iterator[RawRecord]:
    try:
        yield from gen
    except UnicodeDecodeError:
        start, line = _first_bad_utf8(path)
        if start < 0:
            raise
        raise DataError(
            path, None, None, f"not UTF-8 text (byte offset {start}); re-save the file as UTF-8", line=line + 1
        ) from None


def _read_jsonl(path: Path, skip_bad: bool) -> Iterator[RawRecord]:
    # Binary lines: a line that is not UTF-8 is one bad record with its true line number, not a dead file.
    index, offset = 0, 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            start, offset = offset, offset + len(raw)
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw, start = raw[len(codecs.BOM_UTF8) :], start + len(codecs.BOM_UTF8)
            if not raw.strip():
                continue
            err = None
            try:
                data = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                err = DataError(
                    path, index, None, f"not UTF-8 text (byte offset {start + e.start}); re-save the file as UTF-8",
                    line=lineno,
                )
            except json.JSONDecodeError as e:
                err = DataError(path, index, None, f"invalid JSON: {e.msg}; expected one JSON object on this line",
                                line=lineno, column=e.colno)
            if err is not None:
                if not skip_bad:
                    raise err
                yield RawRecord(str(path), index, lineno, None, err)
            else:
                yield RawRecord(str(path), index, lineno, data)
            index += 1


def _first_line_is_json(path: Path) -> bool:
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                try:
                    json.loads(raw.decode("utf-8-sig"))
                    return True
                except (UnicodeDecodeError, json.JSONDecodeError):
                    return False
    return False


def _read_json(path: Path, skip_bad: bool) -> Iterator[RawRecord]:
    with open(path, "rb") as f:
        head = codecs.getincrementaldecoder("utf-8-sig")(errors="replace").decode(f.read(4096)).lstrip()
    if head.startswith("{"):
        # One object per line saved as .json (AdvertiseGen does this) -- or one single object.
        if _first_line_is_json(path):
            yield from _read_jsonl(path, skip_bad)
            return
        with _open_text(path) as fh:
            text = _decode_all(path, fh)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, None, None, f"invalid JSON: {e.msg}", line=e.lineno, column=e.colno) from None
        yield from _records_of_single_object(path, obj)
        return
    if not head.startswith("["):
        raise DataError(path, None, None, "expected a JSON array of records or one JSON object per line", line=1)
    yield from _decode_guard(path, _stream_array(path))


def _decode_all(path: Path, fh) -> str:
    try:
        return fh.read()
    except UnicodeDecodeError:
        start, line = _first_bad_utf8(path)
        raise DataError(
            path, None, None, f"not UTF-8 text (byte offset {start}); re-save the file as UTF-8", line=line + 1
        ) from None


class _ArrayStream:
    """A text buffer over a file that is refilled on demand; knows the line of any buffered position."""

    def __init__(self, fh):
        self.fh, self.buf, self.eof = fh, "", False
        self.base_line = 1  # line number of buf[0]
        self.base_col = 1  # column of buf[0]
        self._mark_pos, self._mark_line = 0, 1  # a cursor so line lookups cost O(distance moved)

    def more(self) -> bool:
        if self.eof:
            return False
        block = self.fh.read(CHUNK_CHARS)
        if not block:
            self.eof = True
            return False
        self.buf += block
        return True

    def skip_ws(self, pos: int) -> int:
        while True:
            while pos < len(self.buf) and self.buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(self.buf) or not self.more():
                return pos

    def line_of(self, pos: int) -> int:
        if pos < self._mark_pos:
            self._mark_pos, self._mark_line = 0, self.base_line
        self._mark_line += self.buf.count("\n", self._mark_pos, pos)
        self._mark_pos = pos
        return self._mark_line

    def column_of(self, pos: int) -> int:
        nl = self.buf.rfind("\n", 0, pos)
        return pos - nl if nl >= 0 else self.base_col + pos

    def drop_before(self, pos: int) -> int:
        """Forget consumed text (only when it is a large share of the buffer: each drop copies the rest)."""
        if pos < CHUNK_CHARS:
            return pos
        line = self.line_of(pos)
        self.base_col = self.column_of(pos)
        self.base_line = line
        self.buf = self.buf[pos:]
        self._mark_pos, self._mark_line = 0, line
        return 0


def _stream_array(path: Path) -> Iterator[RawRecord]:
    """A top-level JSON array read element by element with json's raw_decode over buffered chunks."""
    decoder = json.JSONDecoder()

    def fail(s: _ArrayStream, pos: int, problem: str, record=None):
        raise DataError(path, record, None, problem, line=s.line_of(pos), column=s.column_of(pos))

    with _open_text(path) as fh:
        s = _ArrayStream(fh)
        pos = s.skip_ws(0)
        if pos >= len(s.buf) or s.buf[pos] != "[":
            fail(s, pos, "expected a JSON array of records or one JSON object per line")
        pos, index = s.skip_ws(pos + 1), 0
        if pos < len(s.buf) and s.buf[pos] == "]":
            pos = s.skip_ws(pos + 1)
        else:
            while True:
                if pos >= len(s.buf):
                    fail(s, pos, "the file ends inside the array; expected a record or `]`", index)
                while True:
                    try:
                        data, end = decoder.raw_decode(s.buf, pos)
                    except json.JSONDecodeError as e:
                        # The record may only be cut by the end of the buffer: read more and retry.
                        cut = e.msg.startswith("Unterminated string") or e.pos >= len(s.buf) - 32
                        if cut and len(s.buf) - pos < MAX_RECORD_CHARS and s.more():
                            continue
                        if cut and not s.eof:
                            fail(s, pos, f"record {index} is larger than {MAX_RECORD_CHARS >> 20} MiB of text "
                                 "(or has an unterminated string)", index)
                        fail(s, e.pos, f"invalid JSON: {e.msg}", index)
                    # A number cut by the buffer ("1" of "1.5") parses too: trust a value only when what follows
                    # it is visible and may follow a value, or when the file ends.
                    followed = end < len(s.buf) and s.buf[end] in ",] \t\r\n"
                    if followed or end < len(s.buf) - 64 or s.eof or not s.more():
                        break
                yield RawRecord(str(path), index, s.line_of(pos), data)
                index += 1
                pos = s.drop_before(s.skip_ws(end))
                if pos >= len(s.buf):
                    fail(s, pos, "the file ends inside the array; expected `,` or `]`", index)
                if s.buf[pos] == "]":
                    pos = s.skip_ws(pos + 1)
                    break
                if s.buf[pos] != ",":
                    fail(s, pos, "invalid JSON: Expecting ',' delimiter", index)
                pos = s.skip_ws(pos + 1)
        if pos < len(s.buf):
            fail(s, pos, "invalid JSON: Extra data after the closing `]` of the array")


def _records_of_single_object(path: Path, obj: Any) -> Iterator[RawRecord]:
    # {"data": [...]} style wrappers are common; a single record is also fine.
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if len(obj) == 1 and len(lists) == 1:
            for i, data in enumerate(lists[0]):
                yield RawRecord(str(path), i, None, data)
            return
    yield RawRecord(str(path), 0, 1, obj)


def _read_csv(path: Path, skip_bad: bool) -> Iterator[RawRecord]:
    # The csv module refuses fields over 128 KiB by default; a long answer is a record, not an error.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_RECORD_CHARS))

    def gen():
        with _open_text(path) as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise DataError(path, None, None, "CSV has no header row; expected the column names on line 1")
            i = 0
            while True:
                start = reader.line_num + 1  # a quoted field may span lines: report where the row starts
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as e:
                    raise DataError(path, i, None, f"malformed CSV: {e}", line=start) from e
                if None in row:
                    err = DataError(path, i, None, f"{len(row[None])} more value(s) than the "
                                    f"{len(reader.fieldnames)} header columns", line=start)
                    if not skip_bad:
                        raise err
                    yield RawRecord(str(path), i, start, None, err)
                else:
                    yield RawRecord(str(path), i, start, row)
                i += 1

    yield from _decode_guard(path, gen())


def _read_parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a broken file
        raise DataError(path, None, None, f"cannot read Parquet: {e}") from e
    index = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield RawRecord(str(path), index, None, row)
            index += 1
