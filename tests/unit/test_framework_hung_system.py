"""Our rule for a hung managed system (docs/framework.md): monitor timeouts count toward
FaultOnMonitorTimeouts as in VCS, but when the resource's main process is verifiably alive
the resource goes to ADMIN_WAIT instead of being cleaned (clean would kill a healthy guest).
On a fake clock, like every framework test."""

from __future__ import annotations

from kvmguest.framework import CleanReason, ResourceMachine, ResourcePolicy, RunClean, State
from tests.unit.test_framework_rig import OFF, ON, UNK, Rig, clean_of


def _timeouts(rig: Rig, n: int, *, alive: bool) -> None:
    for _ in range(n):
        rig.until_wakeup()
        a = rig.out
        assert a is not None
        rig._keep(rig.m.monitor_timed_out(a.id, rig.now, alive, "libvirt: no answer"))


def test_hung_system_with_the_guest_alive_waits_for_the_operator_never_cleans() -> None:
    rig = Rig()
    rig.to_online()
    _timeouts(rig, 3, alive=True)
    assert rig.state() is State.ONLINE
    rig.until_wakeup()
    a = rig.out
    assert a is not None
    d = rig._keep(rig.m.monitor_timed_out(a.id, rig.now, True))
    assert rig.state() is State.ONLINE_ADMIN_WAIT
    assert not any(isinstance(x, RunClean) for x in d.actions)
    assert "verifiably alive" in d.log and "FaultOnMonitorTimeouts 4" in d.log
    reason = rig.m.admin_wait_reason
    assert reason is not None and "the managed system hangs" in reason
    assert rig.m.clean_reason is CleanReason.MONITOR_HUNG
    # Further timeouts while waiting change nothing.
    _timeouts(rig, 6, alive=True)
    assert rig.state() is State.ONLINE_ADMIN_WAIT


def test_hung_system_without_process_evidence_is_the_vcs_monitor_hung_clean() -> None:
    rig = Rig()
    rig.to_online()
    _timeouts(rig, 3, alive=False)
    rig.until_wakeup()
    a = rig.out
    assert a is not None
    d = rig._keep(rig.m.monitor_timed_out(a.id, rig.now, False))
    assert clean_of(d) is CleanReason.MONITOR_HUNG


def test_unknown_answers_between_timeouts_do_not_reset_the_count_a_definite_one_does() -> None:
    rig = Rig()
    rig.to_online()
    _timeouts(rig, 2, alive=True)
    rig.next_monitor(UNK)  # libvirtd's connection refused in between: not a timeout
    rig.next_monitor(ON)  # from UNKNOWN back to ONLINE
    assert rig.m.counters()["CurrentMonitorTimeoutCount"] == 0
    _timeouts(rig, 2, alive=True)
    rig.next_monitor(UNK)
    assert rig.m.counters()["CurrentMonitorTimeoutCount"] == 2
    _timeouts(rig, 2, alive=True)
    assert rig.state() is State.ONLINE_ADMIN_WAIT


def test_after_the_system_answers_again_clear_brings_it_back_online() -> None:
    rig = Rig()
    rig.to_online()
    _timeouts(rig, 4, alive=True)
    rig.next_monitor(ON)  # libvirtd continued: still waiting for the operator
    assert rig.state() is State.ONLINE_ADMIN_WAIT
    rig.clear_admin_wait()
    d = rig.mon(ON)
    assert rig.state() is State.ONLINE and "ADMIN_WAIT cleared" in d.log
    assert rig.m.admin_wait_reason is None


def test_a_guest_that_died_while_waiting_is_a_fault_again_and_restarted() -> None:
    rig = Rig(ResourcePolicy(restart_limit=1))
    rig.to_online()
    _timeouts(rig, 4, alive=True)
    assert rig.state() is State.ONLINE_ADMIN_WAIT
    d = rig.next_monitor(OFF)  # the QEMU process is gone: nothing left to protect
    assert clean_of(d) is CleanReason.UNEXPECTED_OFFLINE and "restart 1 of 1" in d.log
    rig.done()
    rig.done()  # the restart's online
    rig.mon(ON)
    assert rig.state() is State.ONLINE


def test_the_reason_survives_a_daemon_restart() -> None:
    rig = Rig()
    rig.to_online()
    _timeouts(rig, 4, alive=True)
    m = ResourceMachine.restore(rig.m.snapshot(), rig.p)
    assert m.state is State.ONLINE_ADMIN_WAIT
    assert m.admin_wait_reason == rig.m.admin_wait_reason
    m.start(rig.now)
    m.monitor_done(1 + rig.m.snapshot()["seq"], OFF, rig.now)  # the probe after restart
    assert m.state is State.CLEANING  # the guest died meanwhile: fault rules again


def test_a_frozen_group_is_never_put_in_admin_wait_nor_cleaned() -> None:
    rig = Rig()
    rig.to_online()
    rig.freeze()
    _timeouts(rig, 4, alive=True)
    assert rig.state() is not State.ONLINE_ADMIN_WAIT
    assert not isinstance(rig.out, RunClean)
