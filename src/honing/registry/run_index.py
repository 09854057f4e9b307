"""The run index: the run.json files under some directories, with their outputs by sha256 and by path.

    read_run(dir) -> RunRecord        one run record, with the working directory its relative paths start from
    RunIndex().scan(root)             every run directory under `root` (SCAN_DEPTH levels; checkpoints and model
                                      folders skipped), its outputs in `by_sha` and `by_path`

honing.registry.lineage walks the graph over this index.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honing.errors import HoningError
from honing.runs import RUN_FILE

SCAN_DEPTH = 3
SCAN_MAX_DIRS = 5000
SCAN_SKIP = {"checkpoints", "adapter", "model", "reward_model", "tensorboard", "node_modules", "__pycache__",
             "site-packages"}


@dataclass
class RunRecord:
    """One run.json, with the working directory its relative paths were written from."""

    dir: Path
    record: dict[str, Any]
    base: Path
    from_registry: bool = False

    @property
    def run_id(self) -> str | None:
        return self.record.get("run_id")

    @property
    def node_id(self) -> str:
        return f"run:{self.run_id or self.dir}"

    @property
    def started(self) -> _dt.datetime | None:
        return parse_time(self.record.get("started"))

    def resolve(self, text: str) -> Path:
        """A recorded path on this machine: as recorded when absolute, else from the run's working directory
        (or the current one) where it exists there."""
        path = Path(text).expanduser()
        if path.is_absolute():
            return path.resolve()
        candidates = [self.base / path, Path.cwd() / path]
        return next((c for c in candidates if c.exists()), candidates[0]).resolve()

    def outputs(self) -> Iterator[tuple[str, Path, str | None]]:
        """(role, path, sha256 or None) of every recorded output."""
        outputs = self.record.get("outputs")
        synth = self.record.get("output") if isinstance(self.record.get("output"), dict) else {}
        for role, value in (outputs.items() if isinstance(outputs, dict) else []):
            text, sha = (value.get("path"), value.get("sha256")) if isinstance(value, dict) else (value, None)
            if isinstance(text, str) and text:
                if sha is None and synth.get("path") == text:
                    sha = synth.get("sha256")
                yield str(role), self.resolve(text), sha

    def inputs(self) -> list[dict[str, Any]]:
        """The recorded inputs that name a path (malformed entries left out)."""
        inputs = self.record.get("inputs")
        return [i for i in (inputs if isinstance(inputs, list) else [])
                if isinstance(i, dict) and isinstance(i.get("path"), str)]

    def read(self, path: Path, sha: str | None = None, *, any_hash: bool = False) -> bool:
        """Whether the run recorded reading `path` (with this hash, unless any_hash): then an output with the same
        bytes elsewhere is a copy of its input, and the run is not what made `path`."""
        return any((any_hash or i.get("sha256") == sha) and self.resolve(i["path"]) == path for i in self.inputs())

    def output_role(self, path: Path) -> str | None:
        return next((role for role, out, _ in self.outputs() if out == path), None)


def read_run(directory: Path) -> RunRecord:
    """The run in `directory`; a HoningError when its run.json is missing or damaged."""
    directory = directory.resolve()
    record_path = directory / RUN_FILE
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HoningError(f"{directory} is not a run directory (no {RUN_FILE})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HoningError(f"{record_path}: not a readable run record ({err}); the run directory is damaged") from None
    if not isinstance(record, dict):
        raise HoningError(f"{record_path}: not a run record (a JSON object); the run directory is damaged")
    return RunRecord(directory, record, working_dir(directory, record))


def enclosing_run_dir(path: Path) -> Path | None:
    """The run directory `path` lies in (itself included), if any."""
    return next((d for d in [path, *path.parents] if (d / RUN_FILE).is_file()), None)


def working_dir(directory: Path, record: dict[str, Any]) -> Path:
    """Where the run's relative paths start: found from a recorded output inside the run directory
    (runs/data-clean-x/removed.jsonl), else the parent of a `runs/` folder, else the current directory.
    Before the last, the directory the run recorded as its `cwd`: a project that was copied or moved finds its
    files beside its run directories, so the recorded place comes after those rules."""
    outputs = record.get("outputs") if isinstance(record.get("outputs"), dict) else {}
    texts = [v.get("path") if isinstance(v, dict) else v for v in outputs.values()]
    for text in (t for t in texts if isinstance(t, str) and t and not Path(t).is_absolute()):
        fits = [base for base in directory.parents
                if Path(os.path.normpath(base / text)).is_relative_to(directory)]
        if fits:
            return next((base for base in fits if (base / text).exists()), fits[-1])
    if directory.parent.name == "runs":
        return directory.parent.parent
    recorded = record.get("cwd")
    return Path(recorded) if isinstance(recorded, str) and Path(recorded).is_dir() else Path.cwd()


def parse_time(text: Any) -> _dt.datetime | None:
    """A recorded ISO time (`started`, `finished`), as UTC when it names no zone; None when it is not one."""
    try:
        when = _dt.datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return when.replace(tzinfo=_dt.timezone.utc) if when is not None and when.tzinfo is None else when


class RunIndex:
    """The run records found under the search roots, with their outputs by sha256 and by path."""

    def __init__(self) -> None:
        self.runs: dict[Path, RunRecord] = {}
        self.by_sha: dict[str, list[tuple[RunRecord, str, Path]]] = {}
        self.by_path: dict[Path, list[tuple[RunRecord, str, str | None]]] = {}
        self.scanned: set[Path] = set()
        self.version = 0
        """Grows whenever a run is added (so the walk knows when to try unmatched files again)."""

    def scan(self, root: Path) -> None:
        """Add every run directory under `root`, at most SCAN_DEPTH levels down (checkpoints, model
        folders and hidden directories skipped, SCAN_MAX_DIRS directories at most)."""
        root = root.resolve()
        if root in self.scanned or not root.is_dir() or root == Path(root.anchor):
            return
        self.scanned.add(root)
        pending, seen = [(root, 0)], 0
        while pending and seen < SCAN_MAX_DIRS:
            directory, depth = pending.pop()
            seen += 1
            if (directory / RUN_FILE).is_file():
                self.add(directory)
                continue
            if depth < SCAN_DEPTH:
                pending += [(child, depth + 1) for child in _subdirectories(directory)]

    def add(self, directory: Path) -> RunRecord | None:
        """Index one run directory (None when its record is damaged)."""
        directory = directory.resolve()
        if directory not in self.runs:
            try:
                run = read_run(directory)
            except HoningError:
                return None
            self.put(run)
        return self.runs[directory]

    def put(self, run: RunRecord) -> None:
        self.runs[run.dir] = run
        self.version += 1
        for role, path, sha in run.outputs():
            if sha:
                self.by_sha.setdefault(sha, []).append((run, role, path))
            self.by_path.setdefault(path, []).append((run, role, sha))


def _subdirectories(directory: Path) -> list[Path]:
    try:
        with os.scandir(directory) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)
                    and not e.name.startswith(".") and e.name not in SCAN_SKIP]
    except OSError:
        return []
