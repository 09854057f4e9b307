"""The request log: every request the server answered or refused, and the feedback given on answers.

One SQLite file in WAL mode (readers such as `honing monitor` never wait for the server), each request
committed before its response's last byte is sent, so a server killed at any moment (kill -9 included) loses
no request it answered. With `log.sync: full` every commit is also fsynced, which survives a power cut too
(about 50 ms a request on this machine's disk, against 0.3 ms). Prompts, answers and corrections are PII-redacted before they are written
(by default) with the data workbench's detectors; the numbers (tokens, latency, finish reason) are always
kept. `PRAGMA user_version` is the schema version; a log written by a newer honing is refused.

    requests   one row per request: id (the response id the client saw), when, endpoint, model name and
               version, key id, HTTP status and error type, latency, time to first token, tokens, finish
               reason, whether it streamed, the (redacted) request and answers as JSON, and for a model
               with `rag:` the chunks retrieved into its prompt (`sources`: the index and each chunk's id,
               document and score; kept even with store_text false: ids, not text)
    feedback   ratings (up/down), corrected answers and choices between the n answers of one request
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from honing.errors import HoningError

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT,
    model_version TEXT,
    key_id TEXT,
    status INTEGER NOT NULL,
    error TEXT,
    latency_s REAL,
    first_token_s REAL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    finish_reason TEXT,
    stream INTEGER NOT NULL DEFAULT 0,
    n INTEGER NOT NULL DEFAULT 1,
    request TEXT,
    choices TEXT,
    redactions INTEGER NOT NULL DEFAULT 0,
    sources TEXT
);
CREATE INDEX IF NOT EXISTS requests_created ON requests(created);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL REFERENCES requests(id),
    created REAL NOT NULL,
    key_id TEXT,
    rating TEXT CHECK (rating IN ('up', 'down')),
    answer_index INTEGER NOT NULL DEFAULT 0,
    choice INTEGER,
    correction TEXT,
    comment TEXT
);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback(request_id);
"""
MIGRATIONS = {
    2: "ALTER TABLE requests ADD COLUMN sources TEXT;",
}
"""What brings a log of schema version v - 1 to v (SCHEMA creates a new log at the newest version directly)."""


@dataclass
class LoggedRequest:
    """One request as the log keeps it. `request` holds the messages or prompt and the sampling settings the
    client sent; `choices` one {index, text, finish_reason, completion_tokens} per answer."""

    id: str
    endpoint: str
    status: int
    created: float = field(default_factory=time.time)
    model: str | None = None
    model_version: str | None = None
    key_id: str | None = None
    error: str | None = None
    latency_s: float | None = None
    first_token_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    stream: bool = False
    n: int = 1
    request: dict[str, Any] | None = None
    choices: list[dict[str, Any]] | None = None
    sources: dict[str, Any] | None = None
    """With `rag:` on the model: {index, chunks: [{id, source, path, score}]}, the chunks put in the prompt."""


class Redactor:
    """PII placeholders in every string of a JSON value, counting what it replaced."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def text(self, text: str) -> tuple[str, int]:
        if not self.enabled or not text:
            return text, 0
        from honing.data.pii import find_pii, redact

        matches = find_pii(text)
        return (redact(text, matches), len(matches)) if matches else (text, 0)

    def value(self, value: Any) -> tuple[Any, int]:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            pairs = [self.value(v) for v in value]
            return [v for v, _ in pairs], sum(n for _, n in pairs)
        if isinstance(value, dict):
            pairs = {k: self.value(v) for k, v in value.items()}
            return {k: v for k, (v, _) in pairs.items()}, sum(n for _, n in pairs.values())
        return value, 0


def connect(path: str | Path, *, create: bool, sync: str = "normal") -> sqlite3.Connection:
    """A connection to the log at `path` (WAL; `sync` normal or full), created with its schema when `create`."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise HoningError(f"log.path {path} exists and is not a file; name a file for the request log")
    if not path.exists() and not create:
        raise HoningError(f"no request log at {path} (start `honing serve` first, or give log.path)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HoningError(f"{path} was written by a newer honing (request-log schema {version}, this one reads "
                              f"up to {SCHEMA_VERSION}); upgrade honing")
        if create and version < SCHEMA_VERSION:
            _migrate(conn, version)
    except sqlite3.DatabaseError as err:
        raise HoningError(f"{path} is not a honing request log ({err})") from None
    conn.row_factory = sqlite3.Row
    return conn


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring the log from schema `version` to SCHEMA_VERSION in one transaction (0: a new log, created whole)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # again: another process may have done it
        if version == 0:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
        else:
            for step in range(version + 1, SCHEMA_VERSION + 1):
                conn.execute(MIGRATIONS[step])
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class RequestLog:
    """The server's writer. Thread-safe: one connection, one lock, one committed transaction per write."""

    def __init__(self, path: str | Path, *, redact_pii: bool = True, store_text: bool = True, sync: str = "normal"):
        self.path = Path(path)
        self.conn = connect(self.path, create=True, sync=sync)
        self.redactor = Redactor(redact_pii)
        self.store_text = store_text
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def record(self, entry: LoggedRequest) -> None:
        """Write one request (redacted); returns once it is on disk."""
        row = asdict(entry)
        redactions = 0
        for key in ("request", "choices"):
            if not self.store_text:
                row[key] = None
            elif row[key] is not None:
                row[key], found = self.redactor.value(row[key])
                redactions += found
                row[key] = json.dumps(row[key], ensure_ascii=False)
        row["stream"] = int(row["stream"])
        row["sources"] = json.dumps(row["sources"], ensure_ascii=False) if row["sources"] is not None else None
        row["redactions"] = redactions
        columns = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        with self.lock:
            self.conn.execute(f"INSERT OR REPLACE INTO requests ({columns}) VALUES ({marks})", row)

    def feedback(self, request_id: str, *, rating: str | None = None, answer_index: int = 0, choice: int | None = None,
                 correction: str | None = None, comment: str | None = None, key_id: str | None = None) -> int:
        """Store feedback on a logged answer; its id. KeyError when the request is unknown; ValueError when the
        index or choice is not one of its answers."""
        with self.lock:
            found = self.conn.execute("SELECT n, key_id, status FROM requests WHERE id = ?", (request_id,)).fetchone()
        if found is None or found["status"] != 200 or found["key_id"] != key_id:
            raise KeyError(request_id)  # another key's answers are as unknown as answers never given
        n = found["n"]
        for name, index in (("answer_index", answer_index), ("choice", choice)):
            if index is not None and not 0 <= index < n:
                raise ValueError(f"{name} {index} is not one of this response's answers (0..{n - 1})")
        correction = self.redactor.text(correction)[0] if correction else correction
        comment = self.redactor.text(comment)[0] if comment else comment
        with self.lock:
            cursor = self.conn.execute(
                "INSERT INTO feedback (request_id, created, key_id, rating, answer_index, choice, correction, comment) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (request_id, time.time(), key_id, rating, answer_index, choice, correction, comment))
            return int(cursor.lastrowid or 0)


def read_requests(conn: sqlite3.Connection, since: float | None = None) -> list[dict[str, Any]]:
    """Every logged request (oldest first), JSON columns decoded."""
    query = "SELECT * FROM requests" + (" WHERE created >= ?" if since is not None else "") + " ORDER BY created"
    rows = []
    for row in conn.execute(query, () if since is None else (since,)):
        item = dict(row)
        for key in ("request", "choices", "sources"):
            item[key] = json.loads(item[key]) if item.get(key) else None
        item["stream"] = bool(item["stream"])
        rows.append(item)
    return rows


def read_feedback(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every feedback row, oldest first."""
    return [dict(row) for row in conn.execute("SELECT * FROM feedback ORDER BY id")]


def read_requests_by_id(conn: sqlite3.Connection, ids: set[str] | list[str]) -> dict[str, dict[str, Any]]:
    """The logged requests with these ids (JSON columns decoded), by id; ids not in the log are left out."""
    found: dict[str, dict[str, Any]] = {}
    wanted = sorted(ids)
    for start in range(0, len(wanted), 500):  # SQLite's limit on bound parameters
        chunk = wanted[start:start + 500]
        query = f"SELECT * FROM requests WHERE id IN ({', '.join('?' for _ in chunk)})"
        for row in conn.execute(query, chunk):
            item = dict(row)
            for key in ("request", "choices", "sources"):
                item[key] = json.loads(item[key]) if item.get(key) else None
            item["stream"] = bool(item["stream"])
            found[item["id"]] = item
    return found
