"""Start-up reconciliation: snapshot, restore, probe first, never act on stale state."""

from __future__ import annotations

import json

import pytest

from kvmguest.framework import (
    Outcome,
    ResourceMachine,
    ResourcePolicy,
    RunClean,
    RunMonitor,
    RunOffline,
    RunOnline,
    State,
)
from kvmguest.model.states import MonitorResult
from tests.unit.test_framework_rig import IO, OFF, ON, UNK, Rig


def reborn(rig: Rig, policy: ResourcePolicy | None = None) -> Rig:
    """The daemon was SIGKILLed: whatever ran is lost; a new one restores and starts."""
    saved = json.loads(json.dumps(rig.m.snapshot()))
    new = Rig(policy or rig.p, start=False)
    new.now = rig.now + 30
    new.m = ResourceMachine.restore(saved, policy or rig.p)
    d = new.m.start(new.now)
    new.log.append(d)
    assert new.state() is saved_state_after_restore(saved)
    assert isinstance(d.action, RunMonitor) and d.action.probe
    return new


def saved_state_after_restore(saved: dict[str, object]) -> State:
    state = State[str(saved["state"])]
    return state if state.admin_wait else State.PROBING


def first_result(rig: Rig, result: MonitorResult) -> list[str]:
    d = rig.mon(result)
    return [a.kind for a in d.actions]


def going_online() -> Rig:
    rig = Rig()
    rig.mon(OFF)
    rig.online()  # SIGKILL while online runs
    return rig


def test_snapshot_is_plain_json() -> None:
    rig = Rig()
    rig.to_online()
    data = rig.m.snapshot()
    assert json.loads(json.dumps(data)) == data
    assert data["state"] == "ONLINE" and data["version"] == 1


def test_restore_rejects_another_version() -> None:
    with pytest.raises(ValueError, match="version"):
        ResourceMachine.restore({"version": 99, "name": "vm1", "state": "ONLINE"})


def test_restored_online_found_offline_is_offline_no_clean_no_online() -> None:
    rig = Rig()
    rig.to_online()
    new = reborn(rig)
    assert first_result(new, OFF) == []
    assert new.state() is State.OFFLINE


def test_restored_online_found_online() -> None:
    rig = Rig()
    rig.to_online()
    new = reborn(rig)
    assert first_result(new, ON) == []
    assert new.state() is State.ONLINE


def test_interrupted_online_found_running_is_not_started_again() -> None:
    new = reborn(going_online())
    assert first_result(new, ON) == []
    assert new.state() is State.ONLINE


def test_interrupted_online_found_stopped_is_resumed() -> None:
    new = reborn(going_online())
    assert first_result(new, OFF) == ["online"]
    assert new.state() is State.GOING_ONLINE
    new.done()
    new.mon(ON)
    assert new.state() is State.ONLINE


def test_interrupted_online_waits_through_unknown() -> None:
    new = reborn(going_online())
    assert first_result(new, UNK) == []
    assert new.state() is State.UNKNOWN
    new.until_wakeup()
    assert first_result(new, OFF) == ["online"]


def test_interrupted_online_not_resumed_for_intentional_offline() -> None:
    new = reborn(going_online())
    assert first_result(new, IO) == []
    assert new.state() is State.INTENTIONAL_OFFLINE


def test_restarted_daemon_restarts_again_before_probe_settles() -> None:
    first = reborn(going_online())
    first.mon(UNK)
    second = reborn(first)  # killed again while the state was still unknown
    assert first_result(second, OFF) == ["online"]


def test_interrupted_offline_found_running_is_not_offlined_again() -> None:
    rig = Rig()
    rig.to_online()
    rig.offline()
    new = reborn(rig)
    d = new.mon(ON)
    assert not d.actions and new.state() is State.ONLINE
    assert "not resumed" in d.log


def test_interrupted_offline_found_stopped() -> None:
    rig = Rig()
    rig.to_online()
    rig.offline()
    new = reborn(rig)
    assert first_result(new, OFF) == []
    assert new.state() is State.OFFLINE


def _cleaning_for_fault() -> Rig:
    rig = Rig()
    rig.to_online()
    rig.next_monitor(OFF)
    assert isinstance(rig.out, RunClean)
    return rig


def test_interrupted_clean_before_fault_is_not_reissued() -> None:
    new = reborn(_cleaning_for_fault())
    assert first_result(new, OFF) == []
    assert new.state() is State.FAULTED


def test_interrupted_clean_found_running_is_online_not_cleaned() -> None:
    new = reborn(_cleaning_for_fault())
    assert first_result(new, ON) == []
    assert new.state() is State.ONLINE


def test_interrupted_restart_is_resumed_and_counted() -> None:
    rig = Rig(ResourcePolicy(restart_limit=1))
    rig.to_online()
    rig.next_monitor(OFF)  # clean for restart 1 of 1
    new = reborn(rig)
    assert new.m.counters()["RestartCount"] == 1
    assert first_result(new, OFF) == ["online"]
    assert new.state() is State.RESTARTING
    new.done()
    new.mon(ON)
    d = new.next_monitor(OFF)
    assert "restart limit 1 reached" in d.log


def test_restored_fault_stands() -> None:
    rig = _cleaning_for_fault()
    rig.done()
    assert rig.state() is State.FAULTED
    new = reborn(rig)
    assert first_result(new, OFF) == []
    assert new.state() is State.FAULTED
    assert new.online().rejected


def test_restored_fault_found_online_is_online() -> None:
    rig = _cleaning_for_fault()
    rig.done()
    new = reborn(rig)
    new.mon(ON)
    assert new.state() is State.ONLINE


def test_restored_admin_wait_stays() -> None:
    rig = Rig(ResourcePolicy(manage_faults="NONE"))
    rig.to_online()
    rig.next_monitor(OFF)
    new = reborn(rig)
    new.mon(ON)
    assert new.state() is State.ONLINE_ADMIN_WAIT
    new.clear_admin_wait()
    new.mon(ON)
    assert new.state() is State.ONLINE


def test_restored_migration_is_never_repeated_or_cleaned() -> None:
    rig = Rig()
    rig.to_online()
    rig.migrate("sys2")
    new = reborn(rig)
    assert first_result(new, IO) == []
    assert new.state() is State.INTENTIONAL_OFFLINE


def test_action_ids_keep_growing_across_restarts() -> None:
    rig = going_online()
    last = rig.out.id  # type: ignore[union-attr]
    new = reborn(rig)
    assert new.out.id > last  # type: ignore[union-attr]


def test_frozen_is_restored_and_blocks_the_resumed_online() -> None:
    rig = going_online()
    rig.freeze()
    new = reborn(rig)
    assert new.m.frozen
    d = new.mon(OFF)
    assert not any(isinstance(a, RunOnline | RunOffline | RunClean) for a in d.actions)
    new.mon(OFF)
    assert new.state() is State.OFFLINE


def test_probe_result_of_a_restored_machine_is_evidence_enough_for_online() -> None:
    rig = Rig()
    rig.mon(OFF)
    new = reborn(rig)
    new.mon(OFF)
    assert isinstance(new.online().action, RunOnline)
    new.done(Outcome.SUCCEEDED)
    new.mon(ON)
    assert new.state() is State.ONLINE
