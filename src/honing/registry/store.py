"""The registry database: model names, numbered versions, aliases, and an append-only history.

One SQLite file (`.honing/registry.sqlite` in the project, or HONING_REGISTRY), in WAL mode so
readers never wait for a writer. Every change is one `BEGIN IMMEDIATE` transaction: two processes
registering at once get versions N and N+1, and a process killed mid-move leaves an alias on the
version it pointed at before or after, never between. `PRAGMA user_version` holds the schema
version; `MIGRATIONS[i]` takes a database from version i to i+1, and a database written by a newer
honing is refused rather than misread.

A version copies what the registry needs to answer `show`, `diff` and `lineage` on its own (the run
record, the resolved config, the weights' hash, attached evaluations), so a registry still answers
when the run directories were moved or deleted, and says which are missing.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honing.errors import HoningError

DEFAULT_PATH = Path(".honing") / "registry.sqlite"
PRODUCTION = "production"
CANDIDATE = "candidate"

MIGRATIONS: list[str] = [
    # 0 → 1: the first release.
    """
    CREATE TABLE models (
        name TEXT PRIMARY KEY,
        created TEXT NOT NULL,
        created_by TEXT NOT NULL
    );
    CREATE TABLE versions (
        name TEXT NOT NULL REFERENCES models(name),
        version INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('registered', 'rejected')),
        run_dir TEXT NOT NULL,
        run_id TEXT,
        stage TEXT,
        model_path TEXT NOT NULL,
        kind TEXT NOT NULL,
        weights_sha256 TEXT NOT NULL,
        record TEXT NOT NULL,
        config TEXT,
        created TEXT NOT NULL,
        created_by TEXT NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE attachments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('eval', 'redteam')),
        run_dir TEXT NOT NULL,
        run_id TEXT,
        record TEXT NOT NULL,
        results TEXT,
        created TEXT NOT NULL,
        UNIQUE (name, version, run_id),
        FOREIGN KEY (name, version) REFERENCES versions(name, version)
    );
    CREATE TABLE aliases (
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (name, alias),
        FOREIGN KEY (name, version) REFERENCES versions(name, version)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        version INTEGER,
        action TEXT NOT NULL,
        alias TEXT,
        from_version INTEGER,
        who TEXT NOT NULL,
        at TEXT NOT NULL,
        reason TEXT,
        details TEXT
    );
    CREATE TRIGGER events_are_kept BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'registry history is never deleted'); END;
    CREATE TRIGGER events_are_final BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'registry history is never rewritten'); END;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class Version:
    """One registered model version, as the registry holds it."""

    name: str
    version: int
    status: str
    """registered, or rejected (by a failed gate or by hand)."""
    run_dir: str
    run_id: str | None
    stage: str | None
    model_path: str
    """The directory that loads: the run's model/ (full or merged), else its adapter/."""
    kind: str
    """model, adapter or reward_model."""
    weights_sha256: str
    record: dict[str, Any]
    """The run's run.json as it was when registered."""
    config: str | None
    """The run's config.yaml as it was when registered."""
    created: str
    created_by: str
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"registry:{self.name}@{self.version}"

    def missing(self) -> list[str]:
        """What of this version is no longer on disk (the registry still answers from its copies)."""
        gone = []
        if not Path(self.run_dir).is_dir():
            gone.append(f"run directory {self.run_dir}")
        if not Path(self.model_path).is_dir():
            gone.append(f"weights {self.model_path}")
        return gone


def default_path() -> Path:
    """HONING_REGISTRY, else .honing/registry.sqlite in the working directory."""
    return Path(os.environ.get("HONING_REGISTRY") or DEFAULT_PATH)


def who() -> str:
    """Who is acting: HONING_USER, else the login name and the host."""
    if os.environ.get("HONING_USER"):
        return os.environ["HONING_USER"]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class Registry:
    """The registry at `path` (created on first write). Every method is one transaction."""

    def __init__(self, path: str | Path | None = None, *, create: bool = True):
        self.path = Path(path) if path else default_path()
        if self.path.is_dir():
            raise HoningError(f"the registry {self.path} is a directory; HONING_REGISTRY names the database file "
                              "(e.g. .honing/registry.sqlite)")
        if not self.path.exists() and not create:
            raise HoningError(f"no registry at {self.path}; register a run first (honing registry register RUN_DIR "
                              "--name NAME), or set HONING_REGISTRY")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA busy_timeout = 60000")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute("PRAGMA synchronous = FULL")
            self._migrate()
        except sqlite3.DatabaseError as err:
            raise HoningError(f"{self.path} is not a readable registry database ({err}); restore it from "
                              "`honing registry export` or point HONING_REGISTRY elsewhere") from None
        except OSError as err:
            raise HoningError(f"cannot open the registry {self.path}: {err.strerror or err}") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- schema

    def _migrate(self) -> None:
        with self.transaction():
            current = self.db.execute("PRAGMA user_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise HoningError(f"the registry {self.path} has schema version {current}, newer than this honing "
                                  f"knows ({SCHEMA_VERSION}); upgrade honing")
            for step in range(current, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[step]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {step + 1}")

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE), so concurrent writers queue."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ----------------------------------------------------------------- reading

    def names(self) -> list[str]:
        return [row["name"] for row in self.db.execute("SELECT name FROM models ORDER BY name")]

    def versions(self, name: str) -> list[Version]:
        self._known(name)
        rows = self.db.execute("SELECT * FROM versions WHERE name = ? ORDER BY version", (name,)).fetchall()
        aliases = self.aliases(name)
        return [_version(row, aliases) for row in rows]

    def get(self, name: str, which: int | str) -> Version:
        """Version `which` of `name`: a number, or an alias (production, candidate, your own)."""
        self._known(name)
        number = self._number(name, which)
        row = self.db.execute("SELECT * FROM versions WHERE name = ? AND version = ?", (name, number)).fetchone()
        if row is None:
            have = [str(v) for (v,) in self.db.execute("SELECT version FROM versions WHERE name = ?", (name,))]
            raise HoningError(f"{name} has no version {number}; it has {', '.join(have) or 'none'}")
        return _version(row, self.aliases(name))

    def aliases(self, name: str) -> dict[str, int]:
        return {row["alias"]: row["version"] for row in
                self.db.execute("SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", (name,))}

    def alias_target(self, name: str, alias: str) -> Version | None:
        number = self.aliases(name).get(alias) if self._exists(name) else None
        return None if number is None else self.get(name, number)

    def history(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every event, oldest first (of one name, or all)."""
        query, args = ("SELECT * FROM events WHERE name = ? ORDER BY id", (name,)) if name else (
            "SELECT * FROM events ORDER BY id", ())
        return [_event(row) for row in self.db.execute(query, args)]

    def attachments(self, name: str, version: int, kind: str | None = None) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM attachments WHERE name = ? AND version = ? ORDER BY id", (name, version))
        found = [_attachment(row) for row in rows]
        return [a for a in found if kind is None or a["kind"] == kind]

    def _exists(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone() is not None

    def _known(self, name: str) -> None:
        if not self._exists(name):
            known = self.names()
            raise HoningError(f"no model named {name!r} in the registry {self.path}; "
                              + (f"it has {', '.join(known)}" if known else "it is empty"))

    def _number(self, name: str, which: int | str) -> int:
        if isinstance(which, int) or (str(which).isascii() and str(which).isdigit()):
            return int(which)
        aliases = self.aliases(name)
        if which not in aliases:
            have = ", ".join(f"{a} (v{v})" for a, v in aliases.items()) or "none"
            raise HoningError(f"{name} has no alias {which!r}; its aliases: {have}")
        return aliases[which]

    # ----------------------------------------------------------------- writing

    def add_version(self, name: str, entry: dict[str, Any], *, actor: str | None = None, reason: str | None = None,
                    status: str = "registered", rejection: str | None = None,
                    details: dict[str, Any] | None = None, promote_over: int | None | bool = False) -> Version:
        """A new version of `name` (created if new) from a prepared entry (see actions.prepare), in one
        transaction with what follows from it: status rejected records the rejection (why, and details such
        as the gate's verdict); promote_over (the production version the gate compared with, None for none)
        moves production to the new version, refused if production has moved since."""
        actor = actor or who()
        at = now()
        with self.transaction() as db:
            if not self._exists(name):
                db.execute("INSERT INTO models (name, created, created_by) VALUES (?, ?, ?)", (name, at, actor))
            number = db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE name = ?",
                                (name,)).fetchone()[0]
            db.execute(
                "INSERT INTO versions (name, version, status, run_dir, run_id, stage, model_path, kind, weights_sha256,"
                " record, config, created, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, number, status, entry["run_dir"], entry.get("run_id"), entry.get("stage"), entry["model_path"],
                 entry["kind"], entry["weights_sha256"], json.dumps(entry["record"]), entry.get("config"), at, actor))
            self._event(db, name, number, "register", actor=actor, at=at, reason=reason,
                        details={"run_dir": entry["run_dir"], "weights_sha256": entry["weights_sha256"]})
            for attachment in entry.get("attachments", []):
                self._attach(db, name, number, attachment, at)
            if status == "rejected":
                self._event(db, name, number, "reject", actor=actor, at=at, reason=rejection, details=details)
            elif promote_over is not False:
                self._move(db, name, PRODUCTION, number, action="promote", reason=reason or "gate passed", actor=actor,
                           expect=promote_over, details=details)
        return self.get(name, number)

    def attach(self, name: str, version: int, attachment: dict[str, Any], *, actor: str | None = None) -> bool:
        """Attach an evaluation or red-team run; False when it was attached already."""
        self.get(name, version)
        with self.transaction() as db:
            added = self._attach(db, name, version, attachment, now())
            if added:
                self._event(db, name, version, "attach", actor=actor or who(), at=now(), reason=None,
                            details={"kind": attachment["kind"], "run_dir": attachment["run_dir"]})
        return added

    def move_alias(self, name: str, alias: str, version: int | None, *, action: str, reason: str | None,
                   actor: str | None = None, expect: int | None | bool = False,
                   details: dict[str, Any] | None = None) -> None:
        """Point `alias` at `version` (None: remove it) and record the move, in one transaction.

        expect: the version the alias must still point at (None: unset), so a move decided on
        stale facts (a gate run against a production that has since moved) is refused; False: any."""
        with self.transaction() as db:
            self._move(db, name, alias, version, action=action, reason=reason, actor=actor or who(), expect=expect,
                       details=details)

    def _move(self, db: sqlite3.Connection, name: str, alias: str, version: int | None, *, action: str,
              reason: str | None, actor: str, expect: int | None | bool, details: dict[str, Any] | None) -> None:
        """Inside a transaction: the checks that must hold at the moment of the move, then the move."""
        row = db.execute("SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias)).fetchone()
        before = row["version"] if row else None
        if expect is not False and before != expect:
            raise HoningError(f"{name}@{alias} moved to {_v(before)} while this {action} was deciding (it was "
                              f"{_v(expect)}); run it again")
        if version is None:
            db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
        else:
            status = db.execute("SELECT status FROM versions WHERE name = ? AND version = ?", (name, version)).fetchone()
            if status is None or status["status"] == "rejected":
                raise HoningError(f"{name} v{version} " + ("does not exist" if status is None else "was rejected")
                                  + f"; {alias} stays on {_v(before)}")
            db.execute("INSERT INTO aliases (name, alias, version) VALUES (?, ?, ?) "
                       "ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version", (name, alias, version))
        self._event(db, name, version, action, alias=alias, from_version=before, actor=actor, at=now(),
                    reason=reason, details=details)

    def set_status(self, name: str, version: int, status: str, *, action: str, reason: str | None,
                   actor: str | None = None, details: dict[str, Any] | None = None) -> None:
        """Mark a version (rejected) and record why; a rejected version loses its aliases."""
        actor = actor or who()
        with self.transaction() as db:
            on = db.execute("SELECT 1 FROM aliases WHERE name = ? AND alias = ? AND version = ?",
                            (name, PRODUCTION, version)).fetchone()
            if on is not None:
                raise HoningError(f"{name} v{version} is production: roll it back first (honing registry rollback {name})")
            db.execute("UPDATE versions SET status = ? WHERE name = ? AND version = ?", (status, name, version))
            for row in db.execute("SELECT alias FROM aliases WHERE name = ? AND version = ?", (name, version)).fetchall():
                db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, row["alias"]))
                self._event(db, name, None, "unalias", alias=row["alias"], from_version=version, actor=actor, at=now(),
                            reason=f"v{version} was rejected")
            self._event(db, name, version, action, actor=actor, at=now(), reason=reason, details=details)

    def record_event(self, name: str, version: int | None, action: str, *, reason: str | None,
                     actor: str | None = None, details: dict[str, Any] | None = None) -> None:
        with self.transaction() as db:
            self._event(db, name, version, action, actor=actor or who(), at=now(), reason=reason, details=details)

    @staticmethod
    def _event(db: sqlite3.Connection, name: str, version: int | None, action: str, *, actor: str, at: str,
               reason: str | None, alias: str | None = None, from_version: int | None = None,
               details: dict[str, Any] | None = None) -> None:
        db.execute("INSERT INTO events (name, version, action, alias, from_version, who, at, reason, details) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (name, version, action, alias, from_version, actor, at, reason,
                    json.dumps(details) if details else None))

    @staticmethod
    def _attach(db: sqlite3.Connection, name: str, version: int, attachment: dict[str, Any], at: str) -> bool:
        cursor = db.execute(
            "INSERT OR IGNORE INTO attachments (name, version, kind, run_dir, run_id, record, results, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (name, version, attachment["kind"], attachment["run_dir"], attachment.get("run_id"),
             json.dumps(attachment["record"]), json.dumps(attachment.get("results")), at))
        return cursor.rowcount > 0

    # ----------------------------------------------------------------- export / import

    def dump(self) -> dict[str, Any]:
        """Everything, as JSON-ready data (`honing registry export`)."""
        tables = {}
        for table in TABLES:
            tables[table] = [dict(row) for row in self.db.execute(f"SELECT * FROM {table} ORDER BY rowid")]
        return {"format": "honing-registry", "schema_version": self.schema_version, "exported": now(), **tables}

    def load(self, dump: dict[str, Any]) -> dict[str, int]:
        """Restore an export into an empty registry, row for row (ids and history kept). Every row is checked
        first (its table a list, its keys known columns, its JSON columns JSON), so a bad export changes nothing."""
        if dump.get("format") != "honing-registry":
            raise HoningError("not a honing registry export (no \"format\": \"honing-registry\")")
        if dump.get("schema_version") != SCHEMA_VERSION:
            raise HoningError(f"the export has schema version {dump.get('schema_version')}; this honing reads "
                              f"{SCHEMA_VERSION}")
        counts = {}
        with self.transaction() as db:
            if db.execute("SELECT COUNT(*) FROM models").fetchone()[0]:
                raise HoningError(f"the registry {self.path} is not empty; import into a new one (set HONING_REGISTRY)")
            for table in TABLES:
                columns = [row["name"] for row in db.execute(f"PRAGMA table_info({table})")]
                rows = dump.get(table) or []
                if not isinstance(rows, list):
                    raise HoningError(f"the export's {table} is not a list of rows")
                for number, row in enumerate(rows, 1):
                    _check_row(table, number, row, columns)
                    names = ", ".join(f'"{key}"' for key in row)
                    marks = ", ".join("?" for _ in row)
                    try:
                        db.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(row.values()))
                    except sqlite3.Error as err:
                        raise HoningError(f"the export's {table} row {number}: {err}") from None
                counts[table] = len(rows)
        return counts


TABLES = ("models", "versions", "attachments", "aliases", "events")
_JSON_COLUMNS = {"versions": ("record",), "attachments": ("record", "results"), "events": ("details",)}


def _check_row(table: str, number: int, row: Any, columns: list[str]) -> None:
    where = f"the export's {table} row {number}"
    if not isinstance(row, dict):
        raise HoningError(f"{where} is not an object")
    unknown = sorted(set(row) - set(columns))
    if unknown:
        raise HoningError(f"{where} has unknown column(s) {', '.join(map(repr, unknown))}; {table} has "
                          f"{', '.join(columns)}")
    for key, value in row.items():
        if value is not None and not isinstance(value, (str, int, float)):
            raise HoningError(f"{where}: {key} must be text or a number, not {type(value).__name__}")
    for key in _JSON_COLUMNS.get(table, ()):
        if row.get(key) is not None and not _is_json_text(row[key]):
            raise HoningError(f"{where}: {key} must be JSON text")


def _is_json_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def _statements(script: str) -> list[str]:
    """A migration's statements (a trigger's body keeps its inner semicolons)."""
    statements, current = [], ""
    for line in script.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


def _version(row: sqlite3.Row, aliases: dict[str, int]) -> Version:
    return Version(name=row["name"], version=row["version"], status=row["status"], run_dir=row["run_dir"],
                   run_id=row["run_id"], stage=row["stage"], model_path=row["model_path"], kind=row["kind"],
                   weights_sha256=row["weights_sha256"], record=json.loads(row["record"]), config=row["config"],
                   created=row["created"], created_by=row["created_by"],
                   aliases=sorted(a for a, v in aliases.items() if v == row["version"]))


def _event(row: sqlite3.Row) -> dict[str, Any]:
    event = dict(row)
    event["details"] = json.loads(event["details"]) if event["details"] else None
    return event


def _attachment(row: sqlite3.Row) -> dict[str, Any]:
    found = dict(row)
    found["record"] = json.loads(found["record"])
    found["results"] = json.loads(found["results"]) if found["results"] else None
    return found


def _v(version: int | None) -> str:
    return "nothing" if version is None else f"v{version}"
