"""Every file honing writes goes through here, so that no reader ever sees half of one.

    atomic_path(path)         a temporary sibling path to write by any means (safetensors, numpy);
                              on success fsynced and moved onto `path` with os.replace
    atomic_open(path, mode)   the same, as an open file handle
    write_text_atomic / write_bytes_atomic / write_json_atomic / write_jsonl_atomic
    atomic_dir(path)          a temporary sibling directory that replaces `path` on success
    append_jsonl(path, records)   append lines, flush and fsync (logs that must survive a crash)

On failure (an exception, Ctrl-C) the temporary file or directory is removed, and so are any parent
directories created for it, so a failed command leaves nothing behind. An output that cannot be
created (its parent is a file, no permission, disk full) is a `HoningError` naming the path.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from honing.errors import HoningError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cannot_write(path: str | Path, err: OSError) -> HoningError:
    """The one-line error for an output that cannot be written."""
    path = Path(path)
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        return HoningError(f"cannot write {path}: {parent} is a file, not a directory; choose another output path")
    reason = err.strerror or str(err)
    return HoningError(f"cannot write {path}: {reason}; choose another output path or free the space")


def make_parents(path: Path) -> list[Path]:
    """Create the missing parent directories of `path`; the ones created, outermost first."""
    missing = [p for p in path.parents if not p.exists()][::-1]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise cannot_write(path, err) from None
    return missing


def remove_created(directories: list[Path]) -> None:
    """Remove directories made by `make_parents`, innermost first, where they are still empty."""
    for directory in reversed(directories):
        try:
            directory.rmdir()
        except OSError:
            return


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new file in `path` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


# --------------------------------------------------------------------------- files


class PendingFile:
    """A file written under a temporary name beside `path`: `commit` fsyncs it and moves it onto
    `path`, `discard` removes it (and the parent directories made for it)."""

    def __init__(self, path: str | Path, mode: str | None = "w", *, encoding: str = "utf-8") -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise HoningError(f"cannot write {self.path}: it is a directory; give a file path")
        self._created = make_parents(self.path)
        try:
            fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as err:
            remove_created(self._created)
            raise cannot_write(self.path, err) from None
        self.tmp = Path(name)
        self.handle: IO[Any] | None = None
        if mode is None:  # the caller writes to self.tmp by name
            os.close(fd)
        else:
            self.handle = os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": encoding}))

    def commit(self) -> None:
        try:
            if self.handle is not None:
                self.handle.flush()
                os.fsync(self.handle.fileno())
                self.handle.close()
            else:
                fsync_file(self.tmp)
            os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
            os.replace(self.tmp, self.path)
        except OSError as err:
            self.discard()
            raise cannot_write(self.path, err) from None

    def discard(self) -> None:
        if self.handle is not None:
            try:
                self.handle.close()
            except OSError:
                pass
        self.tmp.unlink(missing_ok=True)
        remove_created(self._created)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, the file written there is
    fsynced and moved onto `path`, else removed. For writers that take a path, not a handle."""
    pending = PendingFile(path, None)
    try:
        yield pending.tmp
    except BaseException:
        pending.discard()
        raise
    pending.commit()


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """An open file ("w" text or "wb" bytes) that appears under `path` only if the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a new file: mode 'w' or 'wb', not {mode!r}")
    pending = PendingFile(path, mode, encoding=encoding)
    try:
        yield pending.handle
    except BaseException:
        pending.discard()
        raise
    pending.commit()


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_open(path) as handle:
        handle.write(text)
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_json_atomic(path: str | Path, data: Any, *, indent: int | None = 2, ensure_ascii: bool = True,
                      newline: bool = True) -> Path:
    """`data` as JSON (non-JSON values via str), written atomically."""
    text = json.dumps(data, indent=indent, ensure_ascii=ensure_ascii, default=str)
    return write_text_atomic(path, text + ("\n" if newline else ""))


def write_jsonl_atomic(path: str | Path, records: Iterable[Any]) -> Path:
    """One JSON line per record (UTF-8, not ASCII-escaped), written atomically."""
    with atomic_open(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return Path(path)


def append_jsonl(path: str | Path, records: Iterable[Any]) -> int:
    """Append one JSON line per record, then flush and fsync; the file's size afterwards."""
    path = Path(path)
    make_parents(path)
    try:
        with path.open("a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:  # a directory in the way, no permission, a full disk
        raise cannot_write(path, err) from None
    return path.stat().st_size


def truncate(path: str | Path, size: int) -> None:
    """Cut a file back to `size` bytes, durably (undoing appends)."""
    path = Path(path)
    if path.exists():
        with path.open("r+b") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())


# --------------------------------------------------------------------------- directories


def replace_dir(tmp: Path, final: Path, *, old: Path | None = None) -> None:
    """Move the complete directory `tmp` onto `final`. Linux cannot rename over a non-empty
    directory, so an existing `final` is first moved aside (to `old`) and removed after: at no point
    is there neither the old nor the new one under a known name."""
    if final.exists():
        old = old or final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


@contextmanager
def atomic_dir(final: str | Path, *, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary sibling of `final`; on success it replaces `final`.

    keep_existing=True (caches): if `final` appeared meanwhile, keep it and drop ours.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise HoningError(f"cannot write the directory {final}: a file of that name exists; choose another path")
    created = make_parents(final)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
    except OSError as err:
        remove_created(created)
        raise cannot_write(final, err) from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_created(created)
        raise
    if final.exists():
        if keep_existing:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        replace_dir(tmp, final)
    else:
        try:
            os.replace(tmp, final)
        except OSError:
            if keep_existing and final.exists():  # another process won the race
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
