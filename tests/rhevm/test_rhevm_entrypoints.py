"""The KVMGuest entry points on RHV-M, in-process: runner.context -> RhevHypervisor ->
RhevmClient -> ovirtsdk4 -> the HTTPS simulator (real clock, short transitions)."""

from __future__ import annotations

import logging
import time
import traceback
from html import escape
from pathlib import Path
from urllib.parse import quote_plus

import pytest

from kvmguest.agents.kvmguest import entrypoints as ep
from kvmguest.agents.kvmguest.rhevm import RhevHypervisor
from kvmguest.guest.payload import PAYLOAD_FILENAME, from_json
from kvmguest.model.states import MonitorResult, ResourceState
from kvmguest.secrets import encrypt

from .conftest import PASSWORD, WRONG_PASSWORD, Rhev, leaks

ONLINE, OFFLINE = ResourceState.ONLINE, ResourceState.OFFLINE
IOFFLINE, UNKNOWN = ResourceState.INTENTIONAL_OFFLINE, ResourceState.UNKNOWN

# The seed's table, written out again (not read from kvmguest.model.states): a change
# there must break this test. (status, state, confidence, monitor exit code)
SEED_TABLE = [
    ("wait_for_launch", ONLINE, 10, 101),
    ("powering_up", ONLINE, 60, 106),
    ("up", ONLINE, 100, 110),
    ("powering_down", ONLINE, 40, 104),
    ("paused", ONLINE, 20, 102),
    ("down", OFFLINE, 0, 100),
    ("saving_state", IOFFLINE, 0, 200),
    ("suspended", IOFFLINE, 0, 200),
    ("restoring_state", ONLINE, 50, 105),
    ("migrating", IOFFLINE, 0, 200),
    ("reboot_in_progress", IOFFLINE, 0, 200),
    ("image_locked", UNKNOWN, 0, 99),
    ("unknown", UNKNOWN, 0, 99),
    # Not in the seed; the API has them (docs/states.md): UNKNOWN.
    ("not_responding", UNKNOWN, 0, 99),
    ("unassigned", UNKNOWN, 0, 99),
]

DROPTS = (
    'DROpts = { ConfigureNetwork = 1, IPAddress = "192.0.2.50", Netmask = 24, '
    'Gateway = "192.0.2.1", DNSServers = "192.0.2.53 192.0.2.54", '
    "DNSSearchPath = example.com, Device = eth0 }\n"
    '        DROpts@host3 = { ConfigureNetwork = 1, IPAddress = "198.51.100.50", '
    'Netmask = "255.255.255.0", Gateway = "198.51.100.1" }'
)


def monitor(ctx: ep.Context) -> tuple[ResourceState, int, int]:
    r = ep.monitor(ctx)
    return r.state, r.confidence, r.exit_code


# -- monitor -------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "state", "confidence", "code"), SEED_TABLE)
def test_monitor_follows_the_seed_table(
    rhev: Rhev, status: str, state: ResourceState, confidence: int, code: int
) -> None:
    ctx = rhev.configure("host1")
    rhev.sim.set_vm_status("vm1", status, host="host1")
    assert monitor(ctx) == (state, confidence, code)
    assert isinstance(ctx.hv, RhevHypervisor) and ctx.hv.kind == "rhev"


def test_a_vm_on_another_host_is_intentional_offline_here(rhev: Rhev) -> None:
    rhev.write()
    r = ep.monitor(rhev.ctx("host2"))
    assert (r.state, r.exit_code) == (IOFFLINE, 200)
    assert "host1" in r.detail and "host2" in r.detail
    # The same VM, seen from the system it runs on.
    assert monitor(rhev.ctx("host1")) == (ONLINE, 100, 110)


def test_host_is_mapped_by_rhevhost_address_and_unmapped_is_a_clear_unknown(rhev: Rhev) -> None:
    rhev.write()
    rhev.sim.set_vm_status("vm1", "up", host="host3")
    # System host3 has RHEVHost = 192.0.2.13: host3's address in RHV-M.
    assert monitor(rhev.ctx("host3")) == (ONLINE, 100, 110)
    r = ep.monitor(rhev.ctx("lost"))
    assert r.state is UNKNOWN
    assert "system lost" in r.detail and "cluster1" in r.detail and "RHEVHost" in r.detail


def test_a_vm_missing_from_rhvm_is_unknown_not_offline(rhev: Rhev) -> None:
    r = ep.monitor(rhev.configure("host1", vm="no-such-vm"))
    assert r.state is UNKNOWN and "no VM named 'no-such-vm'" in r.detail
    out = ep.online(rhev.ctx("host1"))
    assert not out.ok and "no VM named 'no-such-vm'" in out.message


def test_rhvm_down_is_unknown(rhev: Rhev) -> None:
    ctx = rhev.configure("host1")
    assert monitor(ctx)[0] is ONLINE
    rhev.sim.stop()
    r = ep.monitor(ctx)
    assert (r.state, r.exit_code) == (UNKNOWN, 99)
    assert "RHV-M" in r.detail


def test_http_500_is_unknown(rhev: Rhev) -> None:
    ctx = rhev.configure("host1")
    assert monitor(ctx)[0] is ONLINE
    rhev.sim.inject_error(500, path="/api/vms", count=None)
    r = ep.monitor(ctx)
    assert r.state is UNKNOWN and "RHV-M failed to answer" in r.detail


def test_monitor_returns_within_its_deadline_when_rhvm_is_slow(rhev: Rhev) -> None:
    ctx = rhev.configure("host1")  # MonitorTimeout = 3
    assert monitor(ctx)[0] is ONLINE
    rhev.sim.inject_latency(20, path="/api/vms", count=None)
    start = time.monotonic()
    r = ep.monitor(ctx)
    elapsed = time.monotonic() - start
    assert r.state is UNKNOWN
    assert "did not answer within" in r.detail
    assert 2.5 < elapsed < 10, elapsed  # at the 3 s deadline, not the server's 20 s


def test_a_hung_sso_login_is_bounded_too(rhev: Rhev) -> None:
    ctx = rhev.configure("host1")
    rhev.sim.inject_latency(20, path="/sso/", count=None)
    start = time.monotonic()
    r = ep.monitor(ctx)
    assert r.state is UNKNOWN
    assert time.monotonic() - start < 10  # the 3 s deadline, not the server's 20 s


def test_online_returns_within_its_deadline_when_rhvm_is_slow(rhev: Rhev) -> None:
    ctx = rhev.configure("host2", vm="vm2")  # OnlineTimeout = 5
    assert monitor(ctx)[0] is OFFLINE
    rhev.sim.inject_latency(20, path="/api/vms", count=None)
    start = time.monotonic()
    out = ep.online(ctx)
    elapsed = time.monotonic() - start
    assert not out.ok
    assert "online of res1" in out.message and "RHV-M" in out.message
    assert "did not answer within" in out.message
    assert elapsed < 12, elapsed  # the 5 s deadline, not the server's 20 s
    rhev.sim.clear_faults()
    assert rhev.sim.vm_status("vm2") == "down"


def test_expired_token_works_after_one_relogin(rhev: Rhev) -> None:
    ctx = rhev.configure("host1")
    assert monitor(ctx)[0] is ONLINE
    logins = sum(1 for q in rhev.sim.requests() if q.path.endswith("/sso/oauth/token"))
    rhev.sim.expire_all_tokens()
    assert monitor(ctx) == (ONLINE, 100, 110)
    requests = rhev.sim.requests()
    assert sum(1 for q in requests if q.path.endswith("/sso/oauth/token")) == logins + 1
    assert any(q.status == 401 for q in requests)


def test_wrong_password_is_a_clear_auth_error(rhev: Rhev) -> None:
    ctx = rhev.configure("host1", password="not-the-password")
    r = ep.monitor(ctx)
    assert r.state is UNKNOWN
    assert "refused user admin@internal" in r.detail and "kvmguest encrypt" in r.detail
    out = ep.online(rhev.ctx("host1"))
    assert not out.ok and "refused user admin@internal" in out.message


def test_password_encrypted_with_another_key_or_missing_key(rhev: Rhev, tmp_path: Path) -> None:
    # The key named by SecretKeyFile does not exist (yet).
    ctx = rhev.configure("host1", ciphertext=encrypt(PASSWORD, tmp_path / "other.key"))
    out = ep.online(ctx)
    assert not out.ok and "does not exist" in out.message and str(rhev.key) in out.message
    assert "RHEVMInfo.Password of res1" in out.message
    # It exists, but the password was encrypted with another key.
    rhev.ciphertext()
    assert rhev.key.exists()
    r = ep.monitor(rhev.ctx("host1"))
    assert r.state is UNKNOWN
    assert "RHEVMInfo.Password of res1" in r.detail and "does not match the key" in r.detail
    assert rhev.sim.vm_status("vm1") == "up"


def test_key_file_from_the_environment(
    rhev: Rhev, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_key = tmp_path / "env.key"
    cfg = rhev.write(ciphertext=encrypt(PASSWORD, env_key))
    cfg.write_text(cfg.read_text().replace(f'SecretKeyFile = "{rhev.key}"', ""))
    monkeypatch.setenv("KVMGUEST_KEY_FILE", str(env_key))
    assert monitor(rhev.ctx("host1")) == (ONLINE, 100, 110)


@pytest.mark.parametrize("mode", ["wrong_ca", "wrong_host"])
def test_a_certificate_that_does_not_verify_is_refused(rhev: Rhev, mode: str) -> None:
    ctx = rhev.configure("host1")
    rhev.sim.set_certificate_mode(mode)
    r = ep.monitor(ctx)
    assert r.state is UNKNOWN and "TLS" in r.detail and str(rhev.ca) in r.detail


def test_ca_from_the_environment_else_the_system_store(
    rhev: Rhev, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KVMGUEST_RHEVM_CAFILE", raising=False)
    rhev.write(ca="")
    # The simulator's CA is in no system store: refused, never "insecure".
    r = ep.monitor(rhev.ctx("host1"))
    assert r.state is UNKNOWN and "system trust store" in r.detail
    monkeypatch.setenv("KVMGUEST_RHEVM_CAFILE", str(rhev.ca))
    assert monitor(rhev.ctx("host1")) == (ONLINE, 100, 110)


# -- online / offline / clean --------------------------------------------------------------


def test_online_starts_on_this_systems_host_without_payload(rhev: Rhev) -> None:
    ctx = rhev.configure("host2", vm="vm2")
    assert monitor(ctx)[0] is OFFLINE
    out = ep.online(ctx)
    assert out.ok, out.message
    assert (rhev.sim.vm_status("vm2"), rhev.sim.vm_host("vm2")) == ("up", "host2")
    assert rhev.sim.vm_payload_files("vm2") == {}
    assert monitor(ctx) == (ONLINE, 100, 110)
    again = ep.online(ctx)
    assert again.ok and "already online" in again.message


def test_online_with_dr_payload_for_this_systems_site(rhev: Rhev) -> None:
    ctx = rhev.configure("host2", vm="vm2", extra=DROPTS)
    out = ep.online(ctx)
    assert out.ok, out.message
    assert "DR payload for site east" in out.output
    files = rhev.sim.vm_payload_files("vm2")
    assert list(files) == [PAYLOAD_FILENAME]
    payload = from_json(files[PAYLOAD_FILENAME])
    assert (payload.site, payload.ip_address, payload.prefix_length) == ("east", "192.0.2.50", 24)
    assert (payload.gateway, payload.device) == ("192.0.2.1", "eth0")
    assert payload.dns_servers == ("192.0.2.53", "192.0.2.54")
    assert payload.dns_search == ("example.com",)

    # Failed over to the other site: that site's parameters replace the payload.
    assert ep.offline(ctx).ok
    west = rhev.ctx("host3")
    out = ep.online(west)
    assert out.ok, out.message
    assert rhev.sim.vm_host("vm2") == "host3"
    payload = from_json(rhev.sim.vm_payload_files("vm2")[PAYLOAD_FILENAME])
    assert (payload.site, payload.ip_address, payload.gateway) == (
        "west",
        "198.51.100.50",
        "198.51.100.1",
    )
    assert payload.dns_servers == ()


def test_online_refuses_a_vm_running_on_another_host(rhev: Rhev) -> None:
    ctx = rhev.configure("host2")
    out = ep.online(ctx)
    assert not out.ok and "not starting it a second time" in out.message
    assert (rhev.sim.vm_status("vm1"), rhev.sim.vm_host("vm1")) == ("up", "host1")


@pytest.mark.parametrize("status", ["image_locked", "unassigned", "not_responding"])
def test_online_refuses_other_unknown_states(rhev: Rhev, status: str) -> None:
    ctx = rhev.configure("host2", vm="vm2", fencing=1)
    rhev.sim.set_vm_status("vm2", status)
    out = ep.online(ctx)
    assert not out.ok and "state is unknown" in out.message
    assert rhev.sim.vm_status("vm2") == status


def test_online_refuses_a_host_in_maintenance(rhev: Rhev) -> None:
    rhev.sim.set_host_status("host2", "maintenance")
    out = ep.online(rhev.configure("host2", vm="vm2"))
    assert not out.ok and "host2 is maintenance" in out.message
    assert rhev.sim.vm_status("vm2") == "down"


def test_manual_fencing_confirms_the_lost_host_then_starts_here(rhev: Rhev) -> None:
    ctx = rhev.configure("host2", fencing=1)
    rhev.sim.set_host_status("host1", "non_responsive")
    assert rhev.sim.vm_status("vm1") == "unknown"
    out = ep.online(ctx)
    assert out.ok, out.message
    assert "confirmed RHV host host1 as rebooted" in out.output
    assert rhev.sim.host_fence_confirmed("host1")
    assert (rhev.sim.vm_status("vm1"), rhev.sim.vm_host("vm1")) == ("up", "host2")
    fences = [q for q in rhev.sim.requests() if q.path.endswith("/fence")]
    assert len(fences) == 1 and "manual" in fences[0].body


def test_without_manual_fencing_online_says_what_to_do(rhev: Rhev) -> None:
    ctx = rhev.configure("host2", fencing=0)
    rhev.sim.set_host_status("host1", "non_responsive")
    out = ep.online(ctx)
    assert not out.ok
    assert "Host has been rebooted" in out.message
    assert "UseManualRHEVMFencing = 1" in out.message
    assert not rhev.sim.host_fence_confirmed("host1")
    assert rhev.sim.vm_status("vm1") == "unknown"


def test_manual_fencing_never_confirms_this_systems_own_host(rhev: Rhev) -> None:
    ctx = rhev.configure("host1", fencing=1)
    rhev.sim.set_host_status("host1", "non_responsive")
    out = ep.online(ctx)
    assert not out.ok and "own RHV host host1" in out.message
    assert not rhev.sim.host_fence_confirmed("host1")


def test_offline_shuts_down_and_a_stubborn_guest_fails_it(rhev: Rhev) -> None:
    ctx = rhev.configure("host1", extra="DelayAfterGuestOffline = 1")
    out = ep.offline(ctx)
    assert out.ok, out.message
    assert rhev.sim.vm_status("vm1") == "down"
    assert ep.offline(ctx).ok  # already offline
    assert ep.online(ctx).ok
    rhev.sim.set_vm_stubborn("vm1")
    out = ep.offline(ctx)
    assert not out.ok and "DelayAfterGuestOffline" in out.message
    out = ep.clean(ctx, 1)
    assert out.ok, out.message
    assert rhev.sim.vm_status("vm1") == "down"


def test_offline_and_clean_leave_a_vm_on_another_host_alone(rhev: Rhev) -> None:
    ctx = rhev.configure("host2")
    out = ep.offline(ctx)
    assert out.ok and "already offline" in out.message
    out = ep.clean(ctx, 4)
    assert out.ok, out.message
    assert (rhev.sim.vm_status("vm1"), rhev.sim.vm_host("vm1")) == ("up", "host1")


def test_clean_cannot_stop_a_vm_whose_host_is_lost(rhev: Rhev) -> None:
    ctx = rhev.configure("host1")
    rhev.sim.set_host_status("host1", "non_responsive")
    out = ep.clean(ctx, 4)
    assert not out.ok and "cannot stop vm1" in out.message


# -- migrate -------------------------------------------------------------------------------


def test_migration_to_the_other_host(rhev: Rhev) -> None:
    ctx = rhev.configure("host1")
    seen: list[str] = []
    ctx.progress = seen.append
    out = ep.migrate(ctx, "host2")
    assert out.ok, out.message
    assert (rhev.sim.vm_status("vm1"), rhev.sim.vm_host("vm1")) == ("up", "host2")
    assert seen and "migrating to host2" in seen[0]
    assert monitor(ctx)[0] is IOFFLINE
    assert monitor(rhev.ctx("host2")) == (ONLINE, 100, 110)


def test_pinned_vm_migration_is_refused(rhev: Rhev) -> None:
    ctx = rhev.configure("host1")
    rhev.sim.set_vm_affinity("vm1", "pinned", ["host1"])
    out = ep.migrate(ctx, "host2")
    assert not out.ok and "pinned" in out.message
    assert (rhev.sim.vm_status("vm1"), rhev.sim.vm_host("vm1")) == ("up", "host1")
    assert not [q for q in rhev.sim.requests() if q.path.endswith("/migrate")]


def test_migration_refused_by_rhvm_is_reported(rhev: Rhev) -> None:
    ctx = rhev.configure("host1")
    # Migratable, but only host1 may run it: RHV-M answers 409.
    rhev.sim.set_vm_affinity("vm1", "migratable", ["host1"])
    out = ep.migrate(ctx, "host2")
    assert not out.ok and "RHV-M refused to migrate vm1 to host2" in out.message
    assert rhev.sim.vm_host("vm1") == "host1"


def test_dr_guest_is_not_migrated_across_sites(rhev: Rhev) -> None:
    ctx = rhev.configure("host1", extra=DROPTS)
    out = ep.migrate(ctx, "host3")
    assert not out.ok and "never migrated across sites" in out.message
    assert rhev.sim.vm_host("vm1") == "host1"


def test_migrating_a_vm_that_runs_elsewhere_is_refused(rhev: Rhev) -> None:
    out = ep.migrate(rhev.configure("host2"), "host3")
    assert not out.ok and "runs on RHV host host1" in out.message


# -- actions and heartbeat ----------------------------------------------------------------


def test_devscan_reports_inactive_disks(rhev: Rhev) -> None:
    ctx = rhev.configure("host1")
    out = ep.action(ctx, "DevScan", [])
    assert out.ok and "vm1_disk0" in out.output
    rhev.sim.add_disk("vm1", "vm1_data", active=False)
    out = ep.action(ctx, "DevScan", [])
    assert not out.ok
    assert "missing: disk vm1_data: attached but not active" in out.output


def test_guestmigrated_reports_where_rhvm_runs_it(rhev: Rhev) -> None:
    ctx = rhev.configure("host1")
    rhev.sim.set_vm_status("vm1", "up", host="host3")  # moved behind the agent's back
    out = ep.action(ctx, "guestmigrated", [])
    assert out.ok
    assert "on RHV host host3 (system host3)" in out.output
    assert "here (host1): INTENTIONAL OFFLINE" in out.output


def test_vmconfigsync_refuses_the_definition_lives_in_rhvm(
    rhev: Rhev, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = rhev.configure("host1", extra=f'SyncDir = "{tmp_path / "sync"}"')
    out = ep.action(ctx, "vmconfigsync", [])
    assert not out.ok and "no definition" in out.message
    assert any("RHV-M keeps the definition" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "sync").exists()


def test_heartbeat_is_the_ce_systems_host_status(rhev: Rhev) -> None:
    ce = "CEInfo = { Enabled = 1, CESystem = host2, FaultOnHBLoss = 1 }"
    ctx = rhev.configure("host1", extra=ce)
    assert monitor(ctx) == (ONLINE, 100, 110)
    rhev.sim.set_host_status("host2", "non_responsive")
    r = ep.monitor(ctx)
    assert r.state is OFFLINE and "heartbeat from control entity host2 lost" in r.detail
    ctx = rhev.configure("host1", extra=ce.replace("FaultOnHBLoss = 1", "FaultOnHBLoss = 0"))
    assert ep.monitor(ctx).state is UNKNOWN


# -- the password goes nowhere -------------------------------------------------------------


def test_the_scan_can_see_a_leak() -> None:
    assert leaks([f"x {quote_plus(PASSWORD)} y"]) and leaks([escape(WRONG_PASSWORD)])
    assert not leaks(["nothing to see"])


def test_no_clear_password_in_any_log_outcome_or_error(
    rhev: Rhev, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []

    def note(x: ep.Outcome | MonitorResult) -> None:
        texts.append(repr(x))

    rhev.sim.set_vm_affinity("vm1", "pinned", ["host1"])
    sync = rhev.tmp / "sync"
    ctx = rhev.configure("host1", extra=f'{DROPTS}\n SyncDir = "{sync}"')
    texts.append(repr(ctx.hv))
    note(ep.monitor(ctx))
    note(ep.migrate(ctx, "host2"))
    note(ep.action(ctx, "DevScan", []))
    note(ep.action(ctx, "guestmigrated", []))
    note(ep.offline(ctx))
    note(ep.online(ctx))
    rhev.sim.expire_all_tokens()
    note(ep.monitor(ctx))
    rhev.sim.inject_error(500, path="/api/vms")
    note(ep.clean(ctx, 4))
    rhev.sim.set_host_status("host1", "non_responsive")
    note(ep.online(rhev.configure("host2", fencing=0)))
    note(ep.online(rhev.configure("host2", fencing=1)))
    rhev.sim.inject_latency(10, path="/api/vms", count=1)
    note(ep.monitor(ctx))
    rhev.sim.set_certificate_mode("wrong_ca")
    note(ep.monitor(rhev.configure("host2")))
    rhev.sim.set_certificate_mode("good")
    note(ep.monitor(rhev.configure("host2", password=WRONG_PASSWORD)))
    note(ep.online(rhev.ctx("host2")))
    bad_key = rhev.configure("host2", ciphertext=encrypt(PASSWORD, rhev.tmp / "k2"))
    note(ep.monitor(bad_key))
    try:
        bad_key.hv.start(bad_key.params, ctx.deadline("Online"))
    except Exception as e:  # the traceback an operator would see
        texts.append("".join(traceback.format_exception(e)))
    rhev.close()

    records = [r for r in caplog.records if not r.name.startswith("kvmguest.testing")]
    for record in records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append("".join(traceback.format_exception(*record.exc_info)))
    assert len(texts) > 20 and any("refused user" in t for t in texts)
    assert any("RHV-M keeps" in t for t in texts)
    assert any("confirming RHV host host1" in t for t in texts)
    assert leaks(texts) == []
