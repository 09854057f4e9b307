"""Run records: what went into a model, what came out, and how it went.

Every stage writes one run directory:

    <run>/config.yaml     the resolved config
    <run>/run.json        inputs with content hashes, parent run, code and library versions,
                          seeds, status, final metrics, outputs
    <run>/metrics.jsonl   one JSON object per logged step
    <run>/checkpoints/    resumable training state
    <run>/model/ or <run>/adapter/   the output

From any output directory one can walk back, run by run, to the raw data that made it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from honing.config import dump_config
from honing.errors import HoningError
from honing.io import write_json_atomic, write_text_atomic

RUN_FILE = "run.json"
_hash_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, cached per (path, size, mtime) for this process."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_cache:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _hash_cache[key] = digest.hexdigest()
    return _hash_cache[key]


def tree_sha256(path: str | Path) -> str:
    """sha256 over every file under a directory (relative names and contents, sorted); a file's own hash otherwise."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def find_parent_run(path: str | Path | None) -> dict[str, Any] | None:
    """If `path` lies inside a honing run directory (or is a registry reference), that run's id, directory
    and stage (and the reference)."""
    if not path:
        return None
    if str(path).startswith("registry:"):
        from honing.registry.refs import resolve_ref

        version = resolve_ref(str(path), check_weights=False)
        found = find_parent_run(version.run_dir)
        return {**found, "registry": f"{version.name}@{version.version}"} if found else None
    current = Path(path).resolve()
    for candidate in [current, *current.parents]:
        record = candidate / RUN_FILE
        if record.is_file():
            try:
                data = json.loads(record.read_text())
            except (OSError, json.JSONDecodeError):
                return None
            return {"run_id": data.get("run_id"), "dir": str(candidate), "stage": data.get("stage")}
    return None


def code_version() -> dict[str, Any]:
    """honing's version and, when running from a git checkout, the commit and whether it was dirty."""
    from honing import __version__

    info: dict[str, Any] = {"honing": __version__}
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
            if commit.returncode == 0:
                info["git_commit"] = commit.stdout.strip()
                info["git_dirty"] = bool(dirty.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "datasets", "tokenizers", "safetensors", "pydantic"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


_CURRENT_RUN: Path | None = None


def current_run_dir() -> Path | None:
    """The run directory this process last created or reopened (where a crash file goes), if any."""
    return _CURRENT_RUN


def default_run_dir(stage: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stage}-{stamp}"


class Run:
    """One run directory and its `run.json`. Only the main process writes (is_main=False makes it inert)."""

    def __init__(self, directory: Path, record: dict[str, Any], *, is_main: bool = True):
        self.dir = directory
        self.record = record
        self.is_main = is_main
        self._tensorboard = None

    # ----------------------------------------------------------------- creation

    @classmethod
    def create(cls, stage: str, config: BaseModel, directory: str | Path | None, *, is_main: bool = True) -> Run:
        """Start a run directory. Call this only after the inputs were validated, so a bad
        input never leaves a half-written run behind."""
        path = Path(directory) if directory else default_run_dir(stage)
        if path.exists() and not path.is_dir():
            raise HoningError(f"the run directory {path} is a file, not a directory; set output.dir (or run_dir) "
                              "to a new or existing directory")
        if is_main and path.exists() and (path / RUN_FILE).exists():
            raise HoningError(f"{path} already holds a run; pass --resume to continue it, or choose another output.dir")
        record = {
            "run_id": f"{stage}-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(3).hex()}",
            "stage": stage,
            "status": "running",
            "started": _now(),
            "command": sys.argv,
            "cwd": os.getcwd(),
            "code": code_version(),
            "libraries": library_versions(),
            "host": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
            "inputs": [],
            "parent": None,
            "outputs": {},
            "metrics": {},
        }
        run = cls(path, record, is_main=is_main)
        if is_main:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise HoningError(f"cannot create the run directory {path}: {err.strerror or err}; set output.dir "
                                  "(or run_dir) to a writable directory") from None
            _remember(path)
            write_text_atomic(path / "config.yaml", dump_config(config))
            run.save()
        return run

    @classmethod
    def open(cls, directory: str | Path, *, is_main: bool = True) -> Run:
        """Reopen an existing run (for --resume)."""
        path = Path(directory)
        record_path = path / RUN_FILE
        if not record_path.is_file():
            raise HoningError(f"{path} is not a run directory (no {RUN_FILE}); nothing to resume")
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise HoningError(f"{record_path}: not a readable run record ({err}); the run directory is damaged") from None
        if not isinstance(record, dict):
            raise HoningError(f"{record_path}: not a run record (a JSON object); the run directory is damaged")
        record["status"] = "running"
        record.setdefault("resumed", []).append(_now())
        run = cls(path, record, is_main=is_main)
        run.save()
        _remember(path)
        return run

    # ----------------------------------------------------------------- recording

    def add_input(self, role: str, path: str | Path, *, sha256: str | None = None, **extra: Any) -> None:
        """Record an input with its content hash (computed unless given)."""
        digest = sha256 or (tree_sha256(path) if Path(path).exists() else None)
        entry = {"role": role, "path": str(path), "sha256": digest, **extra}
        self.record["inputs"] = [i for i in self.record["inputs"] if not (i["role"] == role and i["path"] == str(path))]
        self.record["inputs"].append(entry)
        self.save()

    def set(self, key: str, value: Any) -> None:
        self.record[key] = value
        self.save()

    def add_output(self, role: str, path: str | Path) -> None:
        self.record["outputs"][role] = str(path)
        self.save()

    def attach_tensorboard(self, log_dir: str | Path) -> None:
        """Also write every logged metric to TensorBoard, live (needs the tensorboard package)."""
        from torch.utils.tensorboard import SummaryWriter

        self._tensorboard = SummaryWriter(log_dir=str(log_dir))

    def log_metrics(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.is_main:
            return
        line = json.dumps({"step": step, "time": _now(), **metrics}, default=float)
        with (self.dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        if self._tensorboard is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tensorboard.add_scalar(key, value, step)
            self._tensorboard.flush()

    def finish(self, status: str = "completed", metrics: dict[str, Any] | None = None) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        self.record["status"] = status
        self.record["finished"] = _now()
        if metrics:
            self.record["metrics"].update(metrics)
        self.save()

    def save(self) -> None:
        if self.is_main:
            write_json_atomic(self.dir / RUN_FILE, self.record)


def _remember(path: Path) -> None:
    global _CURRENT_RUN
    _CURRENT_RUN = path


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
