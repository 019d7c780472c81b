"""Helpers shared by the agent-daemon benchmarks (bench/daemon_crash.py, daemon_scale.py):
the daemon as a subprocess, a guest's files, polling, percentiles, CPU and RSS of a pid."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import libvirt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.system.guests import (  # noqa: E402
    GUEST_UP,
    console_offset,
    domain_xml,
    scratch_dir,
    wait_for_console,
)
from tests.system.realenv import remove_domain  # noqa: E402

from kvmguest.daemon.control import ControlError, request  # noqa: E402

__all__ = ["GUEST_UP", "console_offset", "domain_xml", "scratch_dir", "wait_for_console"]

PYTHON = str(REPO / ".venv/bin/python")
HOST_URI = "qemu:///system"
T = TypeVar("T")

# The benches look up domains that come and go: libvirt must not print every miss.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def poll(fn: Callable[[], T | None], timeout: float, what: str, step: float = 0.002) -> T:
    """Call ``fn`` until it returns something truthy; SystemExit at the deadline."""
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() >= end:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def pct(samples: list[float], q: float) -> float:
    """The q-quantile (nearest rank, q in 0..1)."""
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


def summary(samples: list[float], unit: float = 1000.0, fmt: str = "{:7.1f}") -> str:
    """median / p99 / min / max, by default in ms."""
    if not samples:
        return "no samples"
    f = fmt.format
    return (f"median {f(pct(samples, 0.5) * unit)}  p99 {f(pct(samples, 0.99) * unit)}  "
            f"min {f(min(samples) * unit)}  max {f(max(samples) * unit)}  "
            f"(n={len(samples)})")  # fmt: skip


def qemu_pid(name: str) -> int | None:
    try:
        return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


class Libvirt:
    """One connection, reopened when libvirtd went away (other sessions may restart it)."""

    def __init__(self, uri: str = HOST_URI) -> None:
        self.uri = uri
        self.conn: Any = None

    def state(self, name: str) -> int | None:
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = libvirt.open(self.uri)
                return int(self.conn.lookupByName(name).state()[0])
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                self.conn = None
        return None

    def running(self, name: str) -> bool:
        return self.state(name) == libvirt.VIR_DOMAIN_RUNNING

    def running_with_new_pid(self, name: str, old: int) -> bool:
        pid = qemu_pid(name)
        return pid is not None and pid != old and self.running(name)


@dataclass
class GuestFiles:
    name: str
    dir: Path

    @property
    def xml(self) -> Path:
        return self.dir / f"{self.name}.xml"

    @property
    def serial(self) -> Path:
        return self.dir / f"{self.name}.serial.log"


@contextlib.contextmanager
def guest_files(name: str) -> Iterator[GuestFiles]:
    """A cooperative test guest's XML and console log; the domain is removed afterwards."""
    g = GuestFiles(name, scratch_dir("dbench-"))
    g.xml.write_text(domain_xml(name, "cooperative", serial_log=g.serial))
    try:
        yield g
    finally:
        remove_domain(name)
        shutil.rmtree(g.dir, ignore_errors=True)


class Daemon:
    """``kvmguest agent`` as a subprocess, in its own directory."""

    def __init__(self, d: Path, cfg_text: str, uri: str = HOST_URI) -> None:
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        self.uri = uri
        self.cfg = d / "main.cf"
        self.socket = d / "agent.sock"
        self.db = d / "agent.db"
        self.log = d / "agent.log"
        self.cfg.write_text(cfg_text)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> None:
        argv = [PYTHON, "-m", "kvmguest", "--system", "host1", "--connect", self.uri,
                "agent", "-c", str(self.cfg), "--socket", str(self.socket),
                "--db", str(self.db)]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        poll(self._answers, timeout, "the agent's control socket", step=0.05)

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise SystemExit(f"agent exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
        try:
            return bool(self.call("status").get("ok"))
        except ControlError:
            return False

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        final: dict[str, Any] = {}
        for msg in request(str(self.socket), cmd, timeout=120, **args):
            if "ok" in msg:
                final = msg
        return final

    def states(self) -> dict[str, str]:
        return {r["resource"]: r["state"] for r in self.call("status")["resources"]}

    def history(self, since_id: int = 0) -> list[tuple[int, float, str, str, str]]:
        """(id, ts, resource, kind, detail) rows after ``since_id``, from the database."""
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(
                "SELECT id, ts, resource, kind, detail FROM history WHERE id > ? ORDER BY id",
                (since_id,),
            ).fetchall()
        finally:
            db.close()

    def last_id(self) -> int:
        rows = self.history()
        return rows[-1][0] if rows else 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def cpu_and_rss(pid: int, window: float) -> dict[str, float]:
    """CPU (% of one core) over ``window`` seconds, RSS now and peak (MiB), threads, fds."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    deadline = t0 + window
    while time.monotonic() < deadline:  # a deliberate measurement window, not a poll
        time.sleep(min(1.0, deadline - time.monotonic()))
    c1, t1 = cpu_seconds(pid), time.monotonic()
    st = proc_status(pid)
    return {
        "cpu_percent": 100.0 * (c1 - c0) / (t1 - t0),
        "window_s": t1 - t0,
        "rss_mib": int(st["VmRSS"].split()[0]) / 1024,
        "rss_peak_mib": int(st["VmHWM"].split()[0]) / 1024,
        "threads": int(st["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }
