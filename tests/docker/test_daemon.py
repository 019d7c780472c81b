"""The agent daemon with DockerContainer and DockerDaemon resources on a real dockerd and a
real Podman: a container's main process killed (-9) is seen in milliseconds and recovered by
the framework rules; an engine whose API cannot be reached is UNKNOWN, never a fault; the
DockerDaemon resource brings its engine up first and takes it down last."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..daemon.conftest import Agent
from ..system.waiting import wait_until
from .conftest import Box
from .engines import Engine

pytestmark = pytest.mark.docker
FAST = {"MonitorInterval": 5, "OfflineMonitorInterval": 10}


def _agent(box: Box, tmp_path: Path) -> Agent:
    a = Agent(tmp_path / "agent")
    a.dir.mkdir()
    shutil.copy(box.cfg, a.cfg)
    return a


@contextmanager
def _running(box: Box, tmp_path: Path, **attrs: object) -> Iterator[Agent]:
    """The daemon, with the box's container autostarted and ONLINE."""
    box.autostart = True
    box.write(**FAST, **attrs)
    a = _agent(box, tmp_path)
    a.start()
    try:
        a.wait_state(box.res, "ONLINE", 60)
        yield a
    finally:
        a.stop()


def _event_ts(a: Agent, res: str, pattern: str) -> float:
    for row in a.history(res):
        if re.search(pattern, row["detail"]):
            return float(row["ts"])
    raise AssertionError(f"no history row matching {pattern!r}:\n{a.history_text(res)}")


def test_kill_9_is_seen_at_once_and_recovered(box: Box, tmp_path: Path) -> None:
    with _running(box, tmp_path, RestartLimit=1) as a:
        pid = wait_until(box.pid, bool, 30, "container pid")
        # The daemon watches the pid its monitor saw (pidfd): wait until it has seen it.
        a.wait_history(box.res, lambda h: h["kind"] == "decision" and f"(pid {pid})" in h["detail"],
                       30, "the monitor saw the pid")  # fmt: skip
        killed = time.time()
        os.kill(pid, signal.SIGKILL)
        a.wait_history(box.res, lambda h: f"container process {pid} exited" in h["detail"],
                       10, "exit seen")  # fmt: skip
        seen = _event_ts(a, box.res, f"container process {pid} exited")
        assert seen - killed < 1.0, (seen - killed, a.history_text(box.res))
        new = wait_until(box.pid, lambda p: p not in (0, pid), 60, "restarted with a new pid")
        a.wait_state(box.res, "ONLINE", 60)
        assert box.status() == "running" and box.pid() == new
        assert a.state(box.res) == "ONLINE"


def test_engine_unreachable_is_unknown_and_no_fault(box: Box, tmp_path: Path) -> None:
    away = box.engine.sock.with_suffix(".away")
    with _running(box, tmp_path) as a:
        pid = box.pid()
        shutil.move(box.engine.sock, away)
        try:
            a.cli("resource", "probe", box.res)
            a.wait_state(box.res, "UNKNOWN", 30)
        finally:
            shutil.move(away, box.engine.sock)
        a.cli("resource", "probe", box.res)
        a.wait_state(box.res, "ONLINE", 30)
        assert box.pid() == pid  # never restarted
        assert "FAULTED" not in a.history_text(box.res)


def test_an_engine_restart(box: Box, tmp_path: Path) -> None:
    """Podman: its containers outlive its API service; the restart is UNKNOWN while it
    lasts, then ONLINE again, the same process, no fault. dockerd stops its containers: the
    restart is UNKNOWN while it lasts, then the container is OFFLINE and the framework
    recovers it (RestartLimit 1)."""
    with _running(box, tmp_path, RestartLimit=1) as a:
        pid = box.pid()
        box.engine.stop()
        try:
            a.cli("resource", "probe", box.res)
            a.wait_state(box.res, "UNKNOWN", 30)
        finally:
            box.engine.start()
        a.wait_state(box.res, "ONLINE", 60)
        wait_until(box.status, lambda s: s == "running", 60, "running")
        if box.engine.kind == "podman":
            assert box.pid() == pid
        assert "FAULTED" not in a.history_text(box.res)


def _daemon_block(e: Engine) -> str:
    opts = ", ".join(f'"{x}"' for x in e.daemon_argv()[1:])
    attrs = {"Engine": e.kind, "DockerHost": f'"{e.host}"',
             "DaemonCommand": f'"{e.daemon_argv()[0]}"', "DaemonOptions": f"{{ {opts} }}",
             "DelayAfterOnline": 60, "DaemonEnv": f'{{ CONTAINERS_CONF = "{e.conf}" }}',
             **FAST}  # fmt: skip
    body = "".join(f"        {k} = {v}\n" for k, v in attrs.items())
    return f"    DockerDaemon engine (\n{body}        )\n"


def test_docker_daemon_resource_orders_the_engine(box: Box, tmp_path: Path) -> None:
    """The group's online starts the engine (DaemonCommand) before the container; its
    offline stops the container, then the engine."""
    e = box.engine
    e.cli("rm", "-f", box.name, check=False)
    e.stop()
    box.extra = _daemon_block(e) + f"    {box.res} requires engine\n"
    box.write(**FAST)
    a = _agent(box, tmp_path)
    a.start(env={"KVMGUEST_ENGINE_RUNDIR": str(tmp_path / "run")})
    try:
        a.wait_state("engine", "OFFLINE", 60)
        r = a.cli("group", "online", "g")
        assert r.returncode == 0, r.stdout + r.stderr
        a.wait_state(box.res, "ONLINE", 90)
        assert a.state("engine") == "ONLINE" and e.answers()
        r = a.cli("group", "offline", "g")
        assert r.returncode == 0, r.stdout + r.stderr
        a.wait_state("engine", "OFFLINE", 90)
        assert a.state(box.res) == "OFFLINE" and not e.answers()
        rows = a.history()

        def first(res: str, kind: str) -> int:
            return next(i for i, r in enumerate(rows) if r["resource"] == res and r["kind"] == kind)

        assert first("engine", "online") < first(box.res, "online")
        assert first(box.res, "offline") < first("engine", "offline")
    finally:
        a.stop()
        # The engine the daemon started is not the fixture's process: stop it by its socket.
        from kvmguest.agents.docker.procs import socket_holder

        pid = socket_holder(e.host)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            wait_until(e.answers, lambda up: not up, 60, "engine stopped")
        e.start()
