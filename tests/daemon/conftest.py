"""The agent daemon (``kvmguest agent``) as a subprocess, on the real libvirtd with real QEMU
(TCG) guests. ``scripts/ci-env.sh`` starts what these tests need.

Without the real components the system tests skip, unless KVMGUEST_REQUIRE_SYSTEM=1 (CI sets
it): then a missing component is a failure, never a silent skip. The unit tests of this
directory (store, control, metrics, events) need none of it.

Every wait polls a condition under a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import libvirt
from kvmguest.daemon.control import ControlError, request

from ..system.guests import (
    GUEST_UP,
    HOST_URI,
    Variant,
    domain_xml,
    scratch_dir,
    wait_for_console,
)
from ..system.realenv import remove_domain, require_real_libvirt
from ..system.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv/bin/python")
_seq = itertools.count()

# Short intervals so that the periodic monitors (the safety net behind the events) come
# round quickly in tests; the events themselves act at once whatever the interval.
FAST = {"MonitorInterval": 5, "OfflineMonitorInterval": 10}


def poll_fast(probe: Callable[[], bool], timeout: float, what: str) -> None:
    """wait_until with a 1 ms period, for catching the daemon at a precise moment."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        time.sleep(0.001)


@pytest.fixture(scope="session")
def real_libvirt() -> None:
    require_real_libvirt()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def qemu_processes(guest: str) -> list[int]:
    """Pids of the QEMU processes running domain GUEST (from their command lines)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and f"guest={guest}".encode() in b",".join(argv):
            pids.append(int(proc.name))
    return pids


@dataclass
class Guest:
    """A real TCG guest that the daemon manages: its XML file and serial log."""

    res: str
    name: str
    dir: Path
    variant: Variant = "cooperative"
    attrs: dict[str, object] = field(default_factory=dict)

    @property
    def serial(self) -> Path:
        return self.dir / f"{self.name}.serial.log"

    @property
    def xml(self) -> Path:
        return self.dir / f"{self.name}.xml"

    def write(self) -> None:
        self.xml.write_text(domain_xml(self.name, self.variant, serial_log=self.serial))

    def block(self) -> str:
        attrs: dict[str, object] = {
            "GuestName": self.name,
            "GuestConfigFilePath": f'"{self.xml}"',
            "DelayAfterGuestOnline": 30,
            "DelayAfterGuestOffline": 30,
            **FAST,
            **self.attrs,
        }
        body = "\n".join(f"        {k} = {v}" for k, v in attrs.items())
        return f"    KVMGuest {self.res} (\n{body}\n        )\n"

    def domain(self) -> Any:
        return libvirt.open(HOST_URI).lookupByName(self.name)

    def state(self) -> tuple[int, int]:
        """(state, reason) from libvirt; (-1, -1) when not defined."""
        try:
            s = self.domain().state()
            return int(s[0]), int(s[1])
        except libvirt.libvirtError:
            return -1, -1

    def running(self) -> bool:
        return self.state()[0] == libvirt.VIR_DOMAIN_RUNNING

    def pid(self) -> int | None:
        try:
            return int(Path(f"/run/libvirt/qemu/{self.name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def boots(self) -> int:
        """How many times the guest booted (the init prints its variant once per boot)."""
        try:
            return self.serial.read_bytes().count(b"KVMGUEST-VARIANT")
        except FileNotFoundError:
            return 0

    def wait_up(self, timeout: float = 120, offset: int = 0) -> None:
        wait_for_console(self.serial, GUEST_UP, timeout, offset=offset)


def main_cf(
    groups: Iterable[tuple[str, list[Guest], list[tuple[str, str]], bool]],
) -> str:
    """main.cf for system host1: (group, guests, requires links, autostart) per group."""
    out = ["cluster c ( )", "system host1 ( )"]
    for name, guests, links, autostart in groups:
        auto = "\n    AutoStartList = { host1 }" if autostart else ""
        out.append(f"group {name} (\n    SystemList = {{ host1 = 0 }}{auto}\n    )")
        out.extend(g.block() for g in guests)
        out.extend(f"    {parent} requires {child}" for parent, child in links)
    return "\n".join(out) + "\n"


@dataclass
class Agent:
    """One ``kvmguest agent`` subprocess: start, stop, talk to it."""

    dir: Path
    uri: str = HOST_URI
    metrics_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def cfg(self) -> Path:
        return self.dir / "main.cf"

    @property
    def socket(self) -> Path:
        return self.dir / "agent.sock"

    @property
    def db(self) -> Path:
        return self.dir / "agent.db"

    @property
    def log(self) -> Path:
        return self.dir / "agent.log"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    def argv(self, *extra: str) -> list[str]:
        argv = [PYTHON, "-m", "kvmguest", "-v", "--system", "host1", "--connect", self.uri,
                "agent", "-c", str(self.cfg), "--socket", str(self.socket),
                "--db", str(self.db)]  # fmt: skip
        if self.metrics_port is not None:
            argv += ["--metrics-port", str(self.metrics_port)]
        return argv + list(extra)

    def start(self, *extra: str, timeout: float = 60, env: dict[str, str] | None = None) -> None:
        """Start the daemon and wait until its control socket answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"===== start {self.starts} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.argv(*extra), stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(env or {})})  # fmt: skip
        wait_until(self._ready, bool, timeout, f"agent answering on {self.socket}")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.log_tail()}")
        try:
            return bool(self.call("status").get("ok"))
        except ControlError:
            return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 40) -> float:
        """SIGTERM, then SIGKILL after ``timeout``; returns how long it took to exit."""
        if not self.running():
            return 0.0
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return time.monotonic() - t0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    # --- the control API, in-process (fast enough to poll) --------------------------

    def call(self, cmd: str, timeout: float = 30, **args: Any) -> dict[str, Any]:
        final: dict[str, Any] = {}
        for msg in request(str(self.socket), cmd, timeout=timeout, **args):
            if "ok" in msg:
                final = msg
        return final

    def status(self, res: str) -> dict[str, Any]:
        reply = self.call("status", resource=res)
        assert reply.get("ok"), reply
        return dict(reply["resources"][0])

    def state(self, res: str) -> str:
        return str(self.status(res)["state"])

    def wait_state(self, res: str, states: str | tuple[str, ...], timeout: float = 90) -> str:
        want = (states,) if isinstance(states, str) else states
        try:
            return wait_until(lambda: self.state(res), lambda s: s in want, timeout,
                              f"{res} in {want}")  # fmt: skip
        except AssertionError as e:
            raise AssertionError(f"{e}\nhistory:\n{self.history_text(res)}") from None

    def history(self, res: str | None = None, limit: int = 100_000) -> list[dict[str, Any]]:
        """History rows straight from the database (works while the daemon is down)."""
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            q = "SELECT id, ts, resource, kind, detail FROM history"
            where, args = (" WHERE resource = ?", (res, limit)) if res else ("", (limit,))
            rows = db.execute(
                f"SELECT * FROM ({q}{where} ORDER BY id DESC LIMIT ?) ORDER BY id", args
            ).fetchall()
        finally:
            db.close()
        return [{"ts": r[1], "resource": r[2], "kind": r[3], "detail": r[4]} for r in rows]

    def history_text(self, res: str | None = None) -> str:
        return "\n".join(f"{h['ts']:.3f} {h['resource']} {h['kind']}: {h['detail']}"
                         for h in self.history(res))  # fmt: skip

    def wait_history(
        self, res: str | None, pred: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> None:
        """Return as soon as (within ~1 ms) a history row satisfies ``pred``."""
        try:
            poll_fast(lambda: any(pred(h) for h in self.history(res, limit=20)), timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}\nhistory:\n{self.history_text(res)}") from None

    # --- the CLI, as an operator runs it ------------------------------------------------

    def cli_argv(self, *args: str, as_json: bool = False) -> list[str]:
        argv = [PYTHON, "-m", "kvmguest", "--system", "host1", "--connect", self.uri]
        if as_json:
            argv.append("--json")
        return [*argv, *args, "--socket", str(self.socket)]

    def cli(
        self, *args: str, as_json: bool = False, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cli_argv(*args, as_json=as_json),
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def cli_json(self, *args: str) -> Any:
        r = self.cli(*args, as_json=True)
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)


@dataclass
class Rig:
    """The guests and the agents of one test; everything is removed afterwards."""

    dir: Path
    guests: list[Guest] = field(default_factory=list)
    agents: list[Agent] = field(default_factory=list)

    def guest(self, variant: Variant = "cooperative", **attrs: object) -> Guest:
        n = next(_seq)
        g = Guest(res=f"vm{n}", name=f"kvmg-dmn{n}-{os.getpid()}", dir=self.dir,
                  variant=variant, attrs=dict(attrs))  # fmt: skip
        g.write()
        self.guests.append(g)
        return g

    def agent(
        self,
        groups: Iterable[tuple[str, list[Guest], list[tuple[str, str]], bool]] = (),
        *,
        text: str | None = None,
        metrics: bool = False,
        uri: str = HOST_URI,
    ) -> Agent:
        d = self.dir / f"agent{len(self.agents)}"
        d.mkdir()
        d.chmod(0o755)
        a = Agent(d, uri=uri, metrics_port=free_port() if metrics else None)
        a.cfg.write_text(text if text is not None else main_cf(groups))
        self.agents.append(a)
        return a


@pytest.fixture
def rig(real_libvirt: None) -> Iterator[Rig]:
    r = Rig(scratch_dir("daemon-"))
    try:
        yield r
    finally:
        for a in r.agents:
            a.stop()
            # Shown by pytest only when the test failed.
            print(f"--- {a.dir.name} history ---\n{a.history_text() if a.db.exists() else ''}")
            print(f"--- {a.dir.name} log ---\n{a.log_tail(20000)}")
        for g in r.guests:
            remove_domain(g.name)
        shutil.rmtree(r.dir, ignore_errors=True)
