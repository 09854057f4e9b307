"""Streaming input and atomic output for the data workbench.

Input: `iter_items(path)` yields (file, line, payload) without parsing a JSONL line (payload is
the line's text, or an `Unreadable` for a line that is not UTF-8; the worker that processes it
parses it), so the main process only reads; other formats go through
`honing.data.loading.read_records` and yield the parsed record. An input without records is an error.

Output: `AtomicOutputs` opens files as temporary files in their own directory and moves them
into place (honing.io: fsync, os.replace) only when the whole command succeeded; a failure or an interrupt
removes them, so a half-written output never exists under its final name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from honing.data.formats import RecordError
from honing.data.loading import Unreadable, read_lines, read_records
from honing.errors import DataError
from honing.io import PendingFile

Item = tuple[str, int, Any]
"""(file, line, payload): payload is a JSONL line's text or an already parsed record."""


def iter_items(path: str | Path) -> Iterator[Item]:
    """Every record of `path` with its file and line; JSONL lines are left unparsed."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    count = 0
    if path.is_file() and path.suffix.lower() == ".jsonl":
        for number, text in read_lines(path):  # a line that is not UTF-8 comes as an Unreadable (a reject)
            if isinstance(text, Unreadable) or text.strip():
                count += 1
                yield str(path), number, text
    else:
        for item in read_records(path):
            count += 1
            yield item
    if not count:
        what = "no data files under it" if path.is_dir() else "the file is empty"
        raise DataError(f"{path} holds no records ({what}); give a file with at least one record")


def parse_payload(payload: Any) -> dict[str, Any]:
    """The record of an item; RecordError when the line is not a JSON object."""
    if isinstance(payload, Unreadable):
        raise RecordError(payload.reason)
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as err:
            raise RecordError(f"not valid JSON: {err.msg} (column {err.colno})") from None
        except RecursionError:
            raise RecordError("not valid JSON: nested too deeply") from None
    if not isinstance(payload, dict):
        raise RecordError(f"a record must be a JSON object, not {type(payload).__name__}")
    return payload


def dumps(record: Any) -> str:
    """One JSONL line (without the newline), the same in every process."""
    return json.dumps(record, ensure_ascii=False, default=str)


def as_line(payload: Any) -> str:
    """The item as an output line: a JSONL line's own text (unchanged bytes), or the record serialised."""
    if isinstance(payload, Unreadable):  # a reject's text, its undecodable bytes shown as U+FFFD
        return payload.text.rstrip("\r\n")
    return payload.rstrip("\r\n") if isinstance(payload, str) else dumps(payload)


class AtomicFile(PendingFile):
    """A JSONL file written line by line under a temporary name and moved into place by `commit`."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, "w")
        self.lines = 0

    def write(self, line: str) -> None:
        self.handle.write(line)
        self.handle.write("\n")
        self.lines += 1


class AtomicOutputs:
    """A set of AtomicFiles that appear together on success and not at all on failure."""

    def __init__(self) -> None:
        self.files: dict[str, AtomicFile] = {}

    def open(self, role: str, path: str | Path) -> AtomicFile:
        self.files[role] = AtomicFile(path)
        return self.files[role]

    def __enter__(self) -> AtomicOutputs:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        for file in self.files.values():
            if kind is None:
                file.commit()
            else:
                file.discard()
