"""RhevmClient against the simulated RHV-M, through the official ovirtsdk4."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from kvmguest.agents.kvmguest.rhevm_client import (
    RhevmAuthError,
    RhevmClient,
    RhevmConfigError,
    RhevmConflict,
    RhevmError,
    RhevmNotFound,
    RhevmTlsError,
    RhevmUnreachable,
    normalize_url,
)
from kvmguest.testing.ovirt_sim import ManualClock, OvirtSimulator, TestPki

SEED_STATUSES = [
    "wait_for_launch",
    "powering_up",
    "up",
    "powering_down",
    "paused",
    "down",
    "saving_state",
    "suspended",
    "restoring_state",
    "migrating",
    "reboot_in_progress",
    "image_locked",
    "unknown",
    # Not in the seed's table, but the API reports them (DESIGN.md §4).
    "not_responding",
    "unassigned",
]


# -- configuration -------------------------------------------------------------------------


def test_http_url_is_refused_before_any_network_use(password: str) -> None:
    with pytest.raises(RhevmConfigError, match="https") as info:
        RhevmClient("http://rhevm.example.com", "admin@internal", password, None, 5)
    assert isinstance(info.value, ValueError)


def test_url_gets_the_api_path_and_keeps_an_explicit_one() -> None:
    assert normalize_url("https://rhevm.example.com:443") == (
        "https://rhevm.example.com:443/ovirt-engine/api"
    )
    assert normalize_url("https://h/ovirt-engine/api/") == "https://h/ovirt-engine/api"


def test_url_with_credentials_is_refused_without_echoing_them(password: str) -> None:
    with pytest.raises(RhevmConfigError) as info:
        normalize_url(f"https://admin:{password}@rhevm.example.com")
    assert password not in str(info.value)


def test_without_the_sdk_the_module_imports_and_the_client_says_why() -> None:
    code = (
        "import sys; sys.modules['ovirtsdk4'] = None\n"
        "from kvmguest.agents.kvmguest import rhevm_client as m\n"
        "assert not m.HAVE_SDK\n"
        "try:\n"
        "    m.RhevmClient('https://h', 'u', 'p', None, 5)\n"
        "except m.RhevmConfigError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ovirt-engine-sdk-python" in out.stdout


def test_missing_ca_file_is_a_config_error(password: str) -> None:
    with pytest.raises(RhevmConfigError, match="CA file"):
        RhevmClient("https://h", "u", password, "/nonexistent/ca.pem", 5)


# -- reading state -------------------------------------------------------------------------


@pytest.mark.parametrize("status", SEED_STATUSES)
def test_every_status_is_read_as_the_api_says(
    sim: OvirtSimulator, client: RhevmClient, status: str
) -> None:
    sim.set_vm_status("vm1", status)
    assert client.vm_status("vm1") == status


def test_vm_by_name_reports_host_cluster_and_placement(
    sim: OvirtSimulator, client: RhevmClient
) -> None:
    sim.set_vm_affinity("vm1", "pinned", ["host1"])
    vm = client.vm_by_name("vm1")
    host1 = client.host_by_name_or_address("cluster1", "host1")
    assert (vm.name, vm.status, vm.host_id, vm.affinity) == ("vm1", "up", host1.id, "pinned")
    assert vm.placement_host_ids == (host1.id,)
    assert client.vm_migratable("vm1") is False
    assert client.vm_migratable("vm2") is True


def test_unknown_vm_is_not_found(client: RhevmClient) -> None:
    with pytest.raises(RhevmNotFound):
        client.vm_status("no-such-vm")


def test_host_is_found_by_name_or_by_address(client: RhevmClient) -> None:
    by_name = client.host_by_name_or_address("cluster1", "host2")
    by_address = client.host_by_name_or_address("cluster1", "192.0.2.12")
    assert by_name == by_address
    assert (by_name.name, by_name.status) == ("host2", "up")
    with pytest.raises(RhevmNotFound):
        client.host_by_name_or_address("cluster1", "host9")
    with pytest.raises(RhevmNotFound):
        client.host_by_name_or_address("other-cluster", "host2")


def test_vm_host_names_the_host_or_none(sim: OvirtSimulator, client: RhevmClient) -> None:
    assert client.vm_host("vm1") == "host1"
    assert client.vm_host("vm2") is None


def test_vm_disks_reports_attachments_and_activity(
    sim: OvirtSimulator, client: RhevmClient
) -> None:
    sim.add_disk("vm1", "vm1_data", active=False)
    disks = {d.name: d for d in client.vm_disks("vm1")}
    assert set(disks) == {"vm1_disk0", "vm1_data"}
    assert disks["vm1_disk0"].active and disks["vm1_disk0"].bootable
    assert not disks["vm1_data"].active
    assert disks["vm1_data"].status == "ok"


# -- transitions ---------------------------------------------------------------------------


def test_start_goes_through_launch_and_powering_up_to_up(
    sim: OvirtSimulator, client: RhevmClient
) -> None:
    client.start_vm("vm2")
    assert client.vm_status("vm2") == "wait_for_launch"
    sim.advance(sim.durations.launch)
    assert client.vm_status("vm2") == "powering_up"
    sim.advance(sim.durations.power_up)
    assert client.vm_status("vm2") == "up"
    assert client.vm_host("vm2") is not None


def test_start_on_a_given_host(sim: OvirtSimulator, client: RhevmClient) -> None:
    host1 = client.host_by_name_or_address("cluster1", "host1")
    client.start_vm("vm2", host1.id)
    assert client.vm_host("vm2") == "host1"


def test_starting_a_running_vm_is_a_conflict(client: RhevmClient) -> None:
    with pytest.raises(RhevmConflict) as info:
        client.start_vm("vm1")
    assert info.value.code == 409


def test_shutdown_powers_down_then_down(sim: OvirtSimulator, client: RhevmClient) -> None:
    client.shutdown_vm("vm1")
    assert client.vm_status("vm1") == "powering_down"
    sim.advance(sim.durations.power_down)
    assert client.vm_status("vm1") == "down"
    assert client.vm_host("vm1") is None


def test_a_stubborn_guest_ignores_shutdown(sim: OvirtSimulator, client: RhevmClient) -> None:
    sim.set_vm_stubborn("vm1")
    client.shutdown_vm("vm1")
    assert client.vm_status("vm1") == "powering_down"
    sim.advance(sim.durations.power_down)
    assert client.vm_status("vm1") == "up"
    client.stop_vm("vm1")
    assert client.vm_status("vm1") == "down"


def test_stop_is_immediate(client: RhevmClient) -> None:
    client.stop_vm("vm1")
    assert client.vm_status("vm1") == "down"
    with pytest.raises(RhevmConflict):
        client.stop_vm("vm1")


def test_migrate_to_a_host_then_up_there(sim: OvirtSimulator, client: RhevmClient) -> None:
    host2 = client.host_by_name_or_address("cluster1", "host2")
    client.migrate_vm("vm1", host2.id)
    assert client.vm_status("vm1") == "migrating"
    sim.advance(sim.durations.migrate)
    assert client.vm_status("vm1") == "up"
    assert client.vm_host("vm1") == "host2"


def test_migrating_a_pinned_vm_is_a_conflict(sim: OvirtSimulator, client: RhevmClient) -> None:
    sim.set_vm_affinity("vm1", "pinned")
    host2 = client.host_by_name_or_address("cluster1", "host2")
    with pytest.raises(RhevmConflict) as info:
        client.migrate_vm("vm1", host2.id)
    assert info.value.code == 409
    assert info.value.fault_detail is not None and "pinned" in info.value.fault_detail
    assert sim.vm_status("vm1") == "up" and sim.vm_host("vm1") == "host1"


def test_a_user_migratable_vm_is_migrated_with_force(
    sim: OvirtSimulator, client: RhevmClient
) -> None:
    sim.set_vm_affinity("vm1", "user_migratable")
    assert client.vm_migratable("vm1") is True
    client.migrate_vm("vm1", None)
    assert client.vm_status("vm1") == "migrating"
    (migrate,) = [r for r in sim.requests() if r.path.endswith("/migrate")]
    assert "<force>true</force>" in migrate.body


def test_cdrom_payload_is_put_while_down(sim: OvirtSimulator, client: RhevmClient) -> None:
    files = {"dr.json": '{"ip": "10.0.0.5"}\n', "README": "kvmguest DR <payload> & co"}
    client.set_cdrom_payload("vm2", files)
    assert sim.vm_payload_files("vm2") == files
    (put,) = [r for r in sim.requests() if r.method == "PUT"]
    assert "<type>cdrom</type>" in put.body


def test_cdrom_payload_is_refused_while_up(sim: OvirtSimulator, client: RhevmClient) -> None:
    with pytest.raises(RhevmConflict):
        client.set_cdrom_payload("vm1", {"dr.json": "{}"})
    assert sim.vm_payload_files("vm1") == {}


def test_manual_fence_lets_the_vm_start_elsewhere(sim: OvirtSimulator, client: RhevmClient) -> None:
    host1 = client.host_by_name_or_address("cluster1", "host1")
    host2 = client.host_by_name_or_address("cluster1", "host2")
    with pytest.raises(RhevmConflict):
        client.fence_manual(host1.id)  # host1 is up: nothing to confirm
    sim.set_host_status("host1", "non_responsive")
    assert client.vm_status("vm1") == "unknown"
    with pytest.raises(RhevmConflict):
        client.stop_vm("vm1")  # nobody can kill a VM on a host that does not answer
    client.fence_manual(host1.id)
    assert client.vm_status("vm1") == "down"
    assert sim.host_fence_confirmed("host1")
    client.start_vm("vm1", host2.id)
    assert client.vm_host("vm1") == "host2"


# -- authentication ------------------------------------------------------------------------


def test_expired_tokens_mean_one_relogin_and_a_retry(
    sim: OvirtSimulator, client: RhevmClient
) -> None:
    assert client.vm_status("vm1") == "up"
    sim.clear_requests()
    sim.expire_all_tokens()
    assert client.vm_status("vm1") == "up"
    seen = [(r.method, r.path.rsplit("/", 1)[-1], r.status) for r in sim.requests()]
    assert seen == [("GET", "vms", 401), ("POST", "token", 200), ("GET", "vms", 200)]


def test_a_token_past_its_lifetime_is_renewed(
    pki: TestPki, clock: ManualClock, password: str
) -> None:
    with OvirtSimulator(clock=clock, password=password, pki=pki, token_lifetime=60) as sim:
        sim.seed_demo()
        with RhevmClient(sim.base_url, sim.user, password, sim.ca_file, 10) as client:
            assert client.vm_status("vm1") == "up"
            sim.advance(61)
            assert sim.active_tokens() == 0
            assert client.vm_status("vm1") == "up"
            logins = [r for r in sim.requests() if r.path.endswith("/token")]
            assert len(logins) == 2
            assert [r.status for r in sim.requests() if r.status == 401] == [401]


def test_wrong_password_is_an_auth_error(sim: OvirtSimulator) -> None:
    with (
        RhevmClient(sim.base_url, sim.user, "not-the-password", sim.ca_file, 10) as c,
        pytest.raises(RhevmAuthError),
    ):
        c.vm_status("vm1")


def test_close_revokes_the_token(sim: OvirtSimulator, client: RhevmClient) -> None:
    client.vm_status("vm1")
    assert sim.active_tokens() == 1
    client.close()
    assert sim.active_tokens() == 0
    assert sim.requests()[-1].path == "/ovirt-engine/services/sso-logout"
    client.close()  # twice is harmless


# -- failures of the manager or of the network ---------------------------------------------


def test_simulator_down_is_unreachable(sim: OvirtSimulator, client: RhevmClient) -> None:
    client.vm_status("vm1")
    sim.stop()
    started = time.monotonic()
    with pytest.raises(RhevmUnreachable):
        client.vm_status("vm1")
    assert time.monotonic() - started < client.timeout


def test_nothing_listening_is_unreachable(sim: OvirtSimulator, password: str) -> None:
    url = sim.base_url
    sim.stop()
    with (
        RhevmClient(url, sim.user, password, None, 5) as c,
        pytest.raises(RhevmUnreachable) as info,
    ):
        c.vm_status("vm1")
    assert info.value.curl_code == 7  # CURLE_COULDNT_CONNECT


@pytest.mark.parametrize("path", ["/api/vms", "/sso/oauth/token"])
def test_latency_past_the_timeout_is_unreachable_within_the_timeout(
    sim: OvirtSimulator, path: str, password: str
) -> None:
    sim.inject_latency(30, path=path)
    with RhevmClient(sim.base_url, sim.user, password, sim.ca_file, timeout=1.0) as c:
        started = time.monotonic()
        with pytest.raises(RhevmUnreachable):
            c.vm_status("vm1")
        elapsed = time.monotonic() - started
    # Gave up at its deadline, not when the server (30 s) answered; slack for a busy host.
    assert 0.9 <= elapsed < 10


def test_a_call_after_a_timeout_uses_a_fresh_connection(sim: OvirtSimulator, password: str) -> None:
    rule = sim.inject_latency(30, path="/api/vms")
    with (
        RhevmClient(sim.base_url, sim.user, password, sim.ca_file, timeout=1.0) as c,
        pytest.raises(RhevmUnreachable),
    ):
        c.vm_status("vm1")
        sim.remove_fault(rule)
        assert c.vm_status("vm1") == "up"


def test_a_per_call_timeout_overrides_the_default(sim: OvirtSimulator, client: RhevmClient) -> None:
    sim.inject_latency(30, path="/api/vms")
    started = time.monotonic()
    with pytest.raises(RhevmUnreachable):
        client.vm_status("vm1", timeout=0.5)
    assert time.monotonic() - started < 5  # neither the default 10 s nor the server's 30 s


def test_http_500_is_unreachable_and_passes(sim: OvirtSimulator, client: RhevmClient) -> None:
    sim.inject_error(500, path="/api/vms", count=1)
    with pytest.raises(RhevmUnreachable) as info:
        client.vm_status("vm1")
    assert info.value.code == 500
    assert client.vm_status("vm1") == "up"


def test_connection_reset_is_unreachable(sim: OvirtSimulator, client: RhevmClient) -> None:
    client.vm_status("vm1")
    # Every time: curl itself retries once a kept-alive connection that died.
    rule = sim.inject_reset(path="/api/vms", count=None)
    with pytest.raises(RhevmUnreachable) as info:
        client.vm_status("vm1")
    assert info.value.code is None and info.value.curl_code is not None
    sim.remove_fault(rule)
    assert client.vm_status("vm1") == "up"


@pytest.mark.parametrize("mode", ["wrong_ca", "wrong_host"])
def test_a_certificate_that_does_not_verify_is_refused(
    sim: OvirtSimulator, mode: str, password: str
) -> None:
    sim.set_certificate_mode(mode)
    with (
        RhevmClient(sim.base_url, sim.user, password, sim.ca_file, 5) as c,
        pytest.raises(RhevmTlsError) as info,
    ):
        c.vm_status("vm1")
    assert isinstance(info.value, RhevmUnreachable)
    # Refused before anything was sent: the server never saw a login.
    assert not [r for r in sim.requests() if r.path.endswith("/token")]


def test_a_certificate_change_after_login_is_refused(
    sim: OvirtSimulator, client: RhevmClient
) -> None:
    client.vm_status("vm1")
    sim.set_certificate_mode("wrong_ca")
    with pytest.raises(RhevmTlsError):
        client.vm_status("vm1")


def test_without_a_ca_file_the_test_ca_is_not_trusted(sim: OvirtSimulator, password: str) -> None:
    with RhevmClient(sim.base_url, sim.user, password, None, 5) as c, pytest.raises(RhevmTlsError):
        c.vm_status("vm1")


def test_every_error_is_a_rhevm_error() -> None:
    for cls in (RhevmUnreachable, RhevmTlsError, RhevmAuthError, RhevmNotFound, RhevmConflict):
        assert issubclass(cls, RhevmError)
