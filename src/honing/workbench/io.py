"""Streaming input and atomic output for the data workbench.

Input: `iter_items(path)` yields (file, line, payload) without parsing a JSONL line (payload is
the line's text; the worker that processes it parses it), so the main process only reads; other
formats go through `honing.data.loading.read_records` and yield the parsed record.

Output: `AtomicOutputs` opens files as temporary files in their own directory and moves them
into place with os.replace only when the whole command succeeded; a failure or an interrupt
removes them, so a half-written output never exists under its final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from honing.data.formats import RecordError
from honing.data.loading import read_records
from honing.errors import DataError

Item = tuple[str, int, Any]
"""(file, line, payload): payload is a JSONL line's text or an already parsed record."""


def iter_items(path: str | Path) -> Iterator[Item]:
    """Every record of `path` with its file and line; JSONL lines are left unparsed."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_file() and path.suffix.lower() == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                if text.strip():
                    yield str(path), number, text
        return
    yield from read_records(path)


def parse_payload(payload: Any) -> dict[str, Any]:
    """The record of an item; RecordError when the line is not a JSON object."""
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as err:
            raise RecordError(f"not valid JSON: {err.msg} (column {err.colno})") from None
    if not isinstance(payload, dict):
        raise RecordError(f"a record must be a JSON object, not {type(payload).__name__}")
    return payload


def dumps(record: Any) -> str:
    """One JSONL line (without the newline), the same in every process."""
    return json.dumps(record, ensure_ascii=False, default=str)


def as_line(payload: Any) -> str:
    """The item as an output line: a JSONL line's own text (unchanged bytes), or the record serialised."""
    return payload.rstrip("\r\n") if isinstance(payload, str) else dumps(payload)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicFile:
    """A text file written under a temporary name and moved into place by `commit`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self.tmp = Path(tmp)
        self.handle = os.fdopen(fd, "w", encoding="utf-8")
        self.lines = 0

    def write(self, line: str) -> None:
        self.handle.write(line)
        self.handle.write("\n")
        self.lines += 1

    def commit(self) -> None:
        self.handle.close()
        os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.handle.close()
        self.tmp.unlink(missing_ok=True)


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
