"""Persistence for the agent daemon: SQLite in WAL mode.

Each resource's framework state (the machine's snapshot, a JSON document) and a history of
transitions and entry-point results. Every write is its own transaction: after a SIGKILL
the file holds everything up to the last completed write and nothing half-written.

A write that fails (disk full, I/O error, database locked, read-only file system) never
reaches the caller: protecting the guests comes first. The snapshot and the rows are kept
in memory and written by :meth:`Store.flush` once the database takes writes again (the
daemon retries every few seconds); meanwhile :attr:`Store.saved` is False and
:attr:`Store.error` says why. Errors are told apart by SQLite's result code, never by text.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("kvmguest.daemon")

SCHEMA = """
CREATE TABLE IF NOT EXISTS resource (
    name TEXT PRIMARY KEY,
    snapshot TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    resource TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_resource ON history (resource, id);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
# History rows kept per resource; older ones are pruned so the file cannot grow forever.
HISTORY_KEEP = 5000
PRUNE_EVERY = 500  # a resource's history is pruned after this many new rows of its own
# Rows held in memory while the database takes no writes; the oldest go first beyond it.
BACKLOG_LIMIT = 20_000
# How long a write waits for a lock held by another process (sqlite3 "busy timeout"). The
# store is used from the event loop: a long wait would stall every resource.
BUSY_TIMEOUT = 1.0

# SQLite primary result codes (https://www.sqlite.org/rescode.html).
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26
_WHY = {
    SQLITE_BUSY: "database locked by another process",
    SQLITE_LOCKED: "database locked",
    SQLITE_READONLY: "database is read-only",
    SQLITE_IOERR: "I/O error",
    SQLITE_CORRUPT: "database is corrupt",
    SQLITE_FULL: "disk full",
    SQLITE_CANTOPEN: "cannot open the database file",
    SQLITE_NOTADB: "not a database",
}


class StoreError(Exception):
    """The database cannot be used at all (start-up): the message is one line."""


def _code(e: sqlite3.Error) -> int:
    return int(getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF


def describe(e: sqlite3.Error) -> str:
    """One line for an SQLite error, by its result code."""
    code = _code(e)
    return f"{_WHY.get(code, 'database error')} ({getattr(e, 'sqlite_errorname', '?')})"


def is_corrupt(e: sqlite3.Error) -> bool:
    return _code(e) in (SQLITE_CORRUPT, SQLITE_NOTADB)


@dataclass(frozen=True)
class HistoryRow:
    ts: float
    resource: str
    kind: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"ts": self.ts, "resource": self.resource, "kind": self.kind,
                "detail": self.detail}  # fmt: skip


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


class Store:
    """The daemon's database. ``reset_at``: set when a corrupt file was moved aside."""

    def __init__(self, path: str | Path, on_failure: Callable[[], None] | None = None) -> None:
        self.path = Path(path)
        self.on_failure = on_failure or (lambda: None)
        self.saved = True
        self.error: str | None = None
        self.reset_at: str | None = None
        self.dropped = 0  # history rows lost to the backlog limit
        # Reentrant: a write queues and flushes under it (worker threads write too).
        self._lock = threading.RLock()
        self._writes: dict[str, int] = {}
        self._snaps: dict[str, str] = {}  # unsaved snapshots, by resource
        self._rows: collections.deque[HistoryRow] = collections.deque()
        self._meta: dict[str, str | None] = {}  # unsaved meta values (None: delete)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as e:
            raise StoreError(f"database {self.path}: cannot create its directory: "
                             f"{e.strerror}") from None  # fmt: skip
        if self.path.is_dir():
            raise StoreError(f"database {self.path} is a directory")
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as e:
            if not is_corrupt(e):
                raise StoreError(f"database {self.path}: {describe(e)}") from None
            self._move_aside(e)
            try:
                self._db = self._open()
            except sqlite3.Error as e2:
                raise StoreError(f"database {self.path}: {describe(e2)}") from None
        except sqlite3.Error as e:
            raise StoreError(f"database {self.path}: {describe(e)}") from None
        if self.reset_at is None:
            self.reset_at = self.get_meta("reset_at")

    def _open(self) -> sqlite3.Connection:
        # One connection, used from the event loop and from worker threads alike.
        db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=BUSY_TIMEOUT)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            (check,) = db.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                err = sqlite3.DatabaseError(f"quick_check: {check}")
                err.sqlite_errorcode = SQLITE_CORRUPT
                err.sqlite_errorname = "SQLITE_CORRUPT"
                raise err
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, e: sqlite3.Error) -> None:
        """A corrupt database: keep it for a post-mortem under a timestamped name and start
        afresh. The state in it is lost (the daemon then starts every group frozen)."""
        now = time.time()
        stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    os.replace(src, f"{aside}{suffix}")
        except OSError as oe:
            raise StoreError(f"database {self.path} is corrupt ({describe(e)}) and cannot be "
                             f"moved aside: {oe.strerror}") from None  # fmt: skip
        self.reset_at = iso(now)
        self._meta["reset_at"] = self.reset_at
        log.error("database %s is corrupt (%s): moved aside to %s; state lost, starting afresh "
                  "with every group frozen", self.path, describe(e), aside)  # fmt: skip

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()

    # --- writes: never raise ------------------------------------------------------------

    def _failed(self, e: sqlite3.Error) -> None:
        self.on_failure()
        why = describe(e)
        if self.saved:  # once per episode, at error level
            log.error("cannot save state to %s: %s; monitoring and recovery go on, saving is "
                      "retried", self.path, why)  # fmt: skip
        self.saved = False
        self.error = why

    def _write_all(self) -> None:
        """Write what is pending in one transaction: snapshots before rows (a history row
        on disk always has its resource's state on disk)."""
        with self._lock:
            try:
                db = self._db
                for key, value in self._meta.items():
                    if value is None:
                        db.execute("DELETE FROM meta WHERE key = ?", (key,))
                    else:
                        db.execute(
                            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
                            "DO UPDATE SET value = excluded.value", (key, value),
                        )  # fmt: skip
                now = time.time()
                db.executemany(
                    "INSERT INTO resource (name, snapshot, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET snapshot = excluded.snapshot, "
                    "updated = excluded.updated",
                    [(name, data, now) for name, data in self._snaps.items()],
                )
                db.executemany(
                    "INSERT INTO history (ts, resource, kind, detail) VALUES (?, ?, ?, ?)",
                    [(r.ts, r.resource, r.kind, r.detail) for r in self._rows],
                )
                db.commit()
            except sqlite3.Error:
                # Nothing of the transaction stays: it is all still pending.
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
                raise
            prune = []
            for r in self._rows:
                n = self._writes[r.resource] = self._writes.get(r.resource, 0) + 1
                if n % PRUNE_EVERY == 0:
                    prune.append(r.resource)
            self._snaps.clear()
            self._rows.clear()
            self._meta.clear()
            for resource in prune:
                self._prune(resource)

    def flush(self) -> bool:
        """Write what is pending; True when everything is saved."""
        with self._lock:
            return self._flush()

    def _flush(self) -> bool:
        if not (self._snaps or self._rows or self._meta):
            return True
        try:
            self._write_all()
        except sqlite3.Error as e:
            self._failed(e)
            return False
        if not self.saved:
            lost = f" ({self.dropped} history rows were lost)" if self.dropped else ""
            log.warning("state saved to %s again%s", self.path, lost)
        self.saved, self.error = True, None
        return True

    def _write(self) -> None:
        # While failing, writes wait for the retry (flush): each attempt may block on a
        # lock for BUSY_TIMEOUT, and the loop must not pay that for every row.
        if self.saved:
            self._flush()

    def save_snapshot(self, name: str, snapshot: dict[str, Any]) -> None:
        data = json.dumps(snapshot, sort_keys=True)
        with self._lock:
            self._snaps[name] = data
            self._write()

    def record(self, resource: str, kind: str, detail: str, ts: float | None = None) -> None:
        row = HistoryRow(ts if ts is not None else time.time(), resource, kind, detail)
        with self._lock:
            if len(self._rows) >= BACKLOG_LIMIT:
                self._rows.popleft()
                self.dropped += 1
            self._rows.append(row)
            self._write()

    def set_meta(self, key: str, value: str | None) -> None:
        with self._lock:
            self._meta[key] = value
            if key == "reset_at":
                self.reset_at = value
            self._write()

    def _prune(self, resource: str) -> None:
        # One resource at a time, through the (resource, id) index: the older query counted
        # the newer rows of every row (quadratic; 10 s for 120,000 rows, on the loop).
        try:
            self._db.execute(
                "DELETE FROM history WHERE resource = ? AND id <= (SELECT id FROM history "
                "WHERE resource = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (resource, resource, HISTORY_KEEP),
            )
            self._db.commit()
        except sqlite3.Error:
            self._db.rollback()  # pruning waits for the next time

    # --- reads ---------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        if key in self._meta:
            return self._meta[key]
        try:
            with self._lock:
                row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error:
            return None
        return str(row[0]) if row else None

    def load_snapshots(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT name, snapshot FROM resource").fetchall()
        out: dict[str, dict[str, Any]] = {}
        for name, snap in rows:
            try:
                out[name] = json.loads(snap)
            except ValueError:
                continue  # a damaged row is dropped: the daemon probes anyway
        return out

    def history(self, resource: str | None = None, limit: int = 100) -> list[HistoryRow]:
        """The last ``limit`` rows, the unsaved ones included."""
        rows: list[Any] = []
        with self._lock:
            pending = [r for r in self._rows if resource is None or r.resource == resource]
        try:
            with self._lock:
                if resource is None:
                    rows = self._db.execute(
                        "SELECT ts, resource, kind, detail FROM history ORDER BY id DESC "
                        "LIMIT ?", (limit,),
                    ).fetchall()  # fmt: skip
                else:
                    rows = self._db.execute(
                        "SELECT ts, resource, kind, detail FROM history WHERE resource = ? "
                        "ORDER BY id DESC LIMIT ?",
                        (resource, limit),
                    ).fetchall()
        except sqlite3.Error:
            rows = []  # unreadable now: the unsaved rows are all there is
        saved = [HistoryRow(*r) for r in reversed(rows)]
        return (saved + pending)[-limit:] if limit > 0 else []
