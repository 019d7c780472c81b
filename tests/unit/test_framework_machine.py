"""Every agent-framework rule of the resource machine, on a fake clock (no sleeping)."""

from __future__ import annotations

import pytest

from kvmguest.framework import (
    CleanReason,
    Outcome,
    PolicyError,
    ResourceMachine,
    ResourcePolicy,
    RunClean,
    RunMigrate,
    RunMonitor,
    RunOffline,
    RunOnline,
    State,
)
from kvmguest.framework.core import TIMEOUT_GRACE
from kvmguest.model.states import intentional_offline, online
from tests.unit.test_framework_rig import IO, OFF, ON, UNK, Rig, clean_of, kinds

OK, FAILED, TIMED_OUT = Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT


def policy(**kw: object) -> ResourcePolicy:
    return ResourcePolicy(**kw)  # type: ignore[arg-type]


# --- start-up and probing --------------------------------------------------------------


def test_start_probes_first() -> None:
    rig = Rig()
    d = rig.log[0]
    assert d.state is State.PROBING
    assert isinstance(d.action, RunMonitor) and d.action.probe
    assert d.action.timeout == 60


def test_inputs_before_start_are_a_programming_error() -> None:
    m = ResourceMachine("vm1")
    with pytest.raises(RuntimeError, match="start"):
        m.tick(0.0)
    assert m.next_wakeup() is None


@pytest.mark.parametrize(
    ("result", "io_policy", "state"),
    [
        (ON, 1, State.ONLINE),
        (OFF, 1, State.OFFLINE),
        (IO, 1, State.INTENTIONAL_OFFLINE),
        (IO, 0, State.OFFLINE),
        (UNK, 1, State.UNKNOWN),
    ],
)
def test_probe_result_sets_state(result: object, io_policy: int, state: State) -> None:
    rig = Rig(policy(intentional_offline=io_policy))
    d = rig.mon(result)  # type: ignore[arg-type]
    assert rig.state() is state
    assert not d.actions
    assert d.changed and d.log.startswith(f"vm1 {state.value}: probe")


def test_unknown_probe_resolves_with_the_next_definite_result() -> None:
    rig = Rig()
    rig.mon(UNK)
    assert rig.m.next_wakeup() == rig.now + 60  # UNKNOWN is polled at MonitorInterval
    rig.next_monitor(UNK)
    assert rig.state() is State.UNKNOWN
    rig.next_monitor(OFF)
    assert rig.state() is State.OFFLINE


def test_probe_timeouts_retry_and_end_in_unknown_without_clean() -> None:
    rig = Rig()
    for n in range(1, 4):
        d = rig.mon_timeout()
        assert rig.state() is State.PROBING, n
        assert not d.actions
        assert rig.m.next_wakeup() == rig.now + 60
        rig.until_wakeup()
    d = rig.mon_timeout()  # the 4th (FaultOnMonitorTimeouts)
    assert rig.state() is State.UNKNOWN
    assert not any(isinstance(x.action, RunClean) for x in rig.log)
    rig.next_monitor(ON)
    assert rig.state() is State.ONLINE


# --- monitor scheduling ----------------------------------------------------------------


def test_online_resource_is_monitored_every_monitor_interval() -> None:
    rig = Rig(policy(monitor_interval=30))
    rig.to_online()
    t = rig.now
    assert rig.m.next_wakeup() == t + 30
    assert not rig.at(t + 29).actions
    d = rig.at(t + 30)
    assert kinds(d) == ["monitor"] and not d.log
    rig.mon(ON)
    assert rig.m.next_wakeup() == t + 60


def test_offline_resource_is_monitored_every_offline_monitor_interval() -> None:
    rig = Rig(policy(offline_monitor_interval=120))
    rig.mon(OFF)
    assert rig.m.next_wakeup() == rig.now + 120
    rig.wait(120)
    assert isinstance(rig.out, RunMonitor)


def test_offline_monitor_interval_zero_stops_polling_but_events_still_monitor() -> None:
    rig = Rig(policy(offline_monitor_interval=0))
    rig.mon(OFF)
    assert rig.m.next_wakeup() is None
    d = rig.hint("domain started")
    assert kinds(d) == ["monitor"]
    rig.mon(ON)
    assert rig.state() is State.ONLINE


def test_event_hint_monitors_at_once() -> None:
    rig = Rig()
    rig.to_online()
    rig.wait(5)
    d = rig.hint("libvirt: stopped (destroyed)")
    assert kinds(d) == ["monitor"]
    assert "monitoring now" in d.log


def test_event_hint_while_busy_monitors_right_after() -> None:
    rig = Rig()
    rig.to_online()
    rig.until_wakeup()  # a periodic monitor is out
    d = rig.hint()
    assert not d.actions  # one entry point at a time
    d = rig.mon(ON)
    assert kinds(d) == ["monitor"]  # the deferred one


def test_operator_probe_counts_as_a_monitor() -> None:
    rig = Rig(policy(tolerance_limit=1))
    rig.to_online()
    d = rig.probe()
    assert isinstance(d.action, RunMonitor) and d.action.probe
    rig.mon(OFF)
    assert rig.state() is State.ONLINE  # tolerated 1 of 1
    rig.probe()
    d = rig.mon(OFF)
    assert clean_of(d) is CleanReason.UNEXPECTED_OFFLINE


# --- online ------------------------------------------------------------------------------


def test_online_then_monitor_online() -> None:
    rig = Rig()
    rig.mon(OFF)
    d = rig.online()
    assert rig.state() is State.GOING_ONLINE
    assert isinstance(d.action, RunOnline) and d.action.timeout == 300
    d = rig.done()
    assert kinds(d) == ["monitor"]  # at once after online
    d = rig.mon(online(60, "powering_up"))
    assert rig.state() is State.ONLINE
    assert "confidence 60" in d.log


def test_online_wait_limit_then_online_ineffective() -> None:
    rig = Rig(policy(online_wait_limit=2))
    rig.mon(OFF)
    rig.online()
    rig.done()
    d = rig.mon(OFF)
    assert rig.state() is State.GOING_ONLINE and "wait 1 of 2" in d.log
    assert rig.m.next_wakeup() == rig.now + 60
    d = rig.next_monitor(OFF)
    assert "wait 2 of 2" in d.log
    d = rig.next_monitor(OFF)
    assert clean_of(d) is CleanReason.ONLINE_INEFFECTIVE
    assert rig.state() is State.CLEANING
    assert "OnlineWaitLimit 2" in d.log and "no retry (OnlineRetryLimit 0)" in d.log
    d = rig.done()
    assert rig.state() is State.FAULTED and not d.actions


def test_online_wait_limit_zero_needs_the_first_monitor_online() -> None:
    rig = Rig(policy(online_wait_limit=0))
    rig.mon(OFF)
    rig.online()
    rig.done()
    assert clean_of(rig.mon(OFF)) is CleanReason.ONLINE_INEFFECTIVE


def test_online_comes_up_within_the_wait() -> None:
    rig = Rig()
    rig.mon(OFF)
    rig.online()
    rig.done()
    rig.mon(OFF)
    rig.next_monitor(ON)
    assert rig.state() is State.ONLINE


def test_online_timeout_reported_by_executor_is_online_hung() -> None:
    rig = Rig()
    rig.mon(OFF)
    rig.online()
    rig.wait(300)
    d = rig.done(TIMED_OUT)
    assert clean_of(d) is CleanReason.ONLINE_HUNG
    assert "OnlineTimeout 300" in d.log


def test_online_timeout_enforced_by_the_machine_and_late_result_ignored() -> None:
    rig = Rig()
    rig.mon(OFF)
    online_id = rig.online().actions[0].id
    assert rig.m.next_wakeup() == rig.now + 300 + TIMEOUT_GRACE
    assert not rig.wait(300).actions
    d = rig.wait(TIMEOUT_GRACE)
    assert clean_of(d) is CleanReason.ONLINE_HUNG
    late = rig.m.entry_point_done(online_id, OK, rig.now)
    assert not late.actions and "late" in late.log
    assert isinstance(rig.out, RunClean)


def test_failed_online_is_ineffective_at_the_first_offline_monitor() -> None:
    rig = Rig(policy(online_wait_limit=5))
    rig.mon(OFF)
    rig.online()
    d = rig.done(FAILED, "domain definition invalid")
    assert kinds(d) == ["monitor"] and "domain definition invalid" in d.log
    assert clean_of(rig.mon(OFF)) is CleanReason.ONLINE_INEFFECTIVE


def test_failed_online_but_guest_running_is_online() -> None:
    rig = Rig()
    rig.mon(OFF)
    rig.online()
    rig.done(FAILED)
    rig.mon(ON)
    assert rig.state() is State.ONLINE


def test_online_retry_limit() -> None:
    rig = Rig(policy(online_retry_limit=2, online_wait_limit=0))
    rig.mon(OFF)
    rig.online()
    onlines = 1
    for n in (1, 2):
        rig.done()
        d = rig.mon(OFF)
        assert clean_of(d) is CleanReason.ONLINE_INEFFECTIVE
        assert f"online retry {n} of 2" in d.log
        d = rig.done()  # clean succeeded: online again
        assert isinstance(d.action, RunOnline) and rig.state() is State.GOING_ONLINE
        onlines += 1
    rig.done()
    d = rig.mon(OFF)
    assert "OnlineRetryLimit 2 reached" in d.log
    rig.done()
    assert rig.state() is State.FAULTED
    assert onlines == 3


def test_online_retry_after_hung_online_uses_clean_reason_2() -> None:
    rig = Rig(policy(online_retry_limit=1))
    rig.mon(OFF)
    rig.online()
    assert clean_of(rig.done(TIMED_OUT)) is CleanReason.ONLINE_HUNG
    rig.done()
    rig.done()
    rig.mon(ON)
    assert rig.state() is State.ONLINE
    assert rig.m.counters()["OnlineRetryCount"] == 0


def test_unknown_during_online_wait_is_not_counted() -> None:
    rig = Rig(policy(online_wait_limit=0))
    rig.mon(OFF)
    rig.online()
    rig.done()
    for _ in range(5):
        d = rig.next_monitor(UNK)
        assert rig.state() is State.GOING_ONLINE and not isinstance(d.action, RunClean)
    rig.next_monitor(ON)
    assert rig.state() is State.ONLINE


def test_intentional_offline_during_online_ends_the_attempt_without_clean() -> None:
    rig = Rig()
    rig.mon(OFF)
    rig.online()
    rig.done()
    d = rig.mon(IO)
    assert rig.state() is State.INTENTIONAL_OFFLINE and not d.actions


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        ("faulted", "clear the fault first"),
        ("unknown", "probe it first"),
        ("probing", "not probed yet"),
    ],
)
def test_online_refused(setup: str, fragment: str) -> None:
    rig = Rig(policy(online_wait_limit=0))
    if setup == "faulted":
        rig.mon(OFF)
        rig.online()
        rig.done(TIMED_OUT)
        rig.done()
        assert rig.state() is State.FAULTED
    elif setup == "unknown":
        rig.mon(UNK)
    else:
        rig.mon_timeout()
        assert rig.state() is State.PROBING
    d = rig.online()
    assert d.rejected and fragment in d.log
    assert not any(isinstance(a, RunOnline) for a in d.actions)


def test_online_of_online_resource_is_a_no_op() -> None:
    rig = Rig()
    rig.to_online()
    d = rig.online()
    assert not d.actions and not d.rejected and "already online" in d.log


def test_online_queued_behind_a_monitor_is_dropped_when_the_monitor_says_online() -> None:
    rig = Rig()
    rig.mon(OFF)
    rig.until_wakeup()  # periodic monitor out
    d = rig.online()
    assert not d.actions and "queued" in d.log
    d = rig.mon(ON)
    assert rig.state() is State.ONLINE
    assert not any(isinstance(a, RunOnline) for a in d.actions)
    assert "queued online dropped" in d.log


def test_online_queued_behind_a_monitor_runs_after_it() -> None:
    rig = Rig()
    rig.mon(OFF)
    rig.until_wakeup()
    rig.online()
    d = rig.mon(OFF)
    assert isinstance(d.action, RunOnline) and rig.state() is State.GOING_ONLINE


def test_online_from_intentional_offline() -> None:
    rig = Rig()
    rig.mon(IO)
    assert isinstance(rig.online().action, RunOnline)


# --- offline -----------------------------------------------------------------------------


def test_offline_then_monitor_offline() -> None:
    rig = Rig()
    rig.to_online()
    d = rig.offline()
    assert isinstance(d.action, RunOffline) and d.action.timeout == 300
    assert rig.state() is State.GOING_OFFLINE
    assert kinds(rig.done()) == ["monitor"]
    rig.mon(OFF)
    assert rig.state() is State.OFFLINE
    assert rig.m.next_wakeup() == rig.now + 300


def test_offline_ineffective_with_offline_wait_limit_zero() -> None:
    rig = Rig()
    rig.to_online()
    rig.offline()
    rig.done()
    d = rig.mon(ON)
    assert clean_of(d) is CleanReason.OFFLINE_INEFFECTIVE
    assert "OFFLINE once clean completes" in d.log
    rig.done()
    assert rig.state() is State.OFFLINE


def test_offline_wait_limit() -> None:
    rig = Rig(policy(offline_wait_limit=2))
    rig.to_online()
    rig.offline()
    rig.done()
    assert "wait 1 of 2" in rig.mon(ON).log
    assert "wait 2 of 2" in rig.next_monitor(ON).log
    assert clean_of(rig.next_monitor(ON)) is CleanReason.OFFLINE_INEFFECTIVE


def test_offline_timeout_is_offline_hung() -> None:
    rig = Rig()
    rig.to_online()
    rig.offline()
    d = rig.wait(300 + TIMEOUT_GRACE)
    assert clean_of(d) is CleanReason.OFFLINE_HUNG
    rig.done()
    assert rig.state() is State.OFFLINE


def test_failed_offline_with_guest_still_running_cleans_at_once() -> None:
    rig = Rig(policy(offline_wait_limit=3))
    rig.to_online()
    rig.offline()
    rig.done(FAILED)
    assert clean_of(rig.mon(ON)) is CleanReason.OFFLINE_INEFFECTIVE


def test_offline_of_offline_resource_is_a_no_op() -> None:
    rig = Rig()
    rig.mon(OFF)
    d = rig.offline()
    assert not d.actions and not d.rejected


def test_offline_allowed_from_unknown() -> None:
    rig = Rig()
    rig.to_online()
    rig.next_monitor(UNK)
    assert isinstance(rig.offline().action, RunOffline)


# --- unexpected offline: ToleranceLimit, RestartLimit, ConfInterval -----------------------


def test_unexpected_offline_faults_with_clean_reason_4() -> None:
    rig = Rig()
    rig.to_online()
    d = rig.next_monitor(OFF)
    assert clean_of(d) is CleanReason.UNEXPECTED_OFFLINE
    assert rig.state() is State.CLEANING
    assert d.log.startswith("vm1 CLEANING: went offline unexpectedly")
    assert "clean reason 4" in d.log and "no restart (RestartLimit 0)" in d.log
    d = rig.done()
    assert rig.state() is State.FAULTED
    assert rig.m.next_wakeup() == rig.now + 300  # FAULTED: OfflineMonitorInterval


def test_tolerance_limit() -> None:
    rig = Rig(policy(tolerance_limit=2))
    rig.to_online()
    for n in (1, 2):
        d = rig.next_monitor(OFF)
        assert rig.state() is State.ONLINE and f"tolerated {n} of 2" in d.log
        assert not d.changed
    assert clean_of(rig.next_monitor(OFF)) is CleanReason.UNEXPECTED_OFFLINE


def test_tolerated_offline_then_online_keeps_the_count_within_conf_interval() -> None:
    rig = Rig(policy(tolerance_limit=1))
    rig.to_online()
    rig.next_monitor(OFF)
    rig.next_monitor(ON)
    assert rig.m.counters()["ToleranceCount"] == 1
    assert clean_of(rig.next_monitor(OFF)) is CleanReason.UNEXPECTED_OFFLINE


def test_restart_limit_restarts_then_faults() -> None:
    rig = Rig(policy(restart_limit=2))
    rig.to_online()
    for n in (1, 2):
        d = rig.next_monitor(OFF)
        assert clean_of(d) is CleanReason.UNEXPECTED_OFFLINE
        assert f"restart {n} of 2" in d.log
        d = rig.done()  # clean ok: online again
        assert isinstance(d.action, RunOnline) and rig.state() is State.RESTARTING
        rig.done()
        d = rig.mon(ON)
        assert rig.state() is State.ONLINE and "restarted" in d.log
    d = rig.next_monitor(OFF)
    assert "restart limit 2 reached" in d.log
    rig.done()
    assert rig.state() is State.FAULTED


def test_conf_interval_resets_restart_count() -> None:
    rig = Rig(policy(restart_limit=1, monitor_interval=60, conf_interval=600))
    rig.to_online()
    rig.next_monitor(OFF)
    rig.done()
    rig.done()
    rig.mon(ON)  # restarted
    restarted_at = rig.now
    while rig.now < restarted_at + 600:
        d = rig.next_monitor(ON)
    assert "RestartCount 1 reset" in d.log
    assert rig.m.counters()["RestartCount"] == 0
    d = rig.next_monitor(OFF)
    assert "restart 1 of 1" in d.log


def test_restart_count_kept_within_conf_interval() -> None:
    rig = Rig(policy(restart_limit=1, conf_interval=600))
    rig.to_online()
    rig.next_monitor(OFF)
    rig.done()
    rig.done()
    rig.mon(ON)
    for _ in range(5):  # 300 s online: not enough
        rig.next_monitor(ON)
    d = rig.next_monitor(OFF)
    assert "restart limit 1 reached" in d.log


def test_conf_interval_window_restarts_at_each_offline_report() -> None:
    rig = Rig(policy(tolerance_limit=5, monitor_interval=60, monitor_timeout=10, conf_interval=0))
    conf = rig.p.effective_conf_interval
    assert conf == (60 + 10) * 5 + 60 + 10
    rig.to_online()
    rig.next_monitor(OFF)
    start = rig.now
    while rig.now - start < conf - 60:
        rig.next_monitor(ON)
    rig.next_monitor(OFF)  # window restarts here
    second = rig.now
    while rig.now - second < conf - 60:
        rig.next_monitor(ON)
    assert rig.m.counters()["ToleranceCount"] == 2
    while rig.m.counters()["ToleranceCount"]:
        rig.next_monitor(ON)
    assert rig.now - second >= conf


def test_conf_interval_floor() -> None:
    p = policy(monitor_interval=60, monitor_timeout=60, tolerance_limit=0, conf_interval=10)
    assert p.effective_conf_interval == 70
    p = policy(monitor_interval=60, monitor_timeout=60, tolerance_limit=3, conf_interval=100)
    assert p.effective_conf_interval == 430
    assert policy(conf_interval=900).effective_conf_interval == 900


def test_restart_whose_online_fails_restarts_again_or_faults() -> None:
    rig = Rig(policy(restart_limit=2, online_wait_limit=0))
    rig.to_online()
    rig.next_monitor(OFF)
    rig.done()  # clean
    rig.done()  # restart's online
    d = rig.mon(OFF)
    assert clean_of(d) is CleanReason.ONLINE_INEFFECTIVE and "restart 2 of 2" in d.log
    rig.done()
    assert rig.state() is State.RESTARTING
    rig.done(TIMED_OUT)
    assert clean_of(rig.log[-1]) is CleanReason.ONLINE_HUNG
    assert "restart limit reached" in rig.log[-1].log
    rig.done()
    assert rig.state() is State.FAULTED


@pytest.mark.parametrize("io_policy", [0, 1])
def test_intentional_offline_while_online(io_policy: int) -> None:
    rig = Rig(policy(intentional_offline=io_policy))
    rig.to_online()
    d = rig.next_monitor(intentional_offline("paused: save"))
    if io_policy:
        assert rig.state() is State.INTENTIONAL_OFFLINE and not d.actions
        assert "not a fault" in d.log
        rig.next_monitor(ON)
        assert rig.state() is State.ONLINE
    else:
        assert clean_of(d) is CleanReason.UNEXPECTED_OFFLINE


def test_intentional_offline_then_offline_is_not_a_fault() -> None:
    rig = Rig()
    rig.to_online()
    rig.next_monitor(IO)
    d = rig.next_monitor(OFF)
    assert rig.state() is State.OFFLINE and not d.actions


def test_unknown_while_online_is_never_a_fault() -> None:
    rig = Rig()
    rig.to_online()
    for _ in range(10):
        d = rig.next_monitor(UNK)
        assert rig.state() is State.UNKNOWN
        assert kinds(d) in ([], ["monitor"])
    rig.next_monitor(ON)
    assert rig.state() is State.ONLINE


def test_offline_after_unknown_of_an_online_resource_is_a_fault() -> None:
    rig = Rig()
    rig.to_online()
    rig.next_monitor(UNK)
    assert clean_of(rig.next_monitor(OFF)) is CleanReason.UNEXPECTED_OFFLINE


def test_offline_after_unknown_of_an_offline_resource_is_offline() -> None:
    rig = Rig()
    rig.mon(OFF)
    rig.next_monitor(UNK)
    d = rig.next_monitor(OFF)
    assert rig.state() is State.OFFLINE and not d.actions


def test_resource_started_outside_the_agent_is_online() -> None:
    rig = Rig()
    rig.mon(OFF)
    d = rig.next_monitor(ON)
    assert rig.state() is State.ONLINE and "not started by the agent" in d.log


# --- monitor timeouts: FaultOnMonitorTimeouts --------------------------------------------


def test_fault_on_monitor_timeouts() -> None:
    rig = Rig()
    rig.to_online()
    for n in (1, 2, 3):
        rig.until_wakeup()
        d = rig.mon_timeout()
        assert rig.state() is State.ONLINE and f"{n} of 4" in d.log
    rig.until_wakeup()
    d = rig.mon_timeout()
    assert clean_of(d) is CleanReason.MONITOR_HUNG
    assert "FaultOnMonitorTimeouts 4" in d.log
    rig.done()
    assert rig.state() is State.FAULTED


def test_monitor_hung_restarts_within_restart_limit() -> None:
    rig = Rig(policy(fault_on_monitor_timeouts=1, restart_limit=1))
    rig.to_online()
    rig.until_wakeup()
    d = rig.mon_timeout()
    assert clean_of(d) is CleanReason.MONITOR_HUNG and "restart 1 of 1" in d.log
    assert isinstance(rig.done().action, RunOnline)


def test_monitor_timeouts_must_be_consecutive() -> None:
    rig = Rig()
    rig.to_online()
    for _ in range(3):
        rig.until_wakeup()
        rig.mon_timeout()
    rig.next_monitor(ON)
    for _ in range(3):
        rig.until_wakeup()
        d = rig.mon_timeout()
    assert rig.state() is State.ONLINE and "3 of 4" in d.log


def test_monitor_timeout_count_resets_an_hour_after_the_first() -> None:
    rig = Rig(policy(monitor_interval=1200))
    rig.to_online()
    rig.until_wakeup()
    first = rig.now
    rig.mon_timeout()
    for _ in range(3):  # 4 in a row, but the 4th more than an hour after the 1st
        rig.until_wakeup()
        d = rig.mon_timeout()
    assert rig.now - first >= 3600
    assert rig.state() is State.ONLINE and "1 of 4" in d.log


def test_fault_on_monitor_timeouts_zero_never_faults() -> None:
    rig = Rig(policy(fault_on_monitor_timeouts=0))
    rig.to_online()
    for _ in range(20):
        rig.until_wakeup()
        d = rig.mon_timeout()
        assert not isinstance(d.action, RunClean)
    assert rig.state() is State.ONLINE and "never a fault" in d.log


def test_monitor_timeout_enforced_by_the_machine() -> None:
    rig = Rig(policy(fault_on_monitor_timeouts=1))
    rig.to_online()
    rig.until_wakeup()
    monitor_id = rig.out.id  # type: ignore[union-attr]
    d = rig.wait(60 + TIMEOUT_GRACE)
    assert clean_of(d) is CleanReason.MONITOR_HUNG
    late = rig.m.monitor_done(monitor_id, ON, rig.now)
    assert "late" in late.log and isinstance(rig.out, RunClean)


def test_monitor_timeouts_of_an_offline_resource_make_it_unknown_not_cleaned() -> None:
    rig = Rig(policy(fault_on_monitor_timeouts=2))
    rig.mon(OFF)
    rig.until_wakeup()
    rig.mon_timeout()
    rig.until_wakeup()
    d = rig.mon_timeout()
    assert rig.state() is State.UNKNOWN and not d.actions


def test_monitor_hung_while_going_online_is_an_online_failure() -> None:
    rig = Rig(policy(fault_on_monitor_timeouts=2, online_retry_limit=1))
    rig.mon(OFF)
    rig.online()
    rig.done()
    rig.mon_timeout()
    rig.until_wakeup()
    d = rig.mon_timeout()
    assert clean_of(d) is CleanReason.MONITOR_HUNG and "online retry 1 of 1" in d.log


def test_monitor_hung_while_going_offline_cleans_to_offline() -> None:
    rig = Rig(policy(fault_on_monitor_timeouts=1))
    rig.to_online()
    rig.offline()
    rig.done()
    assert clean_of(rig.mon_timeout()) is CleanReason.MONITOR_HUNG
    rig.done()
    assert rig.state() is State.OFFLINE


# --- CleanRetryLimit -------------------------------------------------------------------


def test_clean_retried_without_end_by_default() -> None:
    rig = Rig()
    rig.to_online()
    rig.next_monitor(OFF)
    for n in range(1, 8):
        d = rig.done(FAILED, "libvirt error")
        assert rig.state() is State.CLEANING and f"retry {n} in 60 s" in d.log
        assert rig.m.next_wakeup() == rig.now + 60
        d = rig.until_wakeup()
        assert clean_of(d) is CleanReason.UNEXPECTED_OFFLINE
    rig.done()
    assert rig.state() is State.FAULTED


def test_clean_timeout_counts_as_a_failed_clean() -> None:
    rig = Rig(policy(clean_retry_limit=1))
    rig.to_online()
    rig.next_monitor(OFF)
    d = rig.wait(60 + TIMEOUT_GRACE)
    assert "retry 1 of 1" in d.log
    rig.until_wakeup()
    d = rig.done(TIMED_OUT)
    assert rig.state() is State.ONLINE_ADMIN_WAIT


@pytest.mark.parametrize(
    ("how", "admin_wait"),
    [
        ("unexpected offline", State.ONLINE_ADMIN_WAIT),
        ("online ineffective", State.GOING_ONLINE_ADMIN_WAIT),
        ("offline ineffective", State.GOING_OFFLINE_ADMIN_WAIT),
    ],
)
def test_clean_retry_limit_leads_to_admin_wait(how: str, admin_wait: State) -> None:
    rig = Rig(policy(clean_retry_limit=2, online_wait_limit=0))
    if how == "unexpected offline":
        rig.to_online()
        rig.next_monitor(OFF)
    elif how == "online ineffective":
        rig.mon(OFF)
        rig.online()
        rig.done()
        rig.mon(OFF)
    else:
        rig.to_online()
        rig.offline()
        rig.done()
        rig.mon(ON)
    for _ in range(2):
        rig.done(FAILED)
        rig.until_wakeup()
    d = rig.done(FAILED)
    assert rig.state() is admin_wait and "CleanRetryLimit 2 reached" in d.log
    assert not d.actions


# --- ManageFaults=NONE: ADMIN_WAIT --------------------------------------------------------


def test_manage_faults_none_unexpected_offline_waits_for_the_operator() -> None:
    rig = Rig(policy(manage_faults="NONE"))
    rig.to_online()
    d = rig.next_monitor(OFF)
    assert rig.state() is State.ONLINE_ADMIN_WAIT and not d.actions
    assert "clean not called" in d.log and rig.m.clean_reason is CleanReason.UNEXPECTED_OFFLINE
    d = rig.next_monitor(OFF)  # monitors go on; nothing changes by itself
    assert rig.state() is State.ONLINE_ADMIN_WAIT
    assert rig.online().rejected and rig.offline().rejected
    d = rig.clear_admin_wait()
    assert kinds(d) == [] or kinds(d) == ["monitor"]
    if not d.actions:  # a periodic monitor was out; the verification follows it
        rig.mon(OFF)
    d = rig.mon(OFF)
    assert rig.state() is State.ONLINE_ADMIN_WAIT and "ONLINE required" in d.log
    rig.clear_admin_wait()
    d = rig.mon(ON)
    assert rig.state() is State.ONLINE and "ADMIN_WAIT cleared" in d.log


def test_manage_faults_none_online_hung() -> None:
    rig = Rig(policy(manage_faults="NONE"))
    rig.mon(OFF)
    rig.online()
    d = rig.done(TIMED_OUT)
    assert rig.state() is State.GOING_ONLINE_ADMIN_WAIT and not d.actions
    assert rig.m.clean_reason is CleanReason.ONLINE_HUNG


def test_manage_faults_none_offline_ineffective_cleared_when_offline() -> None:
    rig = Rig(policy(manage_faults="NONE"))
    rig.to_online()
    rig.offline()
    rig.done()
    rig.mon(ON)
    assert rig.state() is State.GOING_OFFLINE_ADMIN_WAIT
    rig.clear_admin_wait()
    rig.mon(OFF)
    assert rig.state() is State.OFFLINE


def test_manage_faults_none_monitor_hung() -> None:
    rig = Rig(policy(manage_faults="NONE", fault_on_monitor_timeouts=1))
    rig.to_online()
    rig.until_wakeup()
    rig.mon_timeout()
    assert rig.state() is State.ONLINE_ADMIN_WAIT
    assert rig.m.clean_reason is CleanReason.MONITOR_HUNG


def test_clear_admin_wait_with_fault_marks_faulted_without_clean() -> None:
    rig = Rig(policy(manage_faults="NONE"))
    rig.to_online()
    rig.next_monitor(OFF)
    d = rig.clear_admin_wait(fault=True)
    assert rig.state() is State.FAULTED
    assert not any(isinstance(a, RunClean) for a in d.actions)


def test_clear_admin_wait_refused_when_not_in_admin_wait() -> None:
    rig = Rig()
    rig.mon(OFF)
    assert rig.clear_admin_wait().rejected


# --- migrate -----------------------------------------------------------------------------


def test_migrate() -> None:
    rig = Rig()
    rig.to_online()
    d = rig.migrate("sys2")
    assert isinstance(d.action, RunMigrate) and d.action.target == "sys2"
    assert d.action.timeout == 300 and rig.state() is State.MIGRATING
    rig.done()
    d = rig.mon(IO)
    assert rig.state() is State.OFFLINE and "migrated to sys2" in d.log


@pytest.mark.parametrize("outcome", [FAILED, TIMED_OUT])
def test_failed_migrate_leaves_the_resource_online_never_cleaned(outcome: Outcome) -> None:
    rig = Rig()
    rig.to_online()
    rig.migrate()
    d = rig.done(outcome)
    assert kinds(d) == ["monitor"]
    d = rig.mon(ON)
    assert rig.state() is State.ONLINE and "failed" in d.log
    assert not any(isinstance(x.action, RunClean) for x in rig.log)


def test_migrate_wait_limit() -> None:
    rig = Rig(policy(migrate_wait_limit=2))
    rig.to_online()
    rig.migrate()
    rig.done()
    assert "wait 1 of 2" in rig.mon(ON).log
    assert "wait 2 of 2" in rig.next_monitor(ON).log
    d = rig.next_monitor(ON)
    assert rig.state() is State.ONLINE and "MigrateWaitLimit 2" in d.log


def test_migrate_machine_timeout_then_offline_is_migrated() -> None:
    rig = Rig()
    rig.to_online()
    rig.migrate()
    d = rig.wait(300 + TIMEOUT_GRACE)
    assert kinds(d) == ["monitor"]
    rig.mon(OFF)
    assert rig.state() is State.OFFLINE


def test_migrate_refused_unless_online_or_without_target() -> None:
    rig = Rig()
    rig.mon(OFF)
    assert rig.migrate().rejected
    rig2 = Rig()
    rig2.to_online()
    assert rig2.migrate("").rejected


# --- FAULTED and clear -------------------------------------------------------------------


def _faulted() -> Rig:
    rig = Rig(policy(restart_limit=1))
    rig.to_online()
    rig.next_monitor(OFF)
    rig.done()
    rig.done()
    rig.mon(ON)
    rig.next_monitor(OFF)
    rig.done()
    assert rig.state() is State.FAULTED
    return rig


def test_clear_fault() -> None:
    rig = _faulted()
    d = rig.clear()
    assert rig.state() is State.PROBING and "fault cleared" in d.log
    assert rig.m.counters()["RestartCount"] == 0
    assert rig.online().rejected  # not before the probe has answered
    if not d.actions:  # a periodic monitor was out: the probe follows it
        rig.mon(OFF)
    assert isinstance(rig.out, RunMonitor) and rig.out.probe
    rig.mon(OFF)
    assert rig.state() is State.OFFLINE
    assert isinstance(rig.online().action, RunOnline)


def test_clear_of_a_fault_whose_guest_runs_is_online() -> None:
    rig = _faulted()
    rig.clear()
    if not isinstance(rig.out, RunMonitor) or not rig.out.probe:
        rig.mon(OFF)
    rig.mon(ON)
    assert rig.state() is State.ONLINE


def test_clear_without_fault_is_a_no_op() -> None:
    rig = Rig()
    rig.mon(OFF)
    d = rig.clear()
    assert "nothing to clear" in d.log and not d.rejected


def test_faulted_resource_found_online_is_online() -> None:
    rig = _faulted()
    d = rig.next_monitor(ON)
    assert rig.state() is State.ONLINE and "fault cleared" in d.log


def test_faulted_stays_faulted_on_offline_monitors() -> None:
    rig = _faulted()
    d = rig.next_monitor(OFF)
    assert rig.state() is State.FAULTED and not d.log


# --- freeze ------------------------------------------------------------------------------


def test_frozen_refuses_online_offline_migrate_but_monitors() -> None:
    rig = Rig()
    rig.to_online()
    rig.freeze()
    assert rig.offline().rejected and rig.migrate().rejected
    d = rig.next_monitor(OFF)
    assert rig.state() is State.OFFLINE and not d.actions and "frozen" in d.log
    assert rig.online().rejected
    assert isinstance(rig.probe().action, RunMonitor)


def test_frozen_during_online_does_not_clean() -> None:
    rig = Rig(policy(online_wait_limit=0))
    rig.mon(OFF)
    rig.online()
    rig.freeze()
    rig.done()
    d = rig.mon(OFF)
    assert rig.state() is State.PROBING and kinds(d) == ["monitor"]
    assert "frozen" in d.log
    rig.mon(OFF)
    assert rig.state() is State.OFFLINE


def test_freeze_cancels_a_pending_clean_retry() -> None:
    rig = Rig()
    rig.to_online()
    rig.next_monitor(OFF)
    rig.done(FAILED)
    d = rig.freeze()
    assert rig.state() is State.PROBING and kinds(d) == ["monitor"]


def test_frozen_restart_clean_completes_without_online() -> None:
    rig = Rig(policy(restart_limit=1))
    rig.to_online()
    rig.next_monitor(OFF)  # clean running
    rig.freeze()
    d = rig.done()
    assert kinds(d) == ["monitor"] and rig.state() is State.PROBING


def test_unfreeze_allows_requests_again() -> None:
    rig = Rig()
    rig.mon(OFF)
    rig.freeze()
    assert rig.online().rejected
    rig.freeze(False)
    assert isinstance(rig.online().action, RunOnline)


# --- plumbing ----------------------------------------------------------------------------


def test_completion_of_the_wrong_kind_is_a_programming_error() -> None:
    rig = Rig()
    monitor_id = rig.out.id  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="is a monitor"):
        rig.m.entry_point_done(monitor_id, OK, rig.now)


def test_unknown_action_id_is_ignored() -> None:
    rig = Rig()
    d = rig.m.monitor_done(999, ON, rig.now)
    assert rig.state() is State.PROBING and "late" in d.log and not d.actions


def test_tick_with_nothing_due_says_nothing() -> None:
    rig = Rig()
    rig.mon(OFF)
    d = rig.wait(1)
    assert not d.actions and not d.log and not d.changed


def test_offline_requested_while_monitor_runs_is_queued() -> None:
    rig = Rig()
    rig.to_online()
    rig.until_wakeup()
    assert "queued" in rig.offline().log
    d = rig.mon(ON)
    assert isinstance(d.action, RunOffline)


def test_a_later_request_replaces_the_queued_one() -> None:
    rig = Rig()
    rig.to_online()
    rig.until_wakeup()
    rig.offline()
    d = rig.migrate("sys3")
    assert "replaces the queued offline" in d.log
    d = rig.mon(ON)
    assert isinstance(d.action, RunMigrate) and d.action.target == "sys3"


def test_freeze_before_start() -> None:
    rig = Rig(start=False)
    rig.freeze()
    rig.m.start(rig.now)
    rig.mon(OFF)
    assert rig.online().rejected


def test_policy_defaults_are_the_vcs_ones() -> None:
    p = ResourcePolicy()
    assert (p.monitor_interval, p.offline_monitor_interval, p.monitor_timeout) == (60, 300, 60)
    assert (p.online_timeout, p.offline_timeout, p.clean_timeout, p.migrate_timeout) == (
        300,
        300,
        60,
        300,
    )
    assert (p.online_retry_limit, p.online_wait_limit, p.offline_wait_limit) == (0, 2, 0)
    assert (p.restart_limit, p.tolerance_limit, p.conf_interval) == (0, 0, 600)
    assert (p.fault_on_monitor_timeouts, p.clean_retry_limit, p.migrate_wait_limit) == (4, 0, 2)
    assert (p.intentional_offline, p.manage_faults) == (1, "ALL")


def test_policy_from_vcs_attribute_names() -> None:
    p = ResourcePolicy.from_attrs(
        {
            "MonitorInterval": "30",
            "RestartLimit": 2,
            "IntentionalOffline": False,
            "ManageFaults": "NONE",
            "GuestName": "vm1",  # not a framework attribute: ignored
        }
    )
    assert p.monitor_interval == 30 and p.restart_limit == 2
    assert p.intentional_offline == 0 and p.manage_faults == "NONE"


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"ManageFaults": "SOME"}, "ManageFaults is ALL or NONE"),
        ({"RestartLimit": "-1"}, "RestartLimit must be at least 0"),
        ({"MonitorInterval": "0"}, "MonitorInterval must be at least 1"),
        ({"ToleranceLimit": "two"}, "ToleranceLimit must be an integer"),
    ],
)
def test_policy_rejects_bad_values(attrs: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        ResourcePolicy.from_attrs(attrs)
