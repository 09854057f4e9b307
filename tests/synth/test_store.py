"""honing.synth.store: batches appended durably, resume cuts back to the last committed state, and the
output is finalised atomically with its sha256."""

from __future__ import annotations

import hashlib
import json

import pytest

from honing.errors import HoningError
from honing.synth.store import SynthStore


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_commit_appends_batches_and_records_byte_lengths(tmp_path):
    store = SynthStore(tmp_path / "run")
    assert store.load_state() is None and store.kept_records() == []
    store.commit([{"i": 1}], [{"reason": "empty"}], {"done": 1})
    store.commit([{"i": 2}, {"i": "é"}], [], {"done": 3})
    assert store.kept_records() == [{"i": 1}, {"i": 2}, {"i": "é"}]
    assert _lines(store.dropped_path) == [{"reason": "empty"}]
    state = json.loads(store.state_path.read_text())
    assert state == {"done": 3, "kept_bytes": store.kept_path.stat().st_size,
                     "dropped_bytes": store.dropped_path.stat().st_size}
    assert store.load_state() == state


def test_resume_cuts_a_half_committed_batch(tmp_path):
    store = SynthStore(tmp_path)
    store.commit([{"i": 1}], [], {"done": 1})
    committed = store.kept_path.read_bytes()
    with store.kept_path.open("a") as handle:  # a crash after appending, before the state was written
        handle.write('{"i": 2}\n{"i": 3')
    with store.dropped_path.open("a") as handle:
        handle.write('{"reason": "x"}\n')
    state = SynthStore(tmp_path).load_state()
    assert state["done"] == 1
    assert store.kept_path.read_bytes() == committed and store.dropped_path.read_bytes() == b""
    assert store.kept_records() == [{"i": 1}]


def test_files_without_a_state_are_redone(tmp_path):
    store = SynthStore(tmp_path)
    store.kept_path.write_text('{"i": 1}\n')
    store.dropped_path.write_text('{"reason": "x"}\n')
    assert store.load_state() is None
    assert not store.kept_path.exists() and not store.dropped_path.exists()


def test_a_file_shorter_than_its_state_is_an_error(tmp_path):
    store = SynthStore(tmp_path)
    store.commit([{"i": 1}, {"i": 2}], [], {"done": 2})
    store.kept_path.write_text('{"i": 1}\n')
    with pytest.raises(HoningError, match="shorter than"):
        store.load_state()


def test_finalize_writes_atomically_and_returns_the_sha256(tmp_path):
    store = SynthStore(tmp_path / "run")
    output = tmp_path / "out" / "synth.jsonl"
    output.parent.mkdir()
    output.write_text("old\n")
    records = [{"instruction": "q", "output": "ä"}, {"instruction": "r", "output": "b"}]
    digest = store.finalize(output, records)
    assert _lines(output) == records
    assert digest == hashlib.sha256(output.read_bytes()).hexdigest()
    assert sorted(p.name for p in output.parent.iterdir()) == ["synth.jsonl"]
