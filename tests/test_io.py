"""honing.io: atomic writes appear whole or not at all, leave no temporary files, and fail as one-line HoningErrors."""

from __future__ import annotations

import json
import os

import pytest

from honing.errors import HoningError
from honing.io import (append_jsonl, atomic_dir, atomic_open, atomic_path, truncate, write_bytes_atomic,
                       write_json_atomic, write_jsonl_atomic, write_text_atomic)


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writers_produce_the_content_and_no_temporary_file(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "héllo\n")
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    write_json_atomic(tmp_path / "c.json", {"x": 1, "p": tmp_path})
    write_jsonl_atomic(tmp_path / "d.jsonl", [{"k": "é"}, {"k": 2}])
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": 1, "p": str(tmp_path)}
    assert (tmp_path / "d.jsonl").read_text(encoding="utf-8") == '{"k": "é"}\n{"k": 2}\n'
    assert _names(tmp_path) == ["a.txt", "b.bin", "c.json", "d.jsonl"]


def test_new_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    mask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("new, half written")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["out.json"]

    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["out.json"]


def test_a_failed_write_removes_the_parent_directories_it_made(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_open(tmp_path / "a" / "b" / "out.txt") as handle:
            handle.write("x")
            raise RuntimeError
    assert _names(tmp_path) == []


def test_atomic_path_moves_what_was_written_by_name(tmp_path):
    with atomic_path(tmp_path / "sub" / "w.bin") as tmp:
        assert tmp.parent == tmp_path / "sub" and tmp.name != "w.bin"
        tmp.write_bytes(b"abc")
    assert (tmp_path / "sub" / "w.bin").read_bytes() == b"abc"
    assert _names(tmp_path / "sub") == ["w.bin"]


def test_a_failing_replace_is_a_honing_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def no_space(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(HoningError) as caught:
        write_text_atomic(target, "new")
    message = str(caught.value)
    assert "\n" not in message and str(target) in message and "No space left" in message
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["out.txt"]


def test_unwritable_outputs_are_one_line_honing_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for attempt in (lambda: write_text_atomic(blocker / "sub" / "out.txt", "x"),
                    lambda: append_jsonl(blocker / "log.jsonl", [{}]),
                    lambda: atomic_dir(blocker).__enter__(),
                    lambda: write_text_atomic(tmp_path, "x")):
        with pytest.raises(HoningError) as caught:
            attempt()
        assert "\n" not in str(caught.value) and "cannot write" in str(caught.value)
    assert _names(tmp_path) == ["file"]
    with pytest.raises(ValueError):
        atomic_open(tmp_path / "x", "a").__enter__()


def test_append_jsonl_appends_and_fsyncs(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    path = tmp_path / "logs" / "metrics.jsonl"
    size = append_jsonl(path, [{"step": 1}])
    assert size == path.stat().st_size and len(synced) == 1
    size2 = append_jsonl(path, [{"step": 2}, {"step": 3, "é": "ü"}])
    assert len(synced) == 2 and size2 > size
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"step": 1}, {"step": 2}, {"step": 3, "é": "ü"}]
    truncate(path, size)
    assert path.read_text() == '{"step": 1}\n'


def test_atomic_dir_replaces_the_old_directory_whole(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with atomic_dir(final) as tmp:
        assert not (tmp / "old.txt").exists()
        (tmp / "new.txt").write_text("new")
        assert (final / "old.txt").exists()  # the old one stays until the new one is complete
    assert _names(final) == ["new.txt"]
    assert _names(tmp_path) == ["model"]


def test_atomic_dir_failure_keeps_the_old_directory_and_leaves_nothing(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError
    assert _names(final) == ["old.txt"] and _names(tmp_path) == ["model"]
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "deep" / "er" / "cache"):
            raise RuntimeError
    assert _names(tmp_path) == ["model"]


def test_atomic_dir_keep_existing_keeps_what_appeared_first(tmp_path):
    final = tmp_path / "cache"
    with atomic_dir(final, keep_existing=True) as tmp:
        (tmp / "mine.txt").write_text("mine")
        final.mkdir()
        (final / "theirs.txt").write_text("theirs")
    assert _names(final) == ["theirs.txt"] and _names(tmp_path) == ["cache"]
