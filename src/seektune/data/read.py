"""Files -> records, each with its index and (where the file has lines) its line number.

JSON arrays, JSON Lines (also when saved with a .json suffix, as AdvertiseGen is), CSV and
Parquet. Errors name the file and the line/column; nothing is skipped here silently.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from seektune.errors import DataError

SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class RawRecord:
    file: str
    index: int  # 0-based position in the file
    line: int | None  # 1-based line where the record starts (JSON/JSONL/CSV)
    data: Any


def read_records(path: str | Path) -> Iterator[RawRecord]:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, None, "file not found" if not path.exists() else "not a file")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(path, None, None, f"unknown data file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    if path.stat().st_size == 0:
        raise DataError(path, None, None, "the file is empty")
    if kind == "parquet":
        yield from _read_parquet(path)
    elif kind == "csv":
        yield from _read_csv(path)
    elif kind == "jsonl":
        yield from _read_jsonl(path)
    else:
        yield from _read_json(path)


def _open_text(path: Path):
    return open(path, "r", encoding="utf-8-sig", newline="")


def _decode_guard(path: Path, fn):
    try:
        yield from fn()
    except UnicodeDecodeError:
        # The decoder's offset is relative to its buffer; find the real one in the file.
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
            raise
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            raise DataError(
                path, None, None, f"not UTF-8 text (byte offset {e.start}); re-save the file as UTF-8", line=line
            ) from None


def _read_jsonl(path: Path) -> Iterator[RawRecord]:
    def gen():
        index = 0
        with _open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(path, index, None, f"invalid JSON: {e.msg}", line=lineno, column=e.colno) from e
                yield RawRecord(str(path), index, lineno, data)
                index += 1

    yield from _decode_guard(path, gen)


def _read_json(path: Path) -> Iterator[RawRecord]:
    def gen():
        with _open_text(path) as f:
            head = f.read(4096).lstrip()
        if head.startswith("{"):
            # One object per line saved as .json (AdvertiseGen does this) -- or one single object.
            try:
                yield from _read_jsonl(path)
                return
            except DataError as first_error:
                text = path.read_text(encoding="utf-8-sig")
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError:
                    raise first_error from None
                yield from _records_of_single_object(path, obj)
                return
        text = path.read_text(encoding="utf-8-sig")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, None, None, f"invalid JSON: {e.msg}", line=e.lineno, column=e.colno) from e
        if not isinstance(obj, list):
            raise DataError(path, None, None, "expected a JSON array of records or one JSON object per line")
        starts = _array_element_lines(text, len(obj))
        for i, data in enumerate(obj):
            yield RawRecord(str(path), i, starts[i] if i < len(starts) else None, data)

    yield from _decode_guard(path, gen)


def _records_of_single_object(path: Path, obj: Any) -> Iterator[RawRecord]:
    # {"data": [...]} style wrappers are common; a single record is also fine.
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if len(obj) == 1 and len(lists) == 1:
            for i, data in enumerate(lists[0]):
                yield RawRecord(str(path), i, None, data)
            return
    yield RawRecord(str(path), 0, 1, obj)


def _array_element_lines(text: str, count: int) -> list[int]:
    """Line number where each top-level array element starts (cheap scan, strings respected)."""
    lines: list[int] = []
    depth, in_str, esc, line = 0, False, False, 1
    expecting = False
    for ch in text:
        if ch == "\n":
            line += 1
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch.isspace():
            continue
        if depth == 1 and expecting and ch not in ",]":
            lines.append(line)
            expecting = False
        if ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth == 1:
                expecting = True
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 1:
            expecting = True
        if len(lines) >= count and depth == 0:
            break
    return lines


def _read_csv(path: Path) -> Iterator[RawRecord]:
    def gen():
        with _open_text(path) as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise DataError(path, None, None, "CSV has no header row")
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
                    raise DataError(path, i, None, f"{len(row[None])} more value(s) than header columns", line=start)
                yield RawRecord(str(path), i, start, row)
                i += 1

    yield from _decode_guard(path, gen)


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
