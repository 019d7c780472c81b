"""The RHV-M password appears in no log record and no exception, whatever goes wrong."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from html import escape
from urllib.parse import quote, quote_plus

import pytest

from kvmguest.agents.kvmguest.rhevm_client import RhevmClient, RhevmError
from kvmguest.testing.ovirt_sim import OvirtSimulator

OTHER_SECRET = "Wr0ng&pw=%<y>+2"


def _forms(secret: str) -> set[str]:
    return {secret, quote_plus(secret), quote(secret, safe=""), escape(secret)}


def _leaks(texts: list[str], secrets: list[str]) -> list[str]:
    forms = set().union(*(_forms(s) for s in secrets))
    return [t for t in texts if any(f in t for f in forms)]


def test_the_scan_finds_a_planted_password(password: str) -> None:
    # The scan below is only worth something if it can see a leak.
    assert _leaks(["ok", f"x={quote_plus(password)}"], [password])
    assert _leaks([f"<p>{escape(password)}</p>"], [password])
    assert not _leaks(["nothing here"], [password])


def test_no_password_in_logs_or_errors(
    sim: OvirtSimulator, password: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[RhevmError] = []
    texts: list[str] = []

    def attempt(fn: Callable[[], object]) -> None:
        try:
            fn()
        except RhevmError as e:
            errors.append(e)

    # A VM whose name is the password: the engine quotes it back in its faults.
    sim.add_vm(password, "cluster1", status="up", host="host1", affinity="pinned")
    good = RhevmClient(sim.base_url, sim.user, password, sim.ca_file, timeout=1.0)
    texts.append(repr(good))
    attempt(lambda: good.vm_status("vm1"))
    attempt(lambda: good.migrate_vm(password, None))
    attempt(lambda: good.set_cdrom_payload("vm1", {"a": "b"}))
    attempt(lambda: good.vm_status("no-such-vm"))
    sim.expire_all_tokens()
    attempt(lambda: good.start_vm("vm2"))
    sim.inject_error(500, path="/api/vms", count=1)
    attempt(lambda: good.vm_status("vm1"))
    sim.inject_reset(path="/sso/", count=None)
    sim.expire_all_tokens()
    attempt(lambda: good.vm_status("vm1"))
    sim.clear_faults()
    sim.inject_latency(10, path="/sso/", count=1)
    sim.expire_all_tokens()
    attempt(lambda: good.vm_status("vm1"))
    sim.set_certificate_mode("wrong_ca")
    attempt(lambda: good.vm_status("vm1"))
    sim.set_certificate_mode("good")
    good.close()

    wrong = RhevmClient(sim.base_url, sim.user, OTHER_SECRET, sim.ca_file, timeout=5.0)
    texts.append(repr(wrong))
    attempt(lambda: wrong.vm_status("vm1"))
    wrong.close()
    url = sim.base_url
    sim.stop()
    attempt(lambda: RhevmClient(url, sim.user, password, None, 5.0).vm_status("vm1"))

    assert len(errors) >= 9, [str(e) for e in errors]
    for e in errors:
        # Raised outside any except block: no SDK exception rides along.
        assert e.__cause__ is None and e.__context__ is None
        texts += [str(e), repr(e), "".join(traceback.format_exception(e))]
        texts += [str(e.fault_detail), str(e.fault_reason)]
    # The simulator's own access log is a test tool's, not the product's: it may quote a
    # VM name; everything else (the client, the SDK, curl) is scanned.
    records = [r for r in caplog.records if not r.name.startswith("kvmguest.testing")]
    for record in records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append("".join(traceback.format_exception(*record.exc_info)))
    assert records  # the client did log something; none of it may leak
    assert _leaks(texts, [password, OTHER_SECRET]) == []
