"""The DockerContainer entry points on a real dockerd and a real Podman (each test runs on
both): online, monitor (full and lean), offline, clean, actions, labels and name clashes,
a missing image, a changed definition, a HEALTHCHECK, the engine unreachable or stopped."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from kvmguest.agents import registry
from kvmguest.agents.base import ACTION_OUTPUT_LIMIT
from kvmguest.agents.loader import Loaded
from kvmguest.model.states import ResourceState

from ..system.waiting import wait_until
from .conftest import REPO, Box
from .engines import HEALTH_IMAGE, IMAGE, SLEEPER, Engine

pytestmark = pytest.mark.docker
PYTHON = str(REPO / ".venv/bin/python")


def _lean(b: Box) -> tuple[ResourceState, int]:
    agent = registry.require("DockerContainer")
    loaded = Loaded.from_file(str(b.cfg))
    from kvmguest.agents.base import Env

    recipe = agent.oneshot_recipe(loaded, b.res, Env(str(b.cfg), "host1"))
    assert recipe is not None
    r = agent.oneshot_monitor(recipe)
    return r.state, r.confidence


def _full(b: Box) -> tuple[ResourceState, int]:
    r = b.handle().monitor()
    return r.state, r.confidence


def _cli(b: Box, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "kvmguest", "--system", "host1", *args, "-c", str(b.cfg)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_every_entry_point(box: Box) -> None:
    h = box.handle()
    assert h.monitor().state is ResourceState.OFFLINE
    assert _cli(box, "monitor", box.res).returncode == 100
    out = h.online()
    assert out.ok, out.message
    assert box.status() == "running"
    labels = box.inspect()["Config"]["Labels"]  # type: ignore[index]
    assert labels["io.kvmguest.managed"] == "1" and labels["io.kvmguest.resource"] == box.res
    assert _full(box) == _lean(box) == (ResourceState.ONLINE, 100)
    assert _cli(box, "monitor", box.res).returncode == 110
    # Online again: nothing to do, the same container.
    pid = box.pid()
    assert h.online().ok and box.pid() == pid
    # Actions: inspect (JSON, capped) and logs.
    act = _cli(box, "action", box.res, "inspect")
    assert act.returncode == 0, act.stderr
    assert len(act.stdout.encode()) <= ACTION_OUTPUT_LIMIT + 200
    assert '"Managed": true' in act.stdout and '"running"' in act.stdout
    assert h.action("logs", []).ok
    assert not h.action("nosuch", []).ok
    # Paused: INTENTIONAL OFFLINE; online resumes it.
    box.sdk().api.pause(box.name)
    assert _full(box)[0] is _lean(box)[0] is ResourceState.INTENTIONAL_OFFLINE
    assert _cli(box, "monitor", box.res).returncode == 200
    assert h.online().ok and box.status() == "running"
    # Offline: stopped within StopTimeout, kept (RemoveOnOffline = 0).
    t0 = time.monotonic()
    out = _cli(box, "offline", box.res)
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - t0 < 30
    assert box.status() in ("exited", "stopped")
    assert _full(box) == _lean(box) == (ResourceState.OFFLINE, 0)
    # Online from the stopped container, then clean kills it.
    assert _cli(box, "online", box.res).returncode == 0
    assert box.status() == "running"
    out = _cli(box, "clean", box.res, "--reason", "4")
    assert out.returncode == 0, out.stderr
    assert box.status() in ("exited", "stopped")


def test_remove_on_offline(box: Box) -> None:
    box.write(RemoveOnOffline=1)
    h = box.handle()
    assert h.online().ok
    assert h.offline().ok and box.status() == "absent"
    assert h.online().ok and box.status() == "running"
    assert h.clean(4).ok and box.status() == "absent"
    assert _full(box) == _lean(box) == (ResourceState.OFFLINE, 0)


def test_a_foreign_container_is_refused_and_left_alone(box: Box) -> None:
    foreign = box.sdk().containers.run(IMAGE, SLEEPER, name=box.name, detach=True,
                                       network_mode="none")  # fmt: skip
    fid = foreign.id
    h = box.handle()
    out = h.online()
    assert not out.ok and "did not create" in out.message, out.message
    assert h.monitor().state is ResourceState.OFFLINE
    assert _lean(box)[0] is ResourceState.OFFLINE
    assert h.offline().ok and h.clean(4).ok
    doc = box.inspect()
    assert doc is not None and doc["Id"] == fid and doc["State"]["Status"] == "running"
    assert "io.kvmguest.managed" not in (doc["Config"]["Labels"] or {})


def test_a_missing_image_is_a_clear_error_and_nothing_is_pulled(box: Box) -> None:
    box.write(Image="kvmguest-absent:none")
    before = sorted(t for i in box.sdk().images.list() for t in i.tags)
    t0 = time.monotonic()
    out = box.handle().online()
    assert not out.ok
    assert "kvmguest-absent:none" in out.message and "AllowPull = 0" in out.message
    assert time.monotonic() - t0 < 10
    assert box.status() == "absent"
    assert sorted(t for i in box.sdk().images.list() for t in i.tags) == before


def test_a_changed_definition_recreates_only_a_stopped_container(box: Box) -> None:
    h = box.handle()
    assert h.online().ok
    first = box.inspect()["Id"]  # type: ignore[index]
    box.write(Env={"COLOUR": "blue"})
    out = box.handle().online()  # running: kept, with a warning
    assert out.ok and any("not re-created" in w for w in out.warnings), out
    assert box.inspect()["Id"] == first  # type: ignore[index]
    assert box.handle().offline().ok
    assert box.handle().online().ok
    doc = box.inspect()
    assert doc is not None and doc["Id"] != first and "COLOUR=blue" in doc["Config"]["Env"]


def test_validate_reports_positions(tmp_path: Path, engine: Engine) -> None:
    b = Box(engine, tmp_path, "bad", "bad name!", {"Volumes": ["relative"], "Ports": ["x:80"],
            "DockerHost": "http//nowhere", "Engine": "lxc", "Env": {"1BAD": "x"}})  # fmt: skip
    b.write()
    r = subprocess.run([PYTHON, "-m", "kvmguest", "validate", "-c", str(b.cfg)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 1
    for what in ("ContainerName", "Volumes", "Ports", "DockerHost", "Engine", "Env"):
        assert "main.cf:" in r.stdout + r.stderr and what in r.stdout + r.stderr, (what, r)


def _healthy_then_sick(box: Box) -> None:
    if box.engine.kind == "podman":
        # Podman runs health checks from systemd timers; without systemd (here) nothing runs
        # them: the test runs the check itself, as the timer would.
        box.engine.cli("healthcheck", "run", box.name, check=False)


def test_a_healthcheck(box: Box) -> None:
    box.write(Image=HEALTH_IMAGE, Command=[])
    h = box.handle()
    if box.engine.kind == "docker":
        out = h.online()  # returns once healthy
        assert out.ok and "healthy" in out.message, out
    else:
        box.write(DelayAfterOnline=1)
        h = box.handle()
        out = h.online()  # no systemd: still "starting" after DelayAfterOnline
        assert out.ok and out.warnings, out
        assert h.monitor().confidence == 50
        _healthy_then_sick(box)
    assert _full(box) == _lean(box) == (ResourceState.ONLINE, 100)
    box.sdk().containers.get(box.name).exec_run(["touch", "/tmp/sick"])

    def sick() -> tuple[ResourceState, int]:
        _healthy_then_sick(box)
        return _full(box)

    wait_until(sick, lambda s: s[0] is ResourceState.OFFLINE, 30, "unhealthy seen")
    assert _lean(box)[0] is ResourceState.OFFLINE
    assert "unhealthy" in h.monitor().detail
    assert box.status() == "running"  # OFFLINE, but kvmguest itself did not stop it


def test_engine_unreachable_is_unknown(box: Box) -> None:
    h = box.handle(shared=True)
    assert h.online().ok
    assert h.monitor().state is ResourceState.ONLINE
    pid = box.pid()
    away = box.engine.sock.with_suffix(".away")
    shutil.move(box.engine.sock, away)
    try:
        r = h.monitor()
        assert r.state is ResourceState.UNKNOWN, r
        assert f"main process {pid} is alive" in r.detail
        assert _lean(box)[0] is ResourceState.UNKNOWN
        assert _cli(box, "monitor", box.res).returncode == 99
    finally:
        shutil.move(away, box.engine.sock)
    assert h.monitor().state is ResourceState.ONLINE


def test_engine_stopped_and_started(box: Box) -> None:
    """dockerd stops its containers (no live-restore): the daemon says UNKNOWN while it is
    gone, a one-shot OFFLINE, and OFFLINE once it is back. Podman's containers outlive its
    API service: UNKNOWN while it is down, ONLINE again once it is back, the same process
    throughout."""
    h = box.handle(shared=True)
    assert h.online().ok
    assert h.monitor().state is ResourceState.ONLINE  # as the daemon: it saw the pid
    pid = box.pid()
    box.engine.stop()
    try:
        r = h.monitor()
        if box.engine.kind == "docker":
            # The container died with dockerd. The daemon, which saw it run, waits for the
            # engine (UNKNOWN: no fault of the container's); a one-shot monitor answers
            # from the engine's absence alone: OFFLINE.
            assert r.state is ResourceState.UNKNOWN and "engine went away" in r.detail, r
            assert _full(box)[0] is _lean(box)[0] is ResourceState.OFFLINE
        else:
            # Podman's container runs on under its conmon: UNKNOWN, never OFFLINE.
            assert r.state is ResourceState.UNKNOWN and f"process {pid} is alive" in r.detail
            assert _lean(box)[0] is ResourceState.UNKNOWN
    finally:
        box.engine.start()
    after = wait_until(h.monitor, lambda r: r.state is not ResourceState.UNKNOWN, 30, "known")
    if box.engine.kind == "docker":
        assert after.state is ResourceState.OFFLINE, after
    else:
        assert after.state is ResourceState.ONLINE and box.pid() == pid, after
    assert json.dumps(after.as_dict())
