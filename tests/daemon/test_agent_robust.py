"""The daemon's own faults, on libvirt's embedded test driver (``test:///default``, no
libvirtd): start-up errors with their exit codes, a corrupt database, the control socket
under malformed requests and idle clients, the systemd watchdog, and supervision (a task
that dies ends the process). The same faults against real guests are in tests/faults."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvmguest.agents.base import Env
from kvmguest.agents.loader import Loaded
from kvmguest.daemon import service as service_mod
from kvmguest.daemon.engine import Engine
from kvmguest.daemon.service import EX_CANTCREAT, EX_CONFIG, AgentOptions, Fatal, serve

from ..system.waiting import wait_until
from .conftest import REPO, Agent
from .test_agent_local import MAIN_CF


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    d = tmp_path / "agent"
    d.mkdir()
    a = Agent(d, uri="test:///default")
    a.cfg.write_text(MAIN_CF)
    try:
        yield a
    finally:
        a.stop()


# Requests that once got no answer and a traceback in the log.
MALFORMED: list[bytes] = [
    b'{"cmd": "history", "limit": "abc"}',
    b'{"cmd": "history", "limit": 1e30}',
    b'{"cmd": "history", "limit": -1}',
    b'{"cmd": "history", "limit": true}',
    b'{"cmd": "resource", "op": "action", "resource": "web", "token": "DevScan", "args": 5}',
    b'{"cmd": "group", "op": "online", "group": {}}',
    b'{"cmd": "group", "op": "freeze"}',
    b'{"cmd": "resource", "op": ["probe"], "resource": "web"}',
    b'{"cmd": "status", "resource": 7}',
    b'{"cmd": "history", "resource": []}',
    b'{"cmd": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"cmd": "group", "op": "online", "group": "' + b"x" * 60_000 + b'"}',
    b'{"cmd": "nope"}',
    b"\xff\xfe not json",
    b"[]",
]


def _raw(sock: Path, line: bytes, timeout: float = 30) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(line + b"\n")
        reply = s.makefile("rb").readline()
    assert reply, f"no answer to {line[:80]!r}"
    return dict(json.loads(reply))


def test_every_malformed_request_gets_an_answer_and_no_traceback(agent: Agent) -> None:
    agent.start()
    for line in MALFORMED:
        reply = _raw(agent.socket, line)
        assert reply["ok"] is False and reply["error"], (line[:80], reply)
    # The group lock table does not grow per request: a group that does not run here is
    # refused before a lock is made for it.
    for n in range(50):
        reply = _raw(agent.socket, json.dumps({"cmd": "group", "op": "freeze",
                                               "group": f"g{n}"}).encode())  # fmt: skip
        assert "no group" in reply["error"]
    assert agent.running() and agent.call("status")["ok"] is True
    assert "Traceback" not in agent.log_tail(200_000)


def test_idle_clients_neither_lock_out_status_nor_fill_the_log(agent: Agent) -> None:
    agent.start()
    idle = []
    try:
        for _ in range(1000):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(agent.socket))
            idle.append(s)
        t0 = time.monotonic()
        # Each idle one is answered "busy" at once or dropped after the read timeout.
        wait_until(lambda: _status_ok(agent), bool, 30, "status answered under 1000 idle")
        assert time.monotonic() - t0 < 30
    finally:
        for s in idle:
            s.close()
    log = agent.log_tail(200_000)
    assert "Traceback" not in log and log.count("\n") < 200


def _status_ok(agent: Agent) -> bool:
    try:
        return bool(agent.call("status", timeout=5).get("ok"))
    except Exception:  # busy or timed out: try again
        return False


def test_watchdog_pings_come_from_the_running_loop(agent: Agent) -> None:
    """WatchdogSec in the unit: WATCHDOG=1 every WATCHDOG_USEC/2 while the loop runs."""
    notify = agent.dir / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(notify))
        s.settimeout(30)
        agent.start(env={"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "1000000"})
        got = [s.recv(100) for _ in range(4)]
        assert got[0] == b"READY=1" or b"READY=1" in got
        assert got.count(b"WATCHDOG=1") >= 3
        # A stopped process sends nothing: systemd would kill and restart it.
        assert agent.proc is not None
        agent.proc.send_signal(19)  # SIGSTOP
        try:
            while True:  # drain what was already sent
                s.settimeout(0.6)
                s.recv(100)
        except TimeoutError:
            pass
        finally:
            agent.proc.send_signal(18)  # SIGCONT
        s.settimeout(30)
        assert s.recv(100) == b"WATCHDOG=1"


def test_unknown_socket_group_is_a_config_error(agent: Agent) -> None:
    r = subprocess.run(agent.argv("--socket-group", "no-such-group-kvmg"),
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 78, r.stderr
    assert "no-such-group-kvmg" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("how", ["directory", "parent is a file"])
def test_a_database_that_cannot_be_opened_is_one_line(agent: Agent, how: str) -> None:
    if how == "directory":
        agent.db.mkdir()
        argv = agent.argv()
    else:
        (agent.dir / "file").write_text("x")
        argv = [*agent.argv()[:-1], str(agent.dir / "file" / "agent.db")]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == EX_CANTCREAT, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "database" in lines[0] and "Traceback" not in r.stderr


def test_a_corrupt_database_is_moved_aside_and_every_group_frozen(agent: Agent) -> None:
    agent.db.write_bytes(b"this is not an SQLite database" * 200)
    agent.start()
    status = agent.call("status")
    assert status["reset_at"] and status["state_saved"] is True
    assert all(r["frozen"] for r in status["resources"])
    aside = list(agent.dir.glob("agent.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    rows = [h["detail"] for h in agent.history()]
    assert not any("AutoStart" in r for r in rows)
    text = agent.cli("status").stdout
    assert f"state lost, reset at {status['reset_at']}" in text
    # A restart keeps the freeze and the notice: the operator has not looked yet.
    agent.stop()
    agent.start()
    again = agent.call("status")
    assert again["reset_at"] == status["reset_at"] and again["resources"][0]["frozen"]
    assert agent.cli("group", "unfreeze", "g").returncode == 0
    assert agent.call("status")["reset_at"] is None


def test_a_task_that_dies_ends_the_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Supervision: the engine loop raising is a non-zero exit, not a live idle process."""
    cfg = tmp_path / "main.cf"
    cfg.write_text(MAIN_CF)

    async def broken(self: Engine) -> None:
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(Engine, "run", broken)
    env = Env(config=str(cfg), system="host1", uri="test:///default")
    opts = AgentOptions(env=env, socket=str(tmp_path / "s.sock"), db=str(tmp_path / "a.db"))
    with pytest.raises(Fatal, match="engine loop: ZeroDivisionError: injected"):
        asyncio.run(asyncio.wait_for(serve(Loaded.from_file(str(cfg)), opts), 60))
    rows = sqlite3.connect(tmp_path / "a.db").execute("SELECT detail FROM history").fetchall()
    assert any("failed: engine loop" in r[0] for r in rows)


def test_an_exception_in_a_loop_callback_is_fatal_a_socket_error_is_not() -> None:
    died: list[str] = []
    handler = service_mod._LoopErrors(lambda what, e: died.append(f"{what}: {e}"))
    loop = asyncio.new_event_loop()
    try:
        handler(loop, {"message": "socket.accept() out of system resource",
                       "exception": OSError(24, "Too many open files")})  # fmt: skip
        assert died == []
        handler(loop, {"message": "Exception in callback", "exception": KeyError("x")})
        assert died == ["Exception in callback: 'x'"]
    finally:
        loop.close()


def _argv_override(a: Agent, argv: list[str]) -> None:
    a.argv = lambda *extra: [*argv, *extra]  # type: ignore[method-assign]


def test_running_out_of_file_descriptors_is_no_traceback_and_passes(agent: Agent) -> None:
    """The daemon under a 48-descriptor limit: idle clients exhaust it (accept fails with
    EMFILE); the log gets a rate-limited warning, not a traceback per accept, and status
    answers again once they go."""
    _argv_override(agent, ["prlimit", "--nofile=48:48", *agent.argv()])
    agent.start()
    idle = []
    try:
        for _ in range(120):
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            try:
                s.connect(str(agent.socket))
            except BlockingIOError:
                s.close()
                break
            idle.append(s)
        wait_until(lambda: "out of system resource" in agent.log_tail(), bool, 30,
                   "accept ran out of descriptors")  # fmt: skip
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: _status_ok(agent), bool, 30, "status answered again")
    log = agent.log_tail(200_000)
    assert "Traceback" not in log and log.count("out of system resource") <= 2


def test_journal_lines_carry_the_priority_and_state_changes_show_without_v(
    agent: Agent,
) -> None:
    agent.log.touch()
    st = agent.log.stat()
    _argv_override(agent, [x for x in agent.argv() if x != "-v"])
    agent.start(env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    wait_until(lambda: agent.state("web"), lambda s: s == "ONLINE", 30, "web ONLINE")
    agent.call("group", op="freeze", group="g")
    agent.stop()
    lines = [ln for ln in agent.log.read_text().splitlines() if not ln.startswith("=====")]
    assert lines and all(ln[:3] in ("<2>", "<3>", "<4>", "<6>") for ln in lines), lines
    assert any(ln.startswith("<6>web ONLINE: probe") for ln in lines), lines  # a state change
    assert not any(ln.startswith("<7>") for ln in lines)  # routine decisions need -v


def test_the_unit_does_not_restart_a_config_error_and_has_a_watchdog() -> None:
    unit = (REPO / "packaging/systemd/kvmguest-agent.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["RestartPreventExitStatus"] == str(EX_CONFIG)
    assert settings["Restart"] == "on-failure" and settings["WatchdogSec"]
    assert settings["NotifyAccess"] == "main"  # WATCHDOG=1 comes from the main process
