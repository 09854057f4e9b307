"""Answers already computed, per (model, task settings, example), so a re-run computes only what changed.

What is cached is the model's raw output (generated text, log-likelihoods, loss sums), never a
score: changing a task's metrics re-scores from the cache without running the model again.
The model key covers the weights (and adapter) by content hash; the task key covers everything
that changes what the model is asked or how it answers (kind, prompt rendering, sampling).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable


def default_path() -> Path:
    """$HONING_CACHE/evals.sqlite, else ~/.cache/honing/evals.sqlite."""
    root = Path(os.environ["HONING_CACHE"]).expanduser() if os.environ.get("HONING_CACHE") else Path.home() / ".cache" / "honing"
    return root / "evals.sqlite"


def key_of(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


class AnswerCache:
    """A small SQLite table; `enabled=False` makes every lookup a miss and stores nothing."""

    def __init__(self, path: Path | None = None, *, enabled: bool = True):
        self.enabled = enabled
        self.path = path or default_path()
        self._db: sqlite3.Connection | None = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (model TEXT, task TEXT, example TEXT, value TEXT, "
                             "PRIMARY KEY (model, task, example))")

    def get_many(self, model: str, task: str, examples: Iterable[str]) -> dict[str, Any]:
        if self._db is None:
            return {}
        wanted = list(examples)
        found: dict[str, Any] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            rows = self._db.execute(
                f"SELECT example, value FROM answers WHERE model=? AND task=? AND example IN ({','.join('?' * len(chunk))})",
                (model, task, *chunk),
            )
            found.update((example, json.loads(value)) for example, value in rows)
        return found

    def put_many(self, model: str, task: str, values: dict[str, Any]) -> None:
        if self._db is None or not values:
            return
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                                 [(model, task, example, json.dumps(value)) for example, value in values.items()])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
