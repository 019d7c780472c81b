"""Persistence for the agent daemon: SQLite in WAL mode.

Each resource's framework state (the machine's snapshot, a JSON document) and a history of
transitions and entry-point results. Every write is its own transaction: after a SIGKILL
the file holds everything up to the last completed write and nothing half-written.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
"""
# History rows kept per resource; older ones are pruned so the file cannot grow forever.
HISTORY_KEEP = 5000
PRUNE_EVERY = 500  # a resource's history is pruned after this many new rows of its own


@dataclass(frozen=True)
class HistoryRow:
    ts: float
    resource: str
    kind: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"ts": self.ts, "resource": self.resource, "kind": self.kind,
                "detail": self.detail}  # fmt: skip


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        # One connection, used from the event loop and from worker threads alike.
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=10)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._db.commit()
        self._writes: dict[str, int] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

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

    def save_snapshot(self, name: str, snapshot: dict[str, Any]) -> None:
        data = json.dumps(snapshot, sort_keys=True)
        with self._lock:
            self._db.execute(
                "INSERT INTO resource (name, snapshot, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET snapshot = excluded.snapshot, "
                "updated = excluded.updated",
                (name, data, time.time()),
            )
            self._db.commit()

    def record(self, resource: str, kind: str, detail: str, ts: float | None = None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO history (ts, resource, kind, detail) VALUES (?, ?, ?, ?)",
                (ts if ts is not None else time.time(), resource, kind, detail),
            )
            self._db.commit()
            n = self._writes[resource] = self._writes.get(resource, 0) + 1
            if n % PRUNE_EVERY == 0:
                self._prune(resource)

    def _prune(self, resource: str) -> None:
        # One resource at a time, through the (resource, id) index: the older query counted
        # the newer rows of every row (quadratic; 10 s for 120,000 rows, on the loop).
        self._db.execute(
            "DELETE FROM history WHERE resource = ? AND id <= (SELECT id FROM history "
            "WHERE resource = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (resource, resource, HISTORY_KEEP),
        )
        self._db.commit()

    def history(self, resource: str | None = None, limit: int = 100) -> list[HistoryRow]:
        with self._lock:
            if resource is None:
                rows = self._db.execute(
                    "SELECT ts, resource, kind, detail FROM history ORDER BY id DESC LIMIT ?",
                    (limit,),
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT ts, resource, kind, detail FROM history WHERE resource = ? "
                    "ORDER BY id DESC LIMIT ?",
                    (resource, limit),
                ).fetchall()
        return [HistoryRow(*r) for r in reversed(rows)]
