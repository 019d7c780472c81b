"""The DockerDaemon entry points on a private dockerd and a private Podman service that the
resource itself starts (DaemonCommand + DaemonOptions: no systemd here): monitor is the
API's ping plus the engine's process; online, offline, clean, the info action; a live
engine whose API cannot be reached is UNKNOWN."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import KINDS, REPO, unavailable
from .engines import CONTAINERS_CONF, Engine, missing

pytestmark = pytest.mark.docker
PYTHON = str(REPO / ".venv/bin/python")


@pytest.fixture(params=KINDS)
def own(request: pytest.FixtureRequest) -> Iterator[Engine]:
    reasons = missing()
    if reasons:
        unavailable("container engines unavailable: " + "; ".join(reasons))
    # A short path: containerd's socket lives under it (a Unix socket path has 107 bytes).
    base = Path(tempfile.mkdtemp(prefix="kvmguest-docker-", dir="/tmp"))
    e = Engine(str(request.param), base)
    e.dir.mkdir(parents=True)
    (e.dir / "tmp").mkdir()
    e.conf.write_text(CONTAINERS_CONF)
    yield e
    from kvmguest.agents.docker.procs import socket_holder

    pid = socket_holder(e.host)
    if pid is not None:
        os.kill(pid, 9)
    e.cleanup()
    shutil.rmtree(base, ignore_errors=True)


def _cfg(e: Engine) -> Path:
    argv = e.daemon_argv()
    opts = ", ".join(f'"{x}"' for x in argv[1:])
    cfg = e.dir / "main.cf"
    cfg.write_text(
        "cluster c ( )\nsystem host1 ( )\ngroup g ( SystemList = { host1 = 0 } )\n"
        f'    DockerDaemon eng (\n        Engine = {e.kind}\n        DockerHost = "{e.host}"\n'
        f'        DaemonCommand = "{argv[0]}"\n        DaemonOptions = {{ {opts} }}\n'
        "        DelayAfterOnline = 60\n        DelayAfterOffline = 30\n"
        f'        DaemonEnv = {{ CONTAINERS_CONF = "{e.conf}" }}\n        )\n'
    )
    return cfg


def _run(e: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KVMGUEST_ENGINE_RUNDIR": str(e.dir / "run")}
    return subprocess.run([PYTHON, "-m", "kvmguest", "--system", "host1", *args, "-c",
                           str(_cfg(e))], capture_output=True, text=True, timeout=180,
                          env=env)  # fmt: skip


def test_every_entry_point(own: Engine) -> None:
    assert _run(own, "monitor", "eng").returncode == 100
    r = _run(own, "online", "eng")
    assert r.returncode == 0, r.stderr
    assert own.answers()
    r = _run(own, "monitor", "eng")
    assert r.returncode == 110, r.stdout
    r = _run(own, "action", "eng", "info")
    assert r.returncode == 0 and f"engine: {own.kind}" in r.stdout, r.stdout + r.stderr
    # The API unreachable while the engine's process lives: UNKNOWN, not OFFLINE.
    away = own.sock.with_suffix(".away")
    shutil.move(own.sock, away)
    try:
        r = _run(own, "monitor", "eng")
        assert r.returncode == 99 and "lives" in r.stdout, r.stdout
    finally:
        shutil.move(away, own.sock)
    r = _run(own, "offline", "eng")
    assert r.returncode == 0, r.stderr
    assert not own.answers()
    assert _run(own, "monitor", "eng").returncode == 100
    assert _run(own, "online", "eng").returncode == 0
    r = _run(own, "clean", "eng", "--reason", "4")
    assert r.returncode == 0, r.stderr
    assert not own.answers()
    assert _run(own, "monitor", "eng").returncode == 100
