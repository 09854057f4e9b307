"""What a synth run keeps on disk so that an interrupted run resumes without redoing or losing work.

    <run_dir>/synth.jsonl    kept records, appended one batch at a time (flush + fsync)
    <run_dir>/dropped.jsonl  every rejected candidate with the rule that removed it
    <run_dir>/state.json     written atomically after each batch: counts, progress, and the byte
                             length of both files at that moment

A crash between appending a batch and writing the state leaves bytes past the recorded
lengths; resuming truncates them, so the half-committed batch is redone, never duplicated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from honing.errors import HoningError
from honing.io import append_jsonl, truncate, write_json_atomic, write_jsonl_atomic
from honing.runs import file_sha256

KEPT_FILE = "synth.jsonl"
DROPPED_FILE = "dropped.jsonl"
STATE_FILE = "state.json"


class SynthStore:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.kept_path = self.dir / KEPT_FILE
        self.dropped_path = self.dir / DROPPED_FILE
        self.state_path = self.dir / STATE_FILE

    def load_state(self) -> dict[str, Any] | None:
        """The last committed state (files cut back to it), or None for a fresh run."""
        if not self.state_path.is_file():
            for path in (self.kept_path, self.dropped_path):
                path.unlink(missing_ok=True)  # appended before any state was committed: redo
            return None
        state = json.loads(self.state_path.read_text(encoding="utf-8"))
        for path, size in ((self.kept_path, state["kept_bytes"]), (self.dropped_path, state["dropped_bytes"])):
            actual = path.stat().st_size if path.exists() else 0
            if actual < size:
                raise HoningError(f"{path} is shorter than {self.state_path} records ({actual} < {size} bytes); "
                                  "the run directory was edited, start a new run_dir")
            if actual > size:
                truncate(path, size)
        return state

    def kept_records(self) -> list[dict[str, Any]]:
        if not self.kept_path.exists():
            return []
        with self.kept_path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def commit(self, kept: list[dict[str, Any]], dropped: list[dict[str, Any]], state: dict[str, Any]) -> None:
        """Append one batch durably, then record the state that includes it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        sizes = {path: append_jsonl(path, records) for path, records in ((self.kept_path, kept), (self.dropped_path, dropped))}
        write_json_atomic(self.state_path, {**state, "kept_bytes": sizes[self.kept_path],
                                            "dropped_bytes": sizes[self.dropped_path]})

    def finalize(self, output: str | Path, records: list[dict[str, Any]]) -> str:
        """Write the output atomically (temp file + os.replace); its sha256."""
        write_jsonl_atomic(output, records)
        return file_sha256(output)
