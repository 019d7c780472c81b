"""The agent daemon on the real libvirtd with real QEMU (TCG) guests: crash detection and
restart, RestartLimit, a guest shut down from inside, a daemon killed in the middle of an
online, libvirtd restarted under it, group order, AutoStart, SIGTERM, metrics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from typing import Any

import pytest

import libvirt

from ..system.guests import HOST2_MIGRATE_URI, HOST2_URI
from ..system.realenv import reachable, remove_domain, require
from ..system.waiting import wait_until
from .conftest import (
    REPO,
    Agent,
    Guest,
    Rig,
    main_cf,
    qemu_processes,
)

pytestmark = pytest.mark.system


def _rows(a: Agent, res: str | None, since: int = 0) -> list[dict[str, Any]]:
    return a.history(res)[since:]


def _index(rows: list[dict[str, Any]], kind: str, pattern: str, start: int = 0) -> int:
    """Index of the first row at or after ``start`` of KIND whose detail matches PATTERN."""
    for i in range(start, len(rows)):
        if rows[i]["kind"] == kind and re.search(pattern, rows[i]["detail"]):
            return i
    text = "\n".join(f"  {r['kind']}: {r['detail']}" for r in rows)
    raise AssertionError(f"no {kind} row matching {pattern!r} after row {start}:\n{text}")


def _running_with_new_pid(g: Guest, old: int) -> bool:
    pid = g.pid()
    return g.running() and pid is not None and pid != old


def _metrics(a: Agent) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{a.metrics_port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_kill_9_of_qemu_is_detected_at_once_and_the_guest_restarted(rig: Rig) -> None:
    g = rig.guest(RestartLimit=1)
    a = rig.agent([("g", [g], [], True)])
    a.start()
    a.wait_state(g.res, "ONLINE")
    g.wait_up()
    pid = g.pid()
    assert pid is not None
    since = len(a.history(g.res))
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _running_with_new_pid(g, pid), bool, 60, "guest running again")
    a.wait_state(g.res, "ONLINE")

    rows = _rows(a, g.res, since)
    exited = _index(rows, "event", rf"^QEMU process {pid} exited$")
    fault = _index(rows, "decision", r"went offline unexpectedly .*clean reason 4.*restart 1 of 1")
    clean = _index(rows, "clean", r"^succeeded", fault)
    online = _index(rows, "online", r"^succeeded", clean)
    back = _index(rows, "state", r"RESTARTING -> ONLINE", online)
    assert exited < fault < clean < online < back
    # The pidfd, not libvirt (which waits for its own cleanup), tells the daemon. The bench
    # measures it precisely; here only its order of magnitude, with room for a loaded CI.
    assert rows[exited]["ts"] - killed_at < 1.0, rows[exited]["ts"] - killed_at
    assert qemu_processes(g.name) == [g.pid()]
    st = a.status(g.res)
    assert st["counters"]["RestartCount"] == 1 and st["confidence"] == 100

    human = a.cli("history", g.res)
    assert human.returncode == 0, human.stderr
    assert f"QEMU process {pid} exited" in human.stdout and "RESTARTING -> ONLINE" in human.stdout
    table = a.cli("status")
    assert table.returncode == 0 and g.res in table.stdout and "ONLINE" in table.stdout
    assert "group g: ONLINE" in table.stdout


def test_restart_limit_exhausted_faults_and_leaves_the_guest_down_with_metrics(rig: Rig) -> None:
    g = rig.guest(RestartLimit=1)
    a = rig.agent([("g", [g], [], True)], metrics=True)
    a.start()
    a.wait_state(g.res, "ONLINE")
    first = g.pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: _running_with_new_pid(g, first), bool, 60, "restart 1 of 1")
    a.wait_state(g.res, "ONLINE")
    second = g.pid()
    assert second is not None
    os.kill(second, signal.SIGKILL)
    a.wait_state(g.res, "FAULTED")
    faulted_at = time.time()
    rows = _rows(a, g.res)
    _index(rows, "decision", r"went offline unexpectedly .*RestartLimit 1 reached|FAULTED")
    # Left down: the next periodic monitors (OfflineMonitorInterval 10) change nothing.
    st = wait_until(lambda: a.status(g.res), lambda s: (s["last_monitor"] or 0) > faulted_at + 1,
                    40, "a periodic monitor after the fault")  # fmt: skip
    assert st["state"] == "FAULTED"
    assert g.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert qemu_processes(g.name) == []
    assert [r for r in _rows(a, g.res) if r["ts"] > faulted_at and r["kind"] == "online"] == []

    m = _metrics(a)
    assert _sample(m, "kvmguest_resource_state", resource=g.res, state="FAULTED") == 1.0
    assert _sample(m, "kvmguest_resource_state", resource=g.res, state="ONLINE") == 0.0
    assert _sample(m, "kvmguest_restarts_total", resource=g.res) == 1.0
    assert _sample(m, "kvmguest_faults_total", resource=g.res) == 1.0
    assert (_sample(m, "kvmguest_monitor_duration_seconds_count", resource=g.res) or 0) >= 4
    assert (_sample(m, "kvmguest_event_to_action_seconds_count", resource=g.res) or 0) >= 2
    assert _sample(m, "kvmguest_libvirt_connected") == 1.0
    for name in ("kvmguest_monitor_duration_seconds", "kvmguest_event_to_action_seconds"):
        assert f"# TYPE {name} histogram" in m


def test_guest_shut_down_from_inside_is_an_unexpected_offline(rig: Rig) -> None:
    """``virsh shutdown`` behind the agent's back: the guest powers itself off (ACPI).
    shut off (shutdown) is OFFLINE, not INTENTIONAL OFFLINE (that is for migrated/saved
    guests): the framework sees an unexpected offline, cleans (reason 4) and, with the
    default RestartLimit 0, faults the resource; the guest stays off."""
    g = rig.guest()
    a = rig.agent([("g", [g], [], True)])
    a.start()
    a.wait_state(g.res, "ONLINE")
    g.wait_up()  # the power-button handler runs from here on
    since = len(a.history(g.res))
    r = subprocess.run(["virsh", "-c", "qemu:///system", "shutdown", g.name],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    a.wait_state(g.res, "FAULTED", timeout=90)
    assert g.state() == (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN)
    rows = _rows(a, g.res, since)
    fault = _index(rows, "decision", r"went offline unexpectedly \(OFFLINE: .*clean reason 4")
    _index(rows, "clean", r"^succeeded", fault)
    _index(rows, "state", r"CLEANING -> FAULTED", fault)
    assert not any(r["kind"] == "online" for r in rows)


@pytest.mark.parametrize("moment", ["request", "defined", "started"])
def test_daemon_killed_during_online_does_not_start_the_guest_twice(rig: Rig, moment: str) -> None:
    """SIGKILL right after the online was asked for, right after the online defined the
    domain (its start request then in flight), or right after libvirt reported it started:
    after a restart the daemon probes first, and either finds the guest running or resumes
    the online. Never a second start."""
    g = rig.guest()
    a = rig.agent([("g", [g], [], False)])
    a.start()
    a.wait_state(g.res, "OFFLINE")
    op = subprocess.Popen(a.cli_argv("group", "online", "g"), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        if moment == "request":
            a.wait_history(g.res, lambda h: h["kind"] == "request" and h["detail"] == "online",
                           60, "online request")  # fmt: skip
        else:
            a.wait_history(g.res, lambda h: f"libvirt event: {moment}" in h["detail"],
                           60, f"libvirt {moment} event")  # fmt: skip
        a.kill()
    finally:
        op.wait(60)

    ids: set[int] = set()

    def observe() -> str:
        dom_state = g.state()
        if dom_state[0] == libvirt.VIR_DOMAIN_RUNNING:
            ids.add(g.domain().ID())
        return a.state(g.res) if a.running() else "DOWN"

    observe()
    since = len(a.history(g.res))
    a.start()
    wait_until(observe, lambda s: s == "ONLINE", 90, f"{g.res} ONLINE after the restart")
    g.wait_up()
    observe()
    assert len(ids) == 1, f"the guest was started more than once: domain ids {ids}"
    assert g.domain().ID() in ids
    assert len(qemu_processes(g.name)) == 1
    assert g.boots() == 1, "more than one boot in the serial log"
    rows = _rows(a, g.res, since)
    _index(rows, "decision", r"PROBING: .*probing")
    assert a.status(g.res)["counters"]["RestartCount"] == 0


def test_libvirtd_restart_is_unknown_not_a_fault_and_the_daemon_reconnects(rig: Rig) -> None:
    g = rig.guest()
    a = rig.agent([("g", [g], [], True)])
    a.start()
    a.wait_state(g.res, "ONLINE")
    pid = g.pid()
    since = len(a.history(g.res))
    script = str(REPO / "scripts/libvirtd.sh")
    try:
        subprocess.run([script, "stop"], check=True, capture_output=True, timeout=60)
        st = wait_until(lambda: a.call("status"), lambda s: not s["connected"], 30,
                        "status shows libvirt not connected")  # fmt: skip
        a.wait_state(g.res, "UNKNOWN", timeout=30)
        assert a.state(g.res) == "UNKNOWN"
    finally:
        subprocess.run([script, "start"], check=True, capture_output=True, timeout=120)
    st = wait_until(lambda: a.call("status"), lambda s: s["connected"], 60,
                    "status shows libvirt connected again")  # fmt: skip
    a.wait_state(g.res, "ONLINE", timeout=60)
    assert g.pid() == pid and g.running()
    rows = _rows(a, g.res, since)
    assert not [r for r in rows if r["kind"] in ("clean", "online", "offline")]
    assert not any("FAULTED" in r["detail"] or "CLEANING" in r["detail"] for r in rows)
    libvirt_rows = [r["detail"] for r in _rows(a, "-")]
    assert any("connection lost" in d for d in libvirt_rows)
    assert libvirt_rows[-1].startswith("connected to") or any(
        d.startswith("connected to") for d in libvirt_rows[-3:]
    )
    assert st["connected"]


def test_group_online_and_offline_follow_requires(rig: Rig) -> None:
    b = rig.guest()
    parent = rig.guest()
    a = rig.agent([("g", [parent, b], [(parent.res, b.res)], False)])
    a.start()
    a.wait_state(parent.res, "OFFLINE")
    a.wait_state(b.res, "OFFLINE")

    since = len(a.history())
    r = a.cli("group", "online", "g")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "group g: ONLINE" in r.stdout
    rows = _rows(a, None, since)
    b_req = next(i for i, h in enumerate(rows) if h["resource"] == b.res
                 and h["kind"] == "request" and h["detail"] == "online")  # fmt: skip
    b_on = next(i for i, h in enumerate(rows) if h["resource"] == b.res
                and h["kind"] == "state" and h["detail"].endswith("-> ONLINE"))  # fmt: skip
    p_req = next(i for i, h in enumerate(rows) if h["resource"] == parent.res
                 and h["kind"] == "request" and h["detail"] == "online")  # fmt: skip
    assert b_req < b_on < p_req, "the child must be ONLINE before the parent is asked"
    assert b.domain().ID() < parent.domain().ID()  # libvirt numbers starts in order
    b.wait_up()
    parent.wait_up()

    since = len(a.history())
    r = a.cli("group", "offline", "g")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "group g: OFFLINE" in r.stdout
    rows = _rows(a, None, since)
    p_req = next(i for i, h in enumerate(rows) if h["resource"] == parent.res
                 and h["kind"] == "request" and h["detail"] == "offline")  # fmt: skip
    p_off = next(i for i, h in enumerate(rows) if h["resource"] == parent.res
                 and h["kind"] == "state" and h["detail"].endswith("-> OFFLINE"))  # fmt: skip
    b_req = next(i for i, h in enumerate(rows) if h["resource"] == b.res
                 and h["kind"] == "request" and h["detail"] == "offline")  # fmt: skip
    assert p_req < p_off < b_req, "the parent must be OFFLINE before the child is asked"
    for guest in (b, parent):  # graceful (ACPI), not destroyed
        assert guest.state() == (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN)


def test_autostart_sigterm_keeps_guests_and_restart_never_starts_twice(rig: Rig) -> None:
    auto = rig.guest()
    manual = rig.guest()
    a = rig.agent([("ga", [auto], [], True), ("gb", [manual], [], False)])
    a.start()
    a.wait_state(auto.res, "ONLINE")
    assert a.state(manual.res) == "OFFLINE"
    assert manual.state() == (-1, -1)  # not even defined: nothing brought gb up
    auto.wait_up()
    pid, dom_id = auto.pid(), auto.domain().ID()

    took = a.stop()
    assert a.proc is not None and a.proc.returncode == 0, a.log_tail()
    assert took < 10, f"SIGTERM took {took:.1f} s"
    assert not a.socket.exists()
    assert auto.running() and auto.pid() == pid  # the guests are libvirt's, never ours

    since = len(a.history(auto.res))
    a.start()
    a.wait_state(auto.res, "ONLINE")
    rows = _rows(a, auto.res, since)
    _index(rows, "decision", r"ONLINE: probe \(ONLINE")
    assert not [r for r in rows if r["kind"] in ("request", "online", "clean")]
    assert auto.pid() == pid and auto.domain().ID() == dom_id and auto.boots() == 1


def test_group_switch_live_migrates_in_dependency_order(rig: Rig) -> None:
    require(None if reachable(HOST2_URI) else f"second libvirt host not reachable at {HOST2_URI}")
    child = rig.guest()
    parent = rig.guest()
    host2 = (f'system host2 ( LibvirtURI = "{HOST2_URI}"\n'
             f'    MigrateDataURI = "{HOST2_MIGRATE_URI}" )\n')  # fmt: skip
    text = main_cf([("g", [parent, child], [(parent.res, child.res)], True)])
    text = text.replace("system host1 ( )\n", "system host1 ( )\n" + host2)
    text = text.replace("SystemList = { host1 = 0 }", "SystemList = { host1 = 0, host2 = 1 }")
    a = rig.agent(text=text)
    try:
        a.start()
        a.wait_state(parent.res, "ONLINE")
        child.wait_up()
        parent.wait_up()
        pids = {g.name: g.pid() for g in (child, parent)}
        since = len(a.history())
        r = a.cli("group", "switch", "g", "--to", "host2")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "group g: OFFLINE" in r.stdout
        rows = _rows(a, None, since)
        order = [h["resource"] for h in rows if h["kind"] == "request"]
        assert order == [child.res, parent.res], order  # children first, as for online
        for g in (child, parent):
            assert a.state(g.res) in ("OFFLINE", "INTENTIONAL OFFLINE")
            remote = libvirt.open(HOST2_URI).lookupByName(g.name)
            assert remote.state()[0] == libvirt.VIR_DOMAIN_RUNNING  # live: never stopped
            assert g.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF  # left here, by migration
            assert pids[g.name] not in qemu_processes(g.name)
        assert not [h for h in rows if h["kind"] in ("clean", "offline")]
    finally:
        for g in (child, parent):
            remove_domain(g.name, HOST2_URI)
