"""The store when the database fails under it: nothing raises to the caller, the failure
is reported (saved / error) and logged once, and everything catches up once writes work
again. Real failures: a lock held by another connection, a full tmpfs, a corrupt file."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmguest.daemon.store import Store, StoreError


def _rows(path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [(r[0], r[1]) for r in db.execute("SELECT kind, detail FROM history ORDER BY id")]
    finally:
        db.close()


def test_a_locked_database_delays_writes_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[int] = []
    s = Store(tmp_path / "a.db", on_failure=lambda: failures.append(1))
    s.record("vm1", "state", "before")
    other = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    with caplog.at_level(logging.ERROR, "kvmguest.daemon"):
        s.save_snapshot("vm1", {"state": "CLEANING"})
        s.record("vm1", "state", "ONLINE -> CLEANING")
        s.record("vm1", "clean", "succeeded")
    assert s.saved is False and s.error is not None and "locked" in s.error
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1  # once
    assert failures  # the metric
    # Unsaved rows are still served to `history`.
    assert [r.detail for r in s.history("vm1")] == ["before", "ONLINE -> CLEANING", "succeeded"]
    assert s.flush() is False  # still locked
    other.execute("ROLLBACK")
    other.close()
    assert s.flush() is True and s.saved and s.error is None
    assert _rows(tmp_path / "a.db") == [
        ("state", "before"), ("state", "ONLINE -> CLEANING"), ("clean", "succeeded")
    ]  # fmt: skip
    assert Store(tmp_path / "a.db").load_snapshots()["vm1"] == {"state": "CLEANING"}


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of our own (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_then_freed_catches_up(small_fs: Path) -> None:
    s = Store(small_fs / "a.db")
    s.save_snapshot("vm1", {"n": 0})
    filler = small_fs / "filler"
    with filler.open("wb") as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    for n in range(200):  # enough to need new pages
        s.record("vm1", "event", "x" * 500 + str(n))
        s.save_snapshot("vm1", {"n": n})
    assert s.saved is False and s.error is not None and "disk full" in s.error
    filler.unlink()
    assert s.flush() is True
    s.close()
    again = Store(small_fs / "a.db")
    assert again.load_snapshots()["vm1"] == {"n": 199}
    assert len(again.history("vm1", 1000)) == 200
    again.close()


def test_a_corrupt_database_is_moved_aside_with_a_timestamp(tmp_path: Path) -> None:
    (tmp_path / "a.db").write_bytes(b"garbage" * 1000)
    s = Store(tmp_path / "a.db")
    assert s.reset_at is not None
    aside = list(tmp_path.glob("a.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"garbage")
    s.record("vm1", "state", "fresh")
    s.close()
    again = Store(tmp_path / "a.db")  # the notice stays until the operator clears it
    assert again.reset_at == s.reset_at
    again.set_meta("reset_at", None)
    again.close()
    assert Store(tmp_path / "a.db").reset_at is None


def test_a_directory_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "a.db").mkdir()
    with pytest.raises(StoreError, match=r"a\.db is a directory"):
        Store(tmp_path / "a.db")
