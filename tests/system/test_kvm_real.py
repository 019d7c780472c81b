"""The KVM entry points against the real libvirtd with real QEMU (TCG) guests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import libvirt
from kvmguest.agents.kvmguest import entrypoints as ep
from kvmguest.model.states import ResourceState

from .conftest import REPO, GuestFactory
from .guests import HOST2_URI, POWER_BUTTON_IGNORED, console_offset, qemu_pid, wait_for_console
from .waiting import wait_until

pytestmark = pytest.mark.system


def test_online_defines_and_monitor_reports_online_100(make_guest: GuestFactory) -> None:
    g = make_guest()
    ctx = g.ctx()
    with pytest.raises(libvirt.libvirtError):
        g.domain()  # not defined on this host yet
    out = ep.online(ctx)
    assert out.ok, out.message
    g.wait_up()
    r = ep.monitor(ctx)
    assert (r.state, r.confidence, r.exit_code) == (ResourceState.ONLINE, 100, 110)
    cli = g.cli("monitor", g.res)
    assert cli.returncode == 110, cli.stdout + cli.stderr


def test_graceful_offline_of_cooperative_guest_and_syncdir(make_guest: GuestFactory) -> None:
    g = make_guest("cooperative")
    ctx = g.ctx()
    assert ep.online(ctx).ok
    g.wait_up()
    out = ep.offline(ctx)
    assert out.ok, out.message
    assert g.domain().state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert g.domain().state()[1] == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN  # graceful, not destroyed
    saved = g.sync / f"{g.name}.xml"
    assert f"<name>{g.name}</name>" in saved.read_text()
    assert [p.name for p in g.sync.iterdir()] == [saved.name]  # atomic: no temp file left


def test_stubborn_guest_survives_offline_and_clean_destroys_it(make_guest: GuestFactory) -> None:
    g = make_guest("stubborn", delay_offline=5)
    ctx = g.ctx()
    assert ep.online(ctx).ok
    g.wait_up()
    mark = console_offset(g.serial)
    started = time.monotonic()
    out = ep.offline(ctx)
    waited = time.monotonic() - started
    assert not out.ok and "DelayAfterGuestOffline" in out.message
    assert 5 <= waited < 30
    wait_for_console(g.serial, POWER_BUTTON_IGNORED, 30, offset=mark)
    assert ep.monitor(ctx).state is ResourceState.ONLINE  # still running
    (g.sync / f"{g.name}.xml").unlink()
    out = ep.clean(ctx, 1)
    assert out.ok, out.message
    assert g.domain().state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert (g.sync / f"{g.name}.xml").exists()  # SyncDir after clean too


def test_kill_9_of_qemu_is_offline(make_guest: GuestFactory) -> None:
    g = make_guest()
    ctx = g.ctx()
    assert ep.online(ctx).ok
    g.wait_up()
    os.kill(qemu_pid(g.name), signal.SIGKILL)
    r = wait_until(lambda: ep.monitor(ctx), lambda r: r.state is not ResourceState.ONLINE,
                   60, "monitor after kill -9")  # fmt: skip
    assert r.state is ResourceState.OFFLINE and "crashed" in r.detail
    assert g.cli("monitor", g.res).returncode == 100


def test_paused_guest_is_online_20(make_guest: GuestFactory) -> None:
    g = make_guest()
    ctx = g.ctx()
    assert ep.online(ctx).ok
    g.domain().suspend()
    r = ep.monitor(ctx)
    assert (r.state, r.confidence, r.exit_code) == (ResourceState.ONLINE, 20, 102)
    g.domain().resume()
    assert ep.monitor(ctx).confidence == 100


def test_live_migration_to_second_host(make_guest: GuestFactory, host2: str) -> None:
    g = make_guest()
    ctx = g.ctx()
    assert ep.online(ctx).ok
    g.wait_up()
    out = ep.migrate(ctx, "host2")
    assert out.ok, out.message
    remote = libvirt.open(HOST2_URI).lookupByName(g.name)
    assert remote.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    here = ep.monitor(ctx)
    assert here.state is ResourceState.INTENTIONAL_OFFLINE and here.exit_code == 200
    assert g.cli("monitor", g.res).returncode == 200
    # The guest kept running: its console shows one boot only.
    assert g.serial.read_text(errors="replace").count("KVMGUEST-GUEST-UP") == 1
    out = ep.action(ctx, "guestmigrated", [])
    assert out.ok and "runs on host2" in out.output


def test_dr_guest_is_not_migrated_across_sites(make_guest: GuestFactory, host2: str) -> None:
    g = make_guest(
        host2_site="west",
        extra='DROpts = { ConfigureNetwork = 1, IPAddress = "192.0.2.10", Netmask = 24 }',
    )
    ctx = g.ctx()
    out = ep.migrate(ctx, "host2")
    assert not out.ok and "another site" in out.message


def _libvirtd(*args: str) -> None:
    subprocess.run(["bash", str(REPO / "scripts/libvirtd.sh"), *args], check=True, timeout=120)


def test_libvirtd_stopped_or_hung_is_unknown_within_monitor_timeout(
    make_guest: GuestFactory,
) -> None:
    g = make_guest(extra="MonitorTimeout = 8")
    assert ep.online(g.ctx()).ok
    try:
        _libvirtd("stop")
        started = time.monotonic()
        r = g.cli("monitor", g.res)
        assert r.returncode == 99, r.stdout + r.stderr
        assert time.monotonic() - started < 8 + 5
    finally:
        _libvirtd("start")
    # A libvirtd that accepts the connection but never answers: only the deadline saves us.
    pid = int(Path("/run/libvirtd.pid").read_text().strip())
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        r = g.cli("monitor", g.res)
        elapsed = time.monotonic() - started
        assert r.returncode == 99, r.stdout + r.stderr
        assert elapsed < 8 + 5, elapsed
    finally:
        os.kill(pid, signal.SIGCONT)
    assert g.cli("monitor", g.res).returncode == 110


def test_devscan_names_a_removed_disk(make_guest: GuestFactory) -> None:
    g = make_guest(disk=True)
    ctx = g.ctx()
    assert ep.online(ctx).ok
    out = ep.action(ctx, "DevScan", [])
    assert out.ok, out.output
    assert g.disk is not None
    g.disk.unlink()
    out = ep.action(ctx, "DevScan", [])
    assert not out.ok and f"{g.disk} is missing" in out.output
    cli = g.cli("action", g.res, "DevScan")
    assert cli.returncode == 1 and str(g.disk) in cli.stdout


def test_bad_guest_config_file_defines_nothing(make_guest: GuestFactory) -> None:
    g = make_guest()
    ctx = g.ctx()
    g.xml_path.write_text("<domain type='qemu'><name>")
    out = ep.online(ctx)
    assert not out.ok and "not valid XML" in out.message
    with pytest.raises(libvirt.libvirtError):
        g.domain()
