"""Reading data files into records, with the file and line of each, and validating them.

Supported inputs (a path may also be a directory of them, read recursively in sorted order):

    .jsonl    one JSON object per line; line = physical line (blank lines skipped)
    .json     a list of objects, or an object with exactly one list field; for a top-level
              list the line is where the object starts, for the wrapped form its index + 1
    .csv      a header row, then one record per row; line = physical line of the row.
              Cells holding a JSON list of objects (e.g. a `messages` column) are decoded.
    .parquet  line = row index + 1
    .txt      one text record per paragraph (lines up to a blank line); line = the paragraph's
              first line. Paragraphs, not the whole file, so that a corpus has documents to
              split off for validation and line numbers point somewhere; keep a document with
              blank lines inside it whole by putting it in a .jsonl record instead
    a `datasets` save_to_disk directory (dataset_info.json/state.json); line = row index + 1

The standard json and csv modules are used for text files so that line numbers are exact;
pyarrow/`datasets` for the columnar ones.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honing.data.formats import FORMATS, RecordError, detect_format, normalize
from honing.data.types import Reject
from honing.errors import DataError

logger = logging.getLogger(__name__)

EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet", ".txt")
_DATASETS_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass
class Unreadable:
    """A line that could not be decoded or parsed; kept as a value so `skip` can go on past it."""

    reason: str
    text: str


@dataclass
class Sourced:
    """A normalised record and where it came from (for file:line in later rejects)."""

    file: str
    line: int
    record: dict[str, Any]


# --------------------------------------------------------------------------- reading


def read_records(path: str | Path, *, text_field: str = "text") -> Iterator[tuple[str, int, Any]]:
    """(file, line, record) for every record under `path`; unparseable input raises DataError."""
    for file, line, record in _read_raw(Path(path), text_field):
        if isinstance(record, Unreadable):
            raise DataError(f"{file}:{line}: {record.reason}")
        yield file, line, record


def _read_raw(path: Path, text_field: str) -> Iterator[tuple[str, int, Any]]:
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_dir():
        yield from _read_directory(path, text_field)
        return
    suffix = path.suffix.lower()
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
    if suffix == ".txt":
        yield from _read_txt(path, text_field)
    elif suffix in readers:
        yield from readers[suffix](path)
    else:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(no extension)'}; use one of "
            f"{', '.join(EXTENSIONS)} or a datasets save_to_disk directory"
        )


def _read_directory(path: Path, text_field: str) -> Iterator[tuple[str, int, Any]]:
    if _is_saved_dataset(path):
        yield from _read_saved_dataset(path)
        return
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir() or child.suffix.lower() in EXTENSIONS:
            yield from _read_raw(child, text_field)
        else:
            # Not silent: a README next to the data is normal, but the user should see it was not read.
            logger.warning("%s: skipped (not a data file; expected %s)", child, ", ".join(EXTENSIONS))


def _is_saved_dataset(path: Path) -> bool:
    return any((path / marker).is_file() for marker in _DATASETS_MARKERS)


def read_lines(path: str | Path) -> Iterator[tuple[int, str | Unreadable]]:
    """(line number, text with its line ending) of every line of a UTF-8 text file; a leading
    byte-order mark is dropped (Excel and some editors write one), and a line that is not UTF-8
    comes as an Unreadable saying where."""
    path = Path(path)
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield number, Unreadable(_not_utf8(raw, err.start), raw.decode("utf-8", errors="replace"))


def read_text(path: str | Path) -> str:
    """A whole UTF-8 text file (a leading byte-order mark dropped); DataError with file:line if it is not UTF-8."""
    path = Path(path)
    with _open_binary(path) as handle:
        data = handle.read()
    data = data[len(_BOM):] if data.startswith(_BOM) else data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        start = data.rfind(b"\n", 0, err.start) + 1
        end = data.find(b"\n", err.start)
        line = data[start:] if end < 0 else data[start:end]
        number = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{number}: {_not_utf8(line, err.start - start)}") from None


_BOM = b"\xef\xbb\xbf"


def _open_binary(path: Path):
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a file")
    try:
        return path.open("rb")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None


def _not_utf8(line: bytes, offset: int) -> str:
    """Why a line is not text: the first byte that is not UTF-8, and a hint."""
    hint = "it looks like a binary file, not text" if b"\x00" in line else "save the file as UTF-8 text"
    return f"not UTF-8 text (byte 0x{line[offset]:02x} at column {offset + 1}): {hint}"


def _read_jsonl(path: Path) -> Iterator[tuple[str, int, Any]]:
    for number, text in read_lines(path):
        if isinstance(text, Unreadable):
            yield str(path), number, text
            continue
        if not text.strip():
            continue
        try:
            yield str(path), number, json.loads(text)
        except json.JSONDecodeError as err:
            yield str(path), number, Unreadable(f"not valid JSON: {err.msg} (column {err.colno})", text)
        except RecursionError:
            yield str(path), number, Unreadable("not valid JSON: nested too deeply", text)


def _read_txt(path: Path, text_field: str) -> Iterator[tuple[str, int, Any]]:
    paragraph: list[str] = []
    start = 0
    for number, text in read_lines(path):
        if isinstance(text, Unreadable):
            raise DataError(f"{path}:{number}: {text.reason}")
        if text.strip():
            start = start or number
            paragraph.append(text.rstrip("\r\n"))
        elif paragraph:
            yield str(path), start, {text_field: "\n".join(paragraph)}
            paragraph, start = [], 0
    if paragraph:
        yield str(path), start, {text_field: "\n".join(paragraph)}


def _read_json(path: Path) -> Iterator[tuple[str, int, Any]]:
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON: {err.msg} (column {err.colno})") from None
    except RecursionError:
        raise DataError(f"{path}: not valid JSON: nested too deeply") from None
    if isinstance(data, list):
        yield from zip([str(path)] * len(data), _array_item_lines(text, len(data)), data)
        return
    if isinstance(data, dict):
        lists = [key for key, value in data.items() if isinstance(value, list)]
        if len(lists) == 1:
            for index, record in enumerate(data[lists[0]]):
                yield str(path), index + 1, record
            return
        if not lists and _is_record(data):
            yield str(path), 1, data
            return
    raise DataError(f"{path}: expected a list of records, or an object with exactly one list field")


def _is_record(data: dict[str, Any]) -> bool:
    try:
        detect_format(data)
    except DataError:
        return False
    return True


def _array_item_lines(text: str, count: int) -> list[int]:
    """The line on which each element of a top-level JSON array starts."""
    decoder = json.JSONDecoder()
    last = text.index("[")
    lines, pos, line = [], last + 1, 1 + text.count("\n", 0, last)
    for _ in range(count):
        while text[pos] in " \t\r\n,":
            pos += 1
        line += text.count("\n", last, pos)
        last = pos
        lines.append(line)
        _, pos = decoder.raw_decode(text, pos)
    return lines


def _read_csv(path: Path) -> Iterator[tuple[str, int, Any]]:
    lines = _csv_lines(path)
    reader = csv.DictReader(lines)
    try:
        if reader.fieldnames is None:  # reading the header now makes line_num count it
            return
        line = reader.line_num + 1
        for row in reader:
            # line_num is the reader's position after the row; a row with quoted newlines spans several lines.
            yield str(path), line, {key: _decode_cell(value) for key, value in row.items() if key is not None}
            line = reader.line_num + 1
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({err})") from None


def _csv_lines(path: Path) -> Iterator[str]:
    for number, text in read_lines(path):
        if isinstance(text, Unreadable):
            raise DataError(f"{path}:{number}: {text.reason}")
        yield text


def _decode_cell(value: str | None) -> Any:
    """A CSV cell; a JSON list of objects (a messages column) is decoded, anything else stays text."""
    if value is None or not value.lstrip().startswith("["):
        return value
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError:
        return value
    return decoded if isinstance(decoded, list) and decoded and all(isinstance(x, dict) for x in decoded) else value


def _read_parquet(path: Path) -> Iterator[tuple[str, int, Any]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable parquet file ({err})") from None
    index = 0
    batches = parquet.iter_batches()
    while True:
        try:
            batch = next(batches, None)
        except Exception as err:  # a damaged row group
            raise DataError(f"{path}:{index + 1}: not a readable parquet file ({err})") from None
        if batch is None:
            return
        for record in batch.to_pylist():
            index += 1
            yield str(path), index, record


def _read_saved_dataset(path: Path) -> Iterator[tuple[str, int, Any]]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(f"{path}: a DatasetDict without a 'train' split (splits: {', '.join(loaded)}); point at one split's directory")
        loaded = loaded["train"]
    for index, record in enumerate(loaded):
        yield str(path), index + 1, record


# --------------------------------------------------------------------------- validating


def load_dataset_file(
    path: str | Path,
    fmt: str = "auto",
    *,
    on_bad_record: str = "fail",
    text_field: str = "text",
    system_prompt: str | None = None,
) -> tuple[list[dict[str, Any]], str, list[Reject]]:
    """Read and normalise every record: (records, format, rejects).

    The format comes from the first record when `fmt` is auto; every record must then match it.
    With on_bad_record=fail the first bad record raises DataError("file:line: problem");
    with skip it becomes a Reject and loading goes on.
    """
    sourced, fmt, rejects = load_sourced(path, fmt, on_bad_record=on_bad_record, text_field=text_field, system_prompt=system_prompt)
    return [item.record for item in sourced], fmt, rejects


def load_sourced(
    path: str | Path,
    fmt: str = "auto",
    *,
    on_bad_record: str = "fail",
    text_field: str = "text",
    system_prompt: str | None = None,
) -> tuple[list[Sourced], str, list[Reject]]:
    """Like load_dataset_file, but each record keeps its file and line."""
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(f"unknown data.format {fmt!r}; known: auto, {', '.join(FORMATS)}")
    records: list[Sourced] = []
    rejects: list[Reject] = []
    seen = 0
    for file, line, raw in _read_raw(Path(path), text_field):
        seen += 1
        try:
            raw = _as_record(raw, text_field)
            if fmt == "auto":
                fmt = _detect(raw)
            try:
                records.append(Sourced(file, line, normalize(raw, fmt, system_prompt=system_prompt)))
            except RecordError as err:  # say which format the record was held to
                raise RecordError(f"{err} ({fmt} format)") from None
        except RecordError as err:
            reject = Reject(file, line, str(err), raw.text if isinstance(raw, Unreadable) else raw)
            if on_bad_record != "skip":
                raise DataError(f"{reject.where()}: {reject.reason}") from None
            rejects.append(reject)
    if not seen:
        raise DataError(f"{path}: the dataset is empty (no records)")
    if not records:
        raise DataError(f"{path}: all {seen} records were rejected; the first: {rejects[0].where()}: {rejects[0].reason}")
    if rejects:
        logger.warning("%s: %d of %d records rejected (first: %s: %s)", path, len(rejects), seen, rejects[0].where(), rejects[0].reason)
    return records, fmt, rejects


def _as_record(raw: Any, text_field: str) -> dict[str, Any]:
    if isinstance(raw, Unreadable):
        raise RecordError(raw.reason)
    if not isinstance(raw, dict):
        raise RecordError(f"a record must be a JSON object, not {type(raw).__name__}")
    if text_field != "text" and text_field in raw:
        # Text data may name its document field anything; the rest of the pipeline reads "text".
        return {**raw, "text": raw[text_field]}
    return raw


def _detect(record: dict[str, Any]) -> str:
    try:
        return detect_format(record)
    except DataError as err:
        raise RecordError(str(err)) from None


def write_rejects(rejects: list[Reject], path: str | Path) -> None:
    """Write rejects as JSON lines {file, line, reason, record} (the run directory's rejects.jsonl)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for reject in rejects:
            row = {"file": reject.file, "line": reject.line, "reason": reject.reason, "record": reject.record}
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
