"""The daemon's SQLite store: snapshots, history, pruning, concurrency, durability."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from kvmguest.daemon import store as store_mod
from kvmguest.daemon.store import Store


def test_snapshots_round_trip_and_survive_reopening(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "agent.db"
    s = Store(db)
    assert db.parent.is_dir()
    s.save_snapshot("vm1", {"state": "ONLINE", "restarts": 1, "last": {"detail": "running"}})
    s.save_snapshot("vm2", {"state": "OFFLINE"})
    s.save_snapshot("vm1", {"state": "FAULTED", "restarts": 2})  # replaces, not appends
    s.close()
    again = Store(db)
    assert again.load_snapshots() == {
        "vm1": {"state": "FAULTED", "restarts": 2},
        "vm2": {"state": "OFFLINE"},
    }
    again.close()


def test_wal_mode(tmp_path: Path) -> None:
    s = Store(tmp_path / "a.db")
    s.close()
    with sqlite3.connect(tmp_path / "a.db") as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_damaged_snapshot_is_dropped_not_fatal(tmp_path: Path) -> None:
    s = Store(tmp_path / "a.db")
    s.save_snapshot("good", {"state": "ONLINE"})
    with s._lock:
        s._db.execute("INSERT INTO resource VALUES ('bad', '{not json', 0)")
        s._db.commit()
    assert s.load_snapshots() == {"good": {"state": "ONLINE"}}
    s.close()


def test_history_is_oldest_first_limited_and_filtered(tmp_path: Path) -> None:
    s = Store(tmp_path / "a.db")
    for i in range(10):
        s.record("vm1" if i % 2 else "vm2", "decision", f"row {i}", ts=1000.0 + i)
    rows = s.history("vm1", limit=3)
    assert [r.detail for r in rows] == ["row 5", "row 7", "row 9"]
    assert all(r.resource == "vm1" for r in rows)
    assert [r.detail for r in s.history(limit=4)] == ["row 6", "row 7", "row 8", "row 9"]
    assert s.history("vm1")[0].as_dict() == {
        "ts": 1001.0, "resource": "vm1", "kind": "decision", "detail": "row 1",
    }  # fmt: skip
    assert s.history("nobody") == []
    s.close()


def test_history_is_pruned_per_resource(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "HISTORY_KEEP", 30)
    monkeypatch.setattr(store_mod, "PRUNE_EVERY", 10)
    s = Store(tmp_path / "a.db")
    for i in range(100):
        s.record("busy", "decision", f"b{i}")
    for i in range(5):
        s.record("quiet", "decision", f"q{i}")
    busy = s.history("busy", limit=1000)
    assert len(busy) == 30 and busy[-1].detail == "b99" and busy[0].detail == "b70"
    assert len(s.history("quiet", limit=1000)) == 5  # another resource's rows are kept
    s.close()


def test_pruning_a_large_history_is_fast(tmp_path: Path) -> None:
    """The prune runs on the daemon's loop: it must stay cheap however big the file is."""
    s = Store(tmp_path / "a.db")
    with s._lock:
        s._db.executemany(
            "INSERT INTO history (ts, resource, kind, detail) VALUES (?, ?, ?, ?)",
            [(0.0, f"r{i % 50}", "decision", "x" * 60) for i in range(50 * 5200)],
        )
        s._db.commit()
    t0 = time.monotonic()
    with s._lock:
        s._prune("r3")
    assert time.monotonic() - t0 < 3  # the quadratic query took 10 s; this one ~0.05 s
    assert len(s.history("r3", limit=10_000)) == store_mod.HISTORY_KEEP
    assert len(s.history("r4", limit=10_000)) == 5200
    s.close()


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    s = Store(tmp_path / "a.db")

    def write(n: int) -> None:
        for i in range(200):
            s.record(f"vm{n}", "event", str(i))
            s.save_snapshot(f"vm{n}", {"i": i})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(s.history(limit=10_000)) == 800
    assert s.load_snapshots() == {f"vm{n}": {"i": 199} for n in range(4)}
    s.close()


def test_readers_see_committed_rows_while_the_writer_is_open(tmp_path: Path) -> None:
    """Every write is its own transaction: another process (``history`` after a crash, or
    a test) reads everything written so far."""
    s = Store(tmp_path / "a.db")
    s.record("vm1", "state", "OFFLINE -> GOING ONLINE")
    with sqlite3.connect(f"file:{tmp_path / 'a.db'}?mode=ro", uri=True) as c:
        assert c.execute("SELECT detail FROM history").fetchall() == [("OFFLINE -> GOING ONLINE",)]
    s.close()
