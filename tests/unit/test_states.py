"""Every row of the RHEV (seed) and KVM (ours) state tables, and the exit codes."""

from __future__ import annotations

import pytest

from kvmguest.model.states import (
    DomState,
    JobOperation,
    MonitorResult,
    PausedReason,
    ResourceState,
    ShutoffReason,
    kvm_state,
    rhev_state,
)

ON, OFF, IOFF, UNK = (
    ResourceState.ONLINE,
    ResourceState.OFFLINE,
    ResourceState.INTENTIONAL_OFFLINE,
    ResourceState.UNKNOWN,
)

SEED_TABLE = [
    ("wait_for_launch", ON, 10, 101),
    ("powering_up", ON, 60, 106),
    ("up", ON, 100, 110),
    ("powering_down", ON, 40, 104),
    ("paused", ON, 20, 102),
    ("down", OFF, 0, 100),
    ("saving_state", IOFF, 0, 200),
    ("suspended", IOFF, 0, 200),
    ("restoring_state", ON, 50, 105),
    ("migrating", IOFF, 0, 200),
    ("reboot_in_progress", IOFF, 0, 200),
    ("image_locked", UNK, 0, 99),
    ("unknown", UNK, 0, 99),
    ("not_responding", UNK, 0, 99),
    ("unassigned", UNK, 0, 99),
    ("something_new", UNK, 0, 99),
]


@pytest.mark.parametrize(("status", "state", "confidence", "code"), SEED_TABLE)
def test_rhev_table(status: str, state: ResourceState, confidence: int, code: int) -> None:
    r = rhev_state(status)
    assert (r.state, r.confidence, r.exit_code) == (state, confidence, code)


P, S = PausedReason, ShutoffReason
KVM_TABLE = [
    (DomState.RUNNING, 1, None, ON, 100),
    (DomState.BLOCKED, 0, None, ON, 100),
    (DomState.PAUSED, P.STARTING_UP, None, ON, 10),
    (DomState.PAUSED, P.MIGRATION, JobOperation.MIGRATION_IN, ON, 10),
    (DomState.PAUSED, P.MIGRATION, JobOperation.MIGRATION_OUT, IOFF, 0),
    (DomState.PAUSED, P.USER, None, ON, 20),
    (DomState.PAUSED, P.SHUTTING_DOWN, None, ON, 40),
    (DomState.PAUSED, P.SAVE, None, IOFF, 0),
    (DomState.PAUSED, P.DUMP, None, IOFF, 0),
    (DomState.PAUSED, P.SNAPSHOT, None, IOFF, 0),
    (DomState.PAUSED, P.IOERROR, None, UNK, 0),
    (DomState.PAUSED, P.CRASHED, None, OFF, 0),
    (DomState.PAUSED, P.WATCHDOG, None, OFF, 0),
    (DomState.PAUSED, P.UNKNOWN, None, UNK, 0),
    (DomState.SHUTDOWN, 1, None, ON, 40),
    (DomState.SHUTOFF, S.SAVED, None, IOFF, 0),
    (DomState.SHUTOFF, S.MIGRATED, None, IOFF, 0),
    (DomState.SHUTOFF, S.SHUTDOWN, None, OFF, 0),
    (DomState.SHUTOFF, S.DESTROYED, None, OFF, 0),
    (DomState.SHUTOFF, S.CRASHED, None, OFF, 0),
    (DomState.SHUTOFF, S.FAILED, None, OFF, 0),
    (DomState.SHUTOFF, S.UNKNOWN, None, OFF, 0),
    (DomState.CRASHED, 1, None, OFF, 0),
    (DomState.PMSUSPENDED, 0, None, IOFF, 0),
    (DomState.NOSTATE, 0, None, UNK, 0),
    (None, 0, None, OFF, 0),
    (42, 0, None, UNK, 0),
]


@pytest.mark.parametrize(("state", "reason", "job", "expect", "confidence"), KVM_TABLE)
def test_kvm_table(
    state: int | None, reason: int, job: int | None, expect: ResourceState, confidence: int
) -> None:
    r = kvm_state(state, reason, job)
    assert (r.state, r.confidence) == (expect, confidence)
    assert r.detail


def test_paused_on_io_error_never_looks_healthy() -> None:
    r = kvm_state(DomState.PAUSED, P.IOERROR)
    assert r.state is not ResourceState.ONLINE and "i/o error" in r.detail.lower()


def test_exit_codes_and_json() -> None:
    assert MonitorResult(ON, 10).exit_code == 101
    assert MonitorResult(ON, 100).exit_code == 110
    assert MonitorResult(ON, 55).exit_code == 105
    assert MonitorResult(OFF).exit_code == 100
    assert MonitorResult(IOFF).exit_code == 200
    assert MonitorResult(UNK).exit_code == 99
    assert MonitorResult(ON, 60, "x").as_dict() == {
        "state": "ONLINE",
        "confidence": 60,
        "detail": "x",
    }
    with pytest.raises(ValueError):
        MonitorResult(ON, 0)
