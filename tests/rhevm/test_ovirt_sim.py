"""The simulator itself: the wire format the engine uses, and its state machine."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import pytest

from kvmguest.agents.kvmguest.rhevm_client import RhevmClient
from kvmguest.testing.ovirt_sim import ApiFault, Durations, ManualClock, OvirtSimulator
from kvmguest.testing.ovirt_sim.model import Engine, parse_search


def _request(
    sim: OvirtSimulator,
    method: str,
    path: str,
    body: str = "",
    headers: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    ctx = ssl.create_default_context(cafile=sim.ca_file)
    conn = http.client.HTTPSConnection("127.0.0.1", sim.port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read().decode()
    finally:
        conn.close()


def _login(
    sim: OvirtSimulator, password: str, scope: str = "ovirt-app-api"
) -> tuple[int, dict[str, str]]:
    form = {"grant_type": "password", "username": sim.user, "password": password, "scope": scope}
    status, ctype, body = _request(
        sim,
        "POST",
        "/ovirt-engine/sso/oauth/token",
        urlencode(form),
        {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert ctype.startswith("application/json")
    return status, json.loads(body)


# -- SSO and authentication, as the engine does them ----------------------------------------


def test_login_returns_a_bearer_token(sim: OvirtSimulator, password: str) -> None:
    status, data = _login(sim, password)
    assert status == 200
    assert data["token_type"] == "bearer" and data["scope"] == "ovirt-app-api"
    assert int(data["exp"]) > time.time() * 1000
    status, _, body = _request(
        sim,
        "GET",
        "/ovirt-engine/api/vms",
        headers={"Authorization": f"Bearer {data['access_token']}"},
    )
    assert status == 200 and "<vms>" in body


def test_refused_login_is_the_engines_json_error(sim: OvirtSimulator) -> None:
    status, data = _login(sim, "wrong")
    assert status == 400
    assert data["error_code"] == "access_denied" and "Cannot authenticate" in data["error"]
    # Outside the REST API scope the engine answers in the OAuth form.
    status, data = _login(sim, "wrong", scope="ovirt-app-admin")
    assert status == 400
    assert data["error"] == "access_denied" and "error_description" in data


def test_login_needs_the_json_accept_header(sim: OvirtSimulator, password: str) -> None:
    form = urlencode({"grant_type": "password", "username": sim.user, "password": password})
    status, _, body = _request(sim, "POST", "/ovirt-engine/sso/oauth/token", form)
    assert status == 400 and json.loads(body)["error"] == "invalid_request"


def test_recorded_logins_do_not_keep_the_password(sim: OvirtSimulator, password: str) -> None:
    _login(sim, password)
    (rec,) = sim.requests()
    assert "password=***" in rec.body and password not in rec.body


def test_the_api_wants_a_valid_bearer_token(sim: OvirtSimulator, password: str) -> None:
    status, _, body = _request(sim, "GET", "/ovirt-engine/api/vms")
    assert (status, body) == (401, "")
    _, data = _login(sim, password)
    sim.expire_all_tokens()
    auth = {"Authorization": f"Bearer {data['access_token']}"}
    assert _request(sim, "GET", "/ovirt-engine/api/vms", headers=auth)[0] == 401


def test_logout_revokes_the_token(sim: OvirtSimulator, password: str) -> None:
    _, data = _login(sim, password)
    token = data["access_token"]
    status, _, body = _request(
        sim,
        "POST",
        "/ovirt-engine/services/sso-logout",
        urlencode({"scope": "ovirt-app-api", "token": token}),
        {"Accept": "application/json"},
    )
    assert (status, json.loads(body)) == (200, {})
    assert sim.active_tokens() == 0


def test_a_missing_vm_is_a_404_fault(sim: OvirtSimulator, password: str) -> None:
    _, data = _login(sim, password)
    auth = {"Authorization": f"Bearer {data['access_token']}"}
    status, ctype, body = _request(sim, "GET", "/ovirt-engine/api/vms/nope", headers=auth)
    assert status == 404 and ctype.startswith("application/xml")
    assert re.search(r"<fault>.*<reason>.+</reason>", body, re.S)


# -- search --------------------------------------------------------------------------------


def test_search_queries_are_parsed_like_the_engines() -> None:
    assert parse_search('name=vm1 and cluster="c 1"') == [("name", "vm1"), ("cluster", "c 1")]
    assert parse_search("NAME = vm*") == [("name", "vm*")]
    assert parse_search(None) == [] and parse_search("  ") == []
    with pytest.raises(ApiFault) as info:
        parse_search("name")
    assert info.value.status == 400


def test_search_matches_exactly_wildcards_and_case(sim: OvirtSimulator) -> None:
    e = sim.engine
    vm1 = e.vm_id("vm1")
    assert e.search("vms", "name=vm1") == [vm1]
    assert len(e.search("vms", "name=vm*")) == 2
    assert e.search("vms", "name=VM1") == []
    assert e.search("vms", "name=VM1", case_sensitive=False) == [vm1]
    assert e.search("hosts", "address=192.0.2.12") == [e.host_id("host2")]
    with pytest.raises(ApiFault):
        e.search("vms", "colour=blue")


# -- the state machine, without HTTP ---------------------------------------------------------


@pytest.fixture
def engine() -> Engine:
    s = OvirtSimulator(clock=ManualClock(), durations=Durations(launch=1, power_up=2))
    s.seed_demo()
    return s.engine


def _advance(engine: Engine, seconds: float) -> None:
    assert isinstance(engine.clock, ManualClock)
    engine.clock.advance(seconds)
    engine.tick()


def test_start_steps_fall_due_on_the_clock(engine: Engine) -> None:
    vm = engine.vm(engine.vm_id("vm2"))
    engine.start(vm.id, None)
    assert vm.status == "wait_for_launch" and vm.host_id is not None
    _advance(engine, 0.999)
    assert vm.status == "wait_for_launch"
    _advance(engine, 0.001)
    assert vm.status == "powering_up"
    _advance(engine, 5)
    assert vm.status == "up"


def test_a_suspended_vm_restores_then_is_up(engine: Engine) -> None:
    vm_id = engine.vm_id("vm2")
    engine.set_vm_status(vm_id, "suspended")
    engine.start(vm_id, None)
    assert engine.vm(vm_id).status == "restoring_state"
    _advance(engine, engine.durations.restore)
    assert engine.vm(vm_id).status == "up"


def test_a_host_that_stops_answering_makes_its_vms_unknown_until_it_returns(
    engine: Engine,
) -> None:
    host1, vm1 = engine.host_id("host1"), engine.vm_id("vm1")
    engine.set_vm_status(vm1, "paused", host1)
    engine.set_host_status(host1, "non_responsive")
    assert engine.vm(vm1).status == "unknown"
    engine.set_host_status(host1, "up")
    assert engine.vm(vm1).status == "paused"


def test_fencing_needs_manual_and_a_non_responsive_host(engine: Engine) -> None:
    host1 = engine.host_id("host1")
    engine.set_host_status(host1, "non_responsive")
    with pytest.raises(ApiFault) as info:
        engine.fence(host1, "restart")
    assert info.value.status == 409
    engine.fence(host1, "manual")
    assert engine.vm(engine.vm_id("vm1")).status == "down"
    assert engine.host(host1).status == "non_responsive" and engine.host(host1).fence_confirmed


def test_no_up_host_means_no_start(engine: Engine) -> None:
    for name in ("host1", "host2"):
        engine.set_host_status(engine.host_id(name), "maintenance")
    with pytest.raises(ApiFault) as info:
        engine.start(engine.vm_id("vm2"), None)
    assert info.value.status == 409 and "scheduling" in info.value.detail


def test_statuses_outside_the_api_are_refused(engine: Engine) -> None:
    with pytest.raises(ValueError):
        engine.set_vm_status(engine.vm_id("vm1"), "running")
    with pytest.raises(ValueError):
        engine.set_host_status(engine.host_id("host1"), "broken")


# -- real time, and by hand -----------------------------------------------------------------


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while time.monotonic() < deadline:
        if predicate():
            return True
        tick.wait(0.02)
    return predicate()


def test_on_the_real_clock_a_start_completes_on_its_own(password: str) -> None:
    durations = Durations(launch=0.05, power_up=0.05)
    with OvirtSimulator(password=password, durations=durations) as sim:
        sim.seed_demo()
        with RhevmClient(sim.base_url, sim.user, password, sim.ca_file, 10) as client:
            client.start_vm("vm2")
            assert _wait_until(lambda: client.vm_status("vm2") == "up", timeout=10)


def test_the_command_line_serves_a_demo(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvmguest.testing.ovirt_sim", "--port", "0", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines: dict[str, str] = {}
        for line in proc.stdout:
            if line.startswith("Serving"):
                break
            key, _, value = line.partition(":")
            lines[key.strip()] = value.strip()
        url = lines["URL"].split()[0]
        assert Path(lines["CA file"]) == tmp_path / "ca.pem"
        with RhevmClient(url, lines["User"], lines["Password"], lines["CA file"], 10) as c:
            assert c.vm_status("vm1") == "up" and c.vm_status("vm2") == "down"
            assert c.vm_host("vm1") == "host1"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
