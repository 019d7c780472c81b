"""Fault injection against the daemon protecting a real TCG guest on the real libvirtd.

During each fault (but the last), a ``kill -9`` of the guest's QEMU must be detected, and
recovered during the fault where the managed system allows it, within 30 s after the fault
ends otherwise; the daemon never stays alive without monitoring. Shortened statics
(MonitorInterval 2, MonitorTimeout 3) keep the suite within minutes; FaultOnMonitorTimeouts
keeps its default (4). Run under ``flock /tmp/kvmguest-system.lock``: fault 3 and 4 stop
the host's libvirtd.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import libvirt

from ..daemon.conftest import REPO, Agent, Guest, Rig, main_cf, qemu_processes
from ..daemon.test_agent_robust import MALFORMED
from ..system.guests import HOST2_MIGRATE_URI, HOST2_URI
from ..system.realenv import reachable, remove_domain, require
from ..system.waiting import wait_until
from .conftest import Row

pytestmark = pytest.mark.system

SHORT = {"MonitorInterval": 2, "OfflineMonitorInterval": 5, "MonitorTimeout": 3}
RECOVERY_AFTER_FAULT = 30.0  # seconds, once the fault ends, where it blocked recovery
LIBVIRTD = str(REPO / "scripts/libvirtd.sh")


# --- helpers ---------------------------------------------------------------------------


def _history(a: Agent, res: str, limit: int = 200) -> list[dict[str, Any]]:
    """From the daemon (unsaved rows included: the database may be failing)."""
    rows = a.call("history", resource=res, limit=limit, timeout=10)["history"]
    return list(rows)


def kill_qemu(a: Agent, g: Guest) -> tuple[int, float, float]:
    """kill -9 the guest's QEMU; returns (pid, kill time, detection in ms from the daemon's
    own history row)."""
    pid = g.pid()
    assert pid is not None
    killed = time.time()
    os.kill(pid, signal.SIGKILL)
    want = f"process {pid} exited"
    row = wait_until(
        lambda: next((h for h in _history(a, g.res) if want in h["detail"]), None),
        lambda h: h is not None, 30, f"the daemon saw QEMU {pid} exit",
    )  # fmt: skip
    assert row is not None
    return pid, killed, (float(row["ts"]) - killed) * 1000


def wait_recovered(a: Agent, g: Guest, old: int, timeout: float) -> float:
    """The guest runs again in a new QEMU and the daemon says ONLINE; returns when, by the
    daemon's own history row (the test's polling may be slowed by the fault itself)."""
    since = time.time()

    def ok() -> bool:
        pid = g.pid()
        return bool(g.running() and pid not in (None, old) and a.state(g.res) == "ONLINE")

    try:
        wait_until(ok, bool, timeout, f"{g.res} restarted and ONLINE")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{a.history_text(g.res)}") from None
    assert len(qemu_processes(g.name)) == 1  # never twice
    rows = [h for h in _history(a, g.res) if h["kind"] == "state"
            and h["detail"].endswith("-> ONLINE")]  # fmt: skip
    assert rows and float(rows[-1]["ts"]) >= since - timeout, rows
    return float(rows[-1]["ts"])


def assert_protecting(a: Agent, g: Guest) -> None:
    """Alive and monitoring: a monitor answered after this call."""
    assert a.running(), a.log_tail()
    t0 = time.time()
    wait_until(lambda: a.status(g.res)["last_monitor"] or 0, lambda t: t > t0, 30,
               "a monitor after the fault")  # fmt: skip


def protected(rig: Rig, *, metrics: bool = False) -> tuple[Agent, Guest]:
    g = rig.guest(RestartLimit=1, **SHORT)
    a = rig.agent([("g", [g], [], True)], metrics=metrics)
    a.start()
    a.wait_state(g.res, "ONLINE", timeout=120)
    g.wait_up()
    return a, g


def _start_with_db(a: Agent, db: Path) -> None:
    """Start ``a`` (later) with its database at ``db``."""
    argv = a.argv()
    i = argv.index("--db")
    argv[i + 1] = str(db)
    a.argv = lambda *extra: [*argv, *extra]  # type: ignore[method-assign]


def libvirtd_pid() -> int:
    """The host's libvirtd (not the second host's: that one has its own mount namespace)."""
    mine = os.readlink("/proc/self/ns/mnt")
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if (p / "comm").read_text().strip() == "libvirtd" and os.readlink(p / "ns/mnt") == mine:
                return int(p.name)
        except OSError:
            continue
    raise AssertionError("the host's libvirtd is not running")


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount points this test makes; unmounted (lazily, the daemon may hold files) after."""
    mounts: list[Path] = []
    try:
        yield mounts
    finally:
        for m in reversed(mounts):
            subprocess.run(["chattr", "-R", "-i", str(m)], capture_output=True, check=False)
            subprocess.run(["umount", "-l", str(m)], capture_output=True, check=False)


# --- 1, 2: the database ------------------------------------------------------------------


def test_1_database_disk_full_then_freed(rig: Rig, table: list[Row], mounted: list[Path]
                                          ) -> None:  # fmt: skip
    fs = rig.dir / "dbfs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(fs)], check=True)
    mounted.append(fs)
    db = fs / "agent.db"
    g = rig.guest(RestartLimit=1, **SHORT)
    a = rig.agent([("g", [g], [], True)])
    _start_with_db(a, db)
    a.start()
    a.wait_state(g.res, "ONLINE", timeout=120)
    g.wait_up()
    # Empty the WAL (it would be rewritten in place), then fill the file system.
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with (fs / "filler").open("wb") as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    pid, _killed, detected = kill_qemu(a, g)
    recovered_at = wait_recovered(a, g, pid, 60)
    st = a.call("status")
    assert st["state_saved"] is False and "disk full" in (st["state_error"] or ""), st
    assert "NOT being saved" in a.cli("status").stdout
    freed = time.time()
    (fs / "filler").unlink()
    wait_until(lambda: a.call("status")["state_saved"], bool, 30, "state saved again")
    # The snapshot caught up: what is on disk is what the daemon says.
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        (snap,) = c.execute("SELECT snapshot FROM resource WHERE name = ?", (g.res,)).fetchone()
    assert json.loads(snap)["state"] == "ONLINE" and json.loads(snap)["restarts"] == 1
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        rows = [r[0] for r in c.execute("SELECT detail FROM history WHERE resource = ?",
                                        (g.res,))]  # fmt: skip
    assert any(f"{pid} exited" in d for d in rows)  # the rows written during the fault too
    assert_protecting(a, g)
    log = a.log_tail(100_000)
    assert log.count("cannot save state") == 1 and "Traceback" not in log
    table.append(Row("1 db file system full, then freed", detected,
                     recovered_at - _killed,
                     f"recovered during the fault; saved again {time.time() - freed:.1f} s "
                     "after freeing"))  # fmt: skip


def test_2_database_read_only_then_writable(rig: Rig, table: list[Row], mounted: list[Path]
                                             ) -> None:  # fmt: skip
    """An ext4 file system whose database files turn immutable: every write fails with
    EPERM, as on a read-only file system (a real remount read-only is refused while the
    daemon holds the file open for writing)."""
    img = rig.dir / "db.img"
    with img.open("wb") as f:
        f.truncate(32 << 20)
    r = subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], capture_output=True, text=True)
    require(None if r.returncode == 0 else f"mkfs.ext4: {r.stderr.strip()}")
    fs = rig.dir / "dbext4"
    fs.mkdir()
    r = subprocess.run(["mount", "-o", "loop", str(img), str(fs)], capture_output=True, text=True)
    require(None if r.returncode == 0 else f"cannot loop-mount an ext4 image: {r.stderr}")
    mounted.append(fs)
    db = fs / "agent.db"
    g = rig.guest(RestartLimit=1, **SHORT)
    a = rig.agent([("g", [g], [], True)])
    _start_with_db(a, db)
    a.start()
    a.wait_state(g.res, "ONLINE", timeout=120)
    g.wait_up()
    files = [str(db), f"{db}-wal"]  # not -shm: it is mapped, and a mapping would SIGBUS
    subprocess.run(["chattr", "+i", *files], check=True)
    try:
        pid, killed, detected = kill_qemu(a, g)
        recovered_at = wait_recovered(a, g, pid, 60)
        st = a.call("status")
        assert st["state_saved"] is False and st["state_error"], st
    finally:
        subprocess.run(["chattr", "-i", *files], check=True)
    writable = time.time()
    wait_until(lambda: a.call("status")["state_saved"], bool, 30, "state saved again")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        (snap,) = c.execute("SELECT snapshot FROM resource WHERE name = ?", (g.res,)).fetchone()
    assert json.loads(snap)["state"] == "ONLINE"
    assert_protecting(a, g)
    assert "Traceback" not in a.log_tail(100_000)
    table.append(Row("2 db read-only (EPERM), then writable", detected,
                     recovered_at - killed,
                     f"recovered during the fault; saved again {time.time() - writable:.1f} s "
                     "after"))  # fmt: skip


# --- 3, 4: libvirtd ----------------------------------------------------------------------


def test_3_libvirtd_stopped_past_fault_on_monitor_timeouts(rig: Rig, table: list[Row]) -> None:
    a, g = protected(rig)
    pid = g.pid()
    lv = libvirtd_pid()
    os.kill(lv, signal.SIGSTOP)
    try:
        st = wait_until(lambda: a.status(g.res), lambda s: s["state"] == "ONLINE|ADMIN_WAIT",
                        120, "ADMIN_WAIT after FaultOnMonitorTimeouts")  # fmt: skip
        assert "the managed system hangs" in st["admin_wait"], st
        assert any("the managed system hangs" in h["detail"] for h in _history(a, g.res))
        assert any(h["kind"] == "monitor" and "alive" in h["detail"] for h in _history(a, g.res))
        assert g.pid() == pid and pid in qemu_processes(g.name)  # never cleaned
        assert not [h for h in _history(a, g.res) if h["kind"] == "clean"]
    finally:
        os.kill(lv, signal.SIGCONT)
    assert "waits for the operator" in a.cli("status").stdout
    assert "ADMIN_WAIT" in a.log_tail(100_000)
    # The operator decides: clear brings it back to ONLINE, nothing restarted.
    wait_until(lambda: (a.cli("resource", "clear", g.res), a.state(g.res))[1],
               lambda s: s == "ONLINE", 60, "ONLINE after resource clear")  # fmt: skip
    assert g.pid() == pid

    # Again, with the guest killed while libvirtd is stopped.
    lv = libvirtd_pid()
    os.kill(lv, signal.SIGSTOP)
    try:
        pid, killed, detected = kill_qemu(a, g)
        wait_until(lambda: [h for h in _history(a, g.res)
                            if h["kind"] == "monitor" and h["ts"] > killed],
                   bool, 60, "a monitor timeout after the kill")  # fmt: skip
    finally:
        os.kill(lv, signal.SIGCONT)
    ended = time.time()
    recovered_at = wait_recovered(a, g, pid, RECOVERY_AFTER_FAULT)
    assert_protecting(a, g)
    table.append(Row("3 libvirtd SIGSTOPped (x2)", detected, recovered_at - ended,
                     "ADMIN_WAIT with the guest alive, clear -> ONLINE; killed guest "
                     "recovered after SIGCONT"))  # fmt: skip


def test_4_libvirtd_restarts(rig: Rig, table: list[Row]) -> None:
    a, g = protected(rig)
    try:
        subprocess.run([LIBVIRTD, "stop"], check=True, capture_output=True, timeout=60)
        a.wait_state(g.res, "UNKNOWN", timeout=30)
        pid, _killed, detected = kill_qemu(a, g)
        # A refused connection answers UNKNOWN at once: it is not a monitor timeout.
        t0 = time.time()
        wait_until(lambda: a.status(g.res)["last_monitor"] or 0, lambda t: t > t0, 30,
                   "a monitor while libvirtd is down")  # fmt: skip
        assert a.status(g.res)["counters"]["CurrentMonitorTimeoutCount"] == 0
    finally:
        subprocess.run([LIBVIRTD, "start"], check=True, capture_output=True, timeout=120)
    ended = time.time()
    recovered_at = wait_recovered(a, g, pid, RECOVERY_AFTER_FAULT)
    assert_protecting(a, g)
    table.append(Row("4 libvirtd restarted", detected, recovered_at - ended,
                     "UNKNOWN while down; recovered after libvirtd started"))  # fmt: skip


# --- 5, 6: clients -----------------------------------------------------------------------


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))


def test_5_idle_control_connections_and_malformed_requests(rig: Rig, table: list[Row]) -> None:
    _raise_nofile()
    a, g = protected(rig)
    idle: list[socket.socket] = []
    try:
        for _ in range(1000):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(a.socket))
            idle.append(s)
        for line in MALFORMED * 5:
            reply = _ask_raw(a.socket, line)
            assert reply, f"no answer to {line[:60]!r}"
        pid, killed, detected = kill_qemu(a, g)
        recovered_at = wait_recovered(a, g, pid, 60)
    finally:
        for s in idle:
            s.close()
    assert_protecting(a, g)
    log = a.log_tail(200_000)
    assert "Traceback" not in log
    table.append(Row("5 1000 idle control clients + malformed", detected,
                     recovered_at - killed, "recovered during the fault; every request "
                     "answered"))  # fmt: skip


def _ask_raw(path: Path, line: bytes) -> bytes:
    """One raw request line; connect() waits while the accept queue is full (as the CLI's
    client does). A "busy" answer counts: it is an answer."""
    deadline = time.monotonic() + 30
    while True:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            try:
                s.connect(str(path))
            except BlockingIOError:
                assert time.monotonic() < deadline, "accept queue full for 30 s"
                time.sleep(0.05)
                continue
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(line + b"\n")  # a "busy" answer may come before we write
            return s.makefile("rb").readline()


def test_6_idle_metrics_connections(rig: Rig, table: list[Row]) -> None:
    _raise_nofile()
    a, g = protected(rig, metrics=True)
    assert a.metrics_port is not None
    threads_before = _threads(a)

    async def hold() -> tuple[float, float, int, int]:
        conns = [await asyncio.open_connection("127.0.0.1", a.metrics_port) for _ in range(2000)]
        threads = _threads(a)
        pid, killed, detected = await asyncio.to_thread(kill_qemu, a, g)
        recovered_at = await asyncio.to_thread(wait_recovered, a, g, pid, 60)
        for _, w in conns:
            w.close()
        return detected, recovered_at - killed, threads, pid

    detected, recovered, threads, _pid = asyncio.run(hold())
    assert threads - threads_before < 10, (threads_before, threads)
    assert_protecting(a, g)
    table.append(Row("6 2000 idle metrics clients", detected, recovered,
                     f"recovered during the fault; daemon threads {threads_before} -> "
                     f"{threads}"))  # fmt: skip


def _threads(a: Agent) -> int:
    assert a.proc is not None
    return len(os.listdir(f"/proc/{a.proc.pid}/task"))


# --- 7: a guest whose shutdown never completes -------------------------------------------


def test_7_shutdown_never_completes(rig: Rig, table: list[Row]) -> None:
    ineffective = rig.guest("stubborn", RestartLimit=1, DelayAfterGuestOffline=5,
                            OfflineTimeout=60, **SHORT)  # fmt: skip
    hung = rig.guest("stubborn", DelayAfterGuestOffline=30, OfflineTimeout=5, **SHORT)
    a = rig.agent([("g1", [ineffective], [], True), ("g2", [hung], [], True)])
    a.start()
    for g in (ineffective, hung):
        a.wait_state(g.res, "ONLINE", timeout=120)
        g.wait_up()
    pid, killed, detected = kill_qemu(a, ineffective)
    recovered_at = wait_recovered(a, ineffective, pid, 60)
    t0 = time.time()
    for group, g in (("g1", ineffective), ("g2", hung)):
        r = a.cli("group", "offline", group)
        assert r.returncode == 0, r.stdout + r.stderr
        assert a.state(g.res) == "OFFLINE" and not g.running()
    rows1 = [h["detail"] for h in _history(a, ineffective.res)]
    rows2 = [h["detail"] for h in _history(a, hung.res)]
    assert any("offline failed" in d and "(clean reason 1)" in d for d in rows1), rows1
    assert any("offline hung" in d and "(clean reason 0)" in d for d in rows2), rows2
    assert any(d.startswith("timed out: ") for d in rows2), rows2  # how offline ended
    assert_protecting(a, ineffective)
    table.append(Row("7 shutdown never completes", detected, recovered_at - killed,
                     f"reason 1 (DelayAfterGuestOffline 5 < OfflineTimeout 60) and reason 0 "
                     f"(OfflineTimeout 5 < 30): both off in {time.time() - t0:.0f} s"))  # fmt: skip


# --- 8: the daemon SIGKILLed in the middle of each action --------------------------------


def _kill_daemon_at(a: Agent, res: str, pred: Any, what: str) -> None:
    a.wait_history(res, pred, 120, what)
    a.kill()


def test_8_daemon_killed_during_each_action(rig: Rig, table: list[Row]) -> None:
    require(None if reachable(HOST2_URI) else f"second libvirt host not reachable at {HOST2_URI}")
    g = rig.guest(RestartLimit=1, **SHORT)
    host2 = (f'system host2 ( LibvirtURI = "{HOST2_URI}"\n'
             f'    MigrateDataURI = "{HOST2_MIGRATE_URI}" )\n')  # fmt: skip
    text = main_cf([("g", [g], [], False)])
    text = text.replace("system host1 ( )\n", "system host1 ( )\n" + host2)
    text = text.replace("SystemList = { host1 = 0 }", "SystemList = { host1 = 0, host2 = 1 }")
    a = rig.agent(text=text)
    notes = []
    worst = 0.0
    try:
        # online: killed once the request is durable, before the guest runs.
        a.start()
        a.wait_state(g.res, "OFFLINE")
        subprocess.Popen(a.cli_argv("group", "online", "g"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)  # fmt: skip
        _kill_daemon_at(a, g.res, lambda h: h["kind"] == "request", "online requested")
        t0 = time.time()
        a.start()
        a.wait_state(g.res, "ONLINE", timeout=120)
        worst = max(worst, time.time() - t0)
        g.wait_up()
        assert len(qemu_processes(g.name)) == 1 and g.boots() == 1
        notes.append("online resumed")

        # clean: a QEMU killed, the daemon killed as it cleans (or restarts) it.
        pid = g.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        _kill_daemon_at(a, g.res, lambda h: "-> CLEANING" in h["detail"], "cleaning")
        t0 = time.time()
        a.start()
        a.wait_state(g.res, "ONLINE", timeout=120)
        worst = max(worst, time.time() - t0)
        assert len(qemu_processes(g.name)) == 1
        assert a.status(g.res)["counters"]["RestartCount"] == 1  # not lost
        notes.append("clean: restart completed")

        # migrate: killed once the migration is under way.
        subprocess.Popen(a.cli_argv("group", "switch", "g", "--to", "host2"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        _kill_daemon_at(a, g.res, lambda h: "-> MIGRATING" in h["detail"], "migrating")
        t0 = time.time()
        a.start()
        st = wait_until(lambda: a.state(g.res), lambda s: s not in ("PROBING", "UNKNOWN"), 120,
                        "settled after the migrate")  # fmt: skip
        worst = max(worst, time.time() - t0)
        here = g.running()
        there = _running_on(HOST2_URI, g.name)
        assert here != there, (here, there)  # exactly one copy runs
        assert (st == "ONLINE") == here, (st, here)
        notes.append(f"migrate: {'stayed here' if here else 'on host2'}")
        if there:
            remove_domain(g.name, HOST2_URI)
            a.call("resource", op="probe", resource=g.res)
            a.wait_state(g.res, ("OFFLINE", "INTENTIONAL OFFLINE"))
            r = a.cli("resource", "online", g.res)
            assert r.returncode == 0, r.stderr
            a.wait_state(g.res, "ONLINE", timeout=120)

        # offline: killed once the offline is under way; the guest goes down meanwhile.
        subprocess.Popen(a.cli_argv("group", "offline", "g"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)  # fmt: skip
        _kill_daemon_at(a, g.res, lambda h: "-> GOING OFFLINE" in h["detail"], "going offline")
        t0 = time.time()
        a.start()
        st = wait_until(lambda: a.state(g.res), lambda s: s in ("ONLINE", "OFFLINE"), 120,
                        "settled after the offline")  # fmt: skip
        worst = max(worst, time.time() - t0)
        assert (st == "ONLINE") == g.running(), st  # the daemon says what is true
        assert len(qemu_processes(g.name)) <= 1
        notes.append(f"offline: {st}" + (" (not resumed, by design)" if st == "ONLINE" else ""))
    finally:
        remove_domain(g.name, HOST2_URI)
    table.append(
        Row(
            "8 daemon SIGKILLed in online/clean/migrate/offline",
            None,
            worst,
            "; ".join(notes) + "; never two QEMUs (recovered = restart to settled)",
        )
    )


def _running_on(uri: str, name: str) -> bool:
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return False
    try:
        return bool(conn.lookupByName(name).state()[0] == libvirt.VIR_DOMAIN_RUNNING)
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()
