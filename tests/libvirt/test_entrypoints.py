"""Every entry point and action on libvirt's test:///default driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import libvirt
from kvmguest.agents.kvmguest import entrypoints as ep
from kvmguest.agents.kvmguest.libvirt_kvm import LibvirtKVM
from kvmguest.deadline import Deadline
from kvmguest.model.states import ResourceState

from .conftest import URI, Guest, guest_xml

KVMGUEST = [sys.executable, "-m", "kvmguest"]


def test_online_defines_from_file_and_monitor_reports_110(guest: Guest) -> None:
    guest.xml_path.write_text(guest_xml(guest.name))
    ctx = guest.configure(f'GuestConfigFilePath = "{guest.xml_path}"')
    assert ep.monitor(ctx).exit_code == 100  # not defined yet
    out = ep.online(ctx)
    assert out.ok, out.message
    assert guest.domain().isActive()
    r = ep.monitor(ctx)
    assert (r.state, r.confidence, r.exit_code) == (ResourceState.ONLINE, 100, 110)


def test_online_twice_never_starts_twice(guest: Guest) -> None:
    guest.xml_path.write_text(guest_xml(guest.name))
    ctx = guest.configure(f'GuestConfigFilePath = "{guest.xml_path}"')
    assert ep.online(ctx).ok
    dom_id = guest.domain().ID()
    again = ep.online(ctx)
    assert again.ok and "already online" in again.message
    assert guest.domain().ID() == dom_id  # the same running instance


def test_online_without_definition_or_file_fails_clearly(guest: Guest) -> None:
    out = ep.online(guest.configure())
    assert not out.ok
    assert "not defined on this host and GuestConfigFilePath is not set" in out.message


def test_online_with_unreadable_config_file(guest: Guest) -> None:
    ctx = guest.configure(f'GuestConfigFilePath = "{guest.tmp}/absent.xml"')
    out = ep.online(ctx)
    assert not out.ok and "absent.xml: cannot read" in out.message
    assert not guest.defined()


def test_online_with_invalid_or_wrong_config_file(guest: Guest) -> None:
    guest.xml_path.write_text("<domain><name>oops")
    ctx = guest.configure(f'GuestConfigFilePath = "{guest.xml_path}"')
    out = ep.online(ctx)
    assert not out.ok and "not valid XML" in out.message
    guest.xml_path.write_text(guest_xml("someone-else"))
    out = ep.online(ctx)
    assert not out.ok and "defines 'someone-else'" in out.message
    assert not guest.defined()


def test_resync_redefines_only_when_the_file_changed(guest: Guest) -> None:
    guest.xml_path.write_text(guest_xml(guest.name, memory_mib=128))
    ctx = guest.configure(f'GuestConfigFilePath = "{guest.xml_path}"\n ResyncVMCfg = 1')
    assert ep.online(ctx).ok and ep.offline(ctx).ok
    guest.xml_path.write_text(guest_xml(guest.name, memory_mib=256))
    assert ep.online(ctx).ok
    assert guest.domain().maxMemory() == 256 * 1024
    assert ep.offline(ctx).ok
    # Without ResyncVMCfg the existing definition stays.
    ctx = guest.configure(f'GuestConfigFilePath = "{guest.xml_path}"')
    guest.xml_path.write_text(guest_xml(guest.name, memory_mib=512))
    assert ep.online(ctx).ok
    assert guest.domain().maxMemory() == 256 * 1024


def test_offline_copies_definition_to_syncdir_atomically(guest: Guest) -> None:
    guest.xml_path.write_text(guest_xml(guest.name))
    ctx = guest.configure(f'GuestConfigFilePath = "{guest.xml_path}"\n SyncDir = "{guest.sync}"')
    assert ep.online(ctx).ok
    out = ep.offline(ctx)
    assert out.ok and out.warnings == []
    assert ep.monitor(ctx).state is ResourceState.OFFLINE
    copied = guest.sync / f"{guest.name}.xml"
    assert f"<name>{guest.name}</name>" in copied.read_text()
    assert sorted(p.name for p in guest.sync.iterdir()) == [copied.name]  # no temp left


def test_clean_destroys_and_logs_reason(guest: Guest, caplog: object) -> None:
    guest.xml_path.write_text(guest_xml(guest.name))
    ctx = guest.configure(f'GuestConfigFilePath = "{guest.xml_path}"\n SyncDir = "{guest.sync}"')
    assert ep.online(ctx).ok
    out = ep.clean(ctx, 4)
    assert out.ok and "reason 4" in out.message
    assert not guest.domain().isActive()
    assert (guest.sync / f"{guest.name}.xml").exists()
    assert not ep.clean(ctx, 9).ok


def test_clean_with_unwritable_syncdir_still_destroys(guest: Guest) -> None:
    guest.xml_path.write_text(guest_xml(guest.name))
    missing = guest.tmp / "no-such-dir"
    ctx = guest.configure(f'GuestConfigFilePath = "{guest.xml_path}"\n SyncDir = "{missing}"')
    assert ep.online(ctx).ok
    out = ep.clean(ctx, 2)
    assert out.ok
    assert not guest.domain().isActive()
    assert out.warnings and "could not copy" in out.warnings[0] and str(missing) in out.warnings[0]


def test_paused_guest_is_online_20(guest: Guest) -> None:
    guest.xml_path.write_text(guest_xml(guest.name))
    ctx = guest.configure(f'GuestConfigFilePath = "{guest.xml_path}"')
    assert ep.online(ctx).ok
    guest.domain().suspend()
    r = ep.monitor(ctx)
    assert (r.state, r.confidence, r.exit_code) == (ResourceState.ONLINE, 20, 102)


def test_unreachable_libvirt_is_unknown_not_offline(guest: Guest) -> None:
    from kvmguest.agents.kvmguest.libvirt_kvm import LibvirtKVM
    from kvmguest.agents.kvmguest.runner import Env, context

    guest.configure()
    bad = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    ctx = context(Env(str(guest.cfg_path), "hostA", bad), guest.res, hv=LibvirtKVM(bad))
    r = ep.monitor(ctx)
    assert r.state is ResourceState.UNKNOWN and r.exit_code == 99
    assert not ep.online(ctx).ok


def test_migrate_refusals(guest: Guest) -> None:
    ctx = guest.configure(
        'DROpts = { ConfigureNetwork = 1, IPAddress = "192.0.2.5", Netmask = "24" }'
    )
    out = ep.migrate(ctx, "hostC")
    assert not out.ok and "disaster recovery" in out.message and "another site" in out.message
    assert not ep.migrate(ctx, "hostZ").ok
    assert "already on hostA" in ep.migrate(ctx, "hostA").message


def test_migrate_failure_leaves_guest_running(guest: Guest) -> None:
    guest.xml_path.write_text(guest_xml(guest.name))
    ctx = guest.configure(f'GuestConfigFilePath = "{guest.xml_path}"')
    assert ep.online(ctx).ok
    out = ep.migrate(ctx, "hostB")  # the test driver cannot migrate
    assert not out.ok
    assert ep.monitor(ctx).state is ResourceState.ONLINE


def test_ceinfo_heartbeat(guest: Guest) -> None:
    guest.xml_path.write_text(guest_xml(guest.name))
    base = f'GuestConfigFilePath = "{guest.xml_path}"\n'
    ctx = guest.configure(base + "CEInfo = { Enabled = 1, CESystem = hostB }")
    assert ep.online(ctx).ok
    assert ep.monitor(ctx).exit_code == 110  # hostB answers (test driver)
    ctx = guest.configure(base + "CEInfo = { Enabled = 1, CESystem = hostC }")
    r = ep.monitor(ctx)
    assert r.state is ResourceState.OFFLINE and "heartbeat" in r.detail
    ctx = guest.configure(base + "CEInfo = { Enabled = 1, CESystem = hostC, FaultOnHBLoss = 0 }")
    assert ep.monitor(ctx).state is ResourceState.UNKNOWN


def test_actions(guest: Guest) -> None:
    disk = guest.tmp / "disk.img"
    disk.write_bytes(b"\0" * 512)
    guest.xml_path.write_text(guest_xml(guest.name, disk=disk))
    ctx = guest.configure(f'GuestConfigFilePath = "{guest.xml_path}"\n SyncDir = "{guest.sync}"')
    assert ep.online(ctx).ok
    out = ep.action(ctx, "vmconfigsync", [])
    assert out.ok and (guest.sync / f"{guest.name}.xml").exists()
    out = ep.action(ctx, "guestmigrated", [])
    assert out.ok and "runs here" in out.output
    out = ep.action(ctx, "DevScan", [])
    assert out.ok and str(disk) in out.output
    disk.unlink()
    out = ep.action(ctx, "DevScan", [])
    assert not out.ok and f"{disk} is missing" in out.output
    out = ep.action(ctx, "reboot", [])
    assert not out.ok and "not supported" in out.message


def test_vmconfigsync_without_syncdir(guest: Guest) -> None:
    guest.xml_path.write_text(guest_xml(guest.name))
    ctx = guest.configure(f'GuestConfigFilePath = "{guest.xml_path}"')
    out = ep.action(ctx, "vmconfigsync", [])
    assert not out.ok and "SyncDir is not set" in out.message


def test_action_output_is_capped() -> None:
    assert len(ep._cap("x" * 10000).encode()) <= ep.ACTION_OUTPUT_LIMIT


# --- the one-shot CLI -------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KVMGUEST, *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_cli_monitor_exit_codes_and_json(guest: Guest) -> None:
    # test:///default is per process: the CLI sees the driver's own running "test" domain.
    cfg = guest.tmp / "cli.cf"
    cfg.write_text(
        "group g ( )\nKVMGuest t ( GuestName = test )\nKVMGuest n ( GuestName = nope )\n"
    )
    r = run_cli("--connect", URI, "monitor", "t", "-c", str(cfg))
    assert r.returncode == 110 and "ONLINE" in r.stdout
    r = run_cli("--connect", URI, "--json", "monitor", "n", "-c", str(cfg))
    assert r.returncode == 100
    assert json.loads(r.stdout) == {"ok": True, "state": "OFFLINE", "confidence": 0,
                                    "detail": "not defined on this host"}  # fmt: skip
    r = run_cli("--connect", URI, "monitor", "zzz", "-c", str(cfg))
    assert r.returncode == 99 and "no resource named 'zzz'" in r.stderr
    cfg.write_text("group g (\n")
    r = run_cli("--connect", URI, "monitor", "t", "-c", str(cfg))
    assert r.returncode == 99 and "cli.cf:1:9: unexpected end of file" in r.stderr


def test_cli_validate(tmp_path: Path) -> None:
    good = tmp_path / "good.cf"
    good.write_text("group g ( )\nKVMGuest v ( GuestName = v )\n")
    assert run_cli("validate", "-c", str(good)).returncode == 0
    bad = tmp_path / "bad.cf"
    bad.write_text("group g ( )\nKVMGuest v ( GuestName = v\n  DROpts = { Foo = 1 } )\n")
    r = run_cli("validate", "-c", str(bad))
    assert r.returncode == 1
    assert f"{bad}:3:3: KVMGuest v: DROpts has no key 'Foo'" in r.stderr


def test_cli_online_offline_clean_action(guest: Guest) -> None:
    guest.xml_path.write_text(guest_xml(guest.name))
    guest.configure(f'GuestConfigFilePath = "{guest.xml_path}"')
    args = ["--connect", URI, "--system", "hostA"]
    # Each process has its own test driver: online defines and starts within it.
    r = run_cli(*args, "online", guest.res, "-c", str(guest.cfg_path))
    assert r.returncode == 0, r.stderr
    r = run_cli(*args, "offline", guest.res, "-c", str(guest.cfg_path))
    assert r.returncode == 0 and "already offline" in r.stdout
    r = run_cli(*args, "clean", guest.res, "--reason", "7", "-c", str(guest.cfg_path))
    assert r.returncode == 2  # usage error: reason out of range
    r = run_cli(*args, "action", guest.res, "bogus", "-c", str(guest.cfg_path))
    assert r.returncode == 1 and "not supported" in r.stderr


def test_cli_types_prints_the_seed_type() -> None:
    r = run_cli("types")
    assert r.returncode == 0
    assert "static int MigrateTimeout = 300" in r.stdout
    assert "str DROpts{} = { ConfigureNetwork = 0" in r.stdout


def test_demo_runs() -> None:
    r = run_cli("demo")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "demo passed" in r.stdout


def test_libvirt_connection_error_classification() -> None:
    from kvmguest.agents.kvmguest.libvirt_conn import is_connection_error

    try:
        libvirt.open("qemu+unix:///system?socket=/nonexistent/sock")
    except libvirt.libvirtError as e:
        assert is_connection_error(e)
    conn = libvirt.open(URI)
    try:
        conn.lookupByName("definitely-not-there")
    except libvirt.libvirtError as e:
        assert not is_connection_error(e)


# --- disaster recovery (KVM): the payload CD-ROM ------------------------------------


def _cdrom_sources(dom: libvirt.virDomain) -> list[str]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    return [
        d.find("source").get("file", "")  # type: ignore[union-attr]
        for d in root.iter("disk")
        if d.get("device") == "cdrom" and d.find("source") is not None
    ]


def test_dr_online_attaches_payload_and_other_site_replaces_it(guest: Guest) -> None:
    from kvmguest.guest.iso import read_iso

    guest.xml_path.write_text(guest_xml(guest.name))
    dr = guest.tmp / "dr"
    extra = (
        f'GuestConfigFilePath = "{guest.xml_path}"\n'
        'DROpts = { ConfigureNetwork = 1, IPAddress = "192.0.2.10", Netmask = "255.255.255.0",'
        ' Gateway = "192.0.2.1", DNSServers = "192.0.2.53", DNSSearchPath = "east.example" }\n'
        'DROpts@hostC = { ConfigureNetwork = 1, IPAddress = "198.51.100.10", Netmask = 24,'
        ' Gateway = "198.51.100.1", DNSServers = "198.51.100.53", DNSSearchPath = "west.example" }'
    )
    ctx = guest.configure(extra)  # the cluster's DRPayloadDir is guest.tmp / "dr"
    out = ep.online(ctx)
    assert out.ok, out.message
    iso = dr / f"{guest.name}.iso"
    assert _cdrom_sources(guest.domain()) == [str(iso)]
    east = read_iso(iso)
    assert (east.ip_address, east.prefix_length, east.site) == ("192.0.2.10", 24, "east")
    assert east.dns_search == ("east.example",)
    assert ep.offline(ctx).ok
    # The same guest brought online at the other site: the image is rebuilt, not added.
    west_ctx = guest.configure(extra, system="hostC")
    assert ep.online(west_ctx).ok
    assert _cdrom_sources(guest.domain()) == [str(iso)]
    west = read_iso(iso)
    assert (west.ip_address, west.gateway, west.site) == ("198.51.100.10", "198.51.100.1", "west")
    assert sorted(p.name for p in dr.iterdir()) == [iso.name]  # nothing stale, no temp


def test_dr_payload_command_and_bad_dropts(tmp_path: Path) -> None:
    cfg = tmp_path / "main.cf"
    cfg.write_text(
        "system s1 ( Site = east )\ngroup g ( SystemList = { s1 = 0 } )\n"
        "KVMGuest v ( GuestName = v\n"
        '  DROpts = { ConfigureNetwork = 1, IPAddress = "192.0.2.7", Netmask = 24 } )\n'
    )
    out = tmp_path / "p.iso"
    r = run_cli("--system", "s1", "dr-payload", "v", "-c", str(cfg), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ip_address"] == "192.0.2.7" and out.exists()
    cfg.write_text(
        "group g ( )\nKVMGuest v ( GuestName = v\n"
        '  DROpts = { ConfigureNetwork = 1, IPAddress = "192.0.2.300", Netmask = 24 } )\n'
    )
    r = run_cli("validate", "-c", str(cfg))
    assert r.returncode == 1 and "IPAddress" in r.stderr and f"{cfg}:3:3" in r.stderr


def _race_first_calls(hv: LibvirtKVM, callers: int) -> list[object]:
    barrier = threading.Barrier(callers)
    got: list[object] = []

    def first_call() -> None:
        barrier.wait()
        got.append(hv.conn(Deadline(30)))

    threads = [threading.Thread(target=first_call) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return got


def test_concurrent_first_calls_share_one_connection() -> None:
    """The daemon's workers all start with no connection: they must end up with one, not
    one each (every extra one is a libvirtd client slot leaked until the daemon exits)."""
    for _ in range(5):  # the race needs a few tries to show without the lock
        hv = LibvirtKVM(URI, events=False)
        try:
            got = _race_first_calls(hv, 8)
            assert len(got) == 8
            assert len({id(c) for c in got}) == 1, "each racing caller opened its own connection"
        finally:
            hv.close()
