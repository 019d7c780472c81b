"""Property tests: any sequence of inputs keeps the machine's safety rules.

A random daemon drives the machine with random policies, monitor results, entry-point
outcomes, clock jumps, operator requests, freezes and daemon restarts (restore from the
snapshot, with whatever ran lost), and checks after every decision:

- at most one action per decision, and a new entry point only when none is outstanding
  (monitor included) or the outstanding one was just resolved;
- online is never started while the freshest evidence says the guest runs or may run:
  the last monitor result since the last successful clean must be OFFLINE or
  INTENTIONAL OFFLINE (or the clean itself);
- a monitor result UNKNOWN never leads to clean or online;
- no clean with ManageFaults=NONE, nothing but monitors while frozen;
- right after a restore, the probe's answer never leads to offline or clean;
- the machine never goes quiet: idle with nothing scheduled only when offline with
  OfflineMonitorInterval 0;
- a state change always comes with a log line; the snapshot is always JSON.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmguest.framework import (
    Decision,
    Outcome,
    ResourceMachine,
    ResourcePolicy,
    RunClean,
    RunMonitor,
    RunOffline,
    RunOnline,
    State,
)
from kvmguest.model.states import MonitorResult, ResourceState
from tests.unit.test_framework_rig import IO, OFF, ON, UNK, check_decision

RESULTS = [ON, OFF, IO, UNK, MonitorResult(ResourceState.ONLINE, 10, "starting up")]

policies = st.builds(
    ResourcePolicy,
    monitor_interval=st.sampled_from([1, 10, 60]),
    offline_monitor_interval=st.sampled_from([0, 5, 300]),
    monitor_timeout=st.sampled_from([1, 30, 60]),
    online_timeout=st.sampled_from([5, 300]),
    offline_timeout=st.sampled_from([5, 300]),
    clean_timeout=st.sampled_from([5, 60]),
    migrate_timeout=st.sampled_from([5, 300]),
    online_retry_limit=st.integers(0, 2),
    online_wait_limit=st.integers(0, 2),
    offline_wait_limit=st.integers(0, 2),
    restart_limit=st.integers(0, 2),
    tolerance_limit=st.integers(0, 2),
    conf_interval=st.sampled_from([0, 60, 600]),
    fault_on_monitor_timeouts=st.integers(0, 3),
    clean_retry_limit=st.integers(0, 2),
    migrate_wait_limit=st.integers(0, 2),
    intentional_offline=st.integers(0, 1),
    manage_faults=st.sampled_from(["ALL", "NONE"]),
)

STEPS = [
    "answer",
    "answer",
    "answer",
    "tick",
    "jump",
    "online",
    "offline",
    "migrate",
    "clear",
    "clear_admin_wait",
    "clear_admin_wait_fault",
    "probe",
    "hint",
    "freeze",
    "restart_daemon",
]


class World:
    def __init__(self, policy: ResourcePolicy) -> None:
        self.policy = policy
        self.now = 0.0
        self.m = ResourceMachine("vm1", policy)
        self.evidence: object = None  # last monitor state, or "clean" after a clean
        self.fresh_restore = False
        self.check(self.m.start(self.now), resolved=True)

    def check(self, d: Decision, resolved: bool, result: MonitorResult | None = None) -> None:
        check_decision(self.m, d)
        if d.changed:
            assert d.log, d
        for a in d.actions:
            assert resolved, f"{a} issued while {self.prev_out} was outstanding"
            if isinstance(a, RunOnline):
                assert self.evidence in (
                    ResourceState.OFFLINE,
                    ResourceState.INTENTIONAL_OFFLINE,
                    "clean",
                ), f"online with evidence {self.evidence}: {d.log}"
        if result is not None and result.state is ResourceState.UNKNOWN:
            assert not any(isinstance(a, RunClean | RunOnline) for a in d.actions), d
        if self.fresh_restore and result is not None:
            assert not any(isinstance(a, RunClean | RunOffline) for a in d.actions), d
            if result.state is not ResourceState.UNKNOWN:
                self.fresh_restore = False
        if self.m.outstanding is None and self.m.next_wakeup() is None:
            assert self.m.state in (State.OFFLINE, State.INTENTIONAL_OFFLINE, State.FAULTED), d
            assert self.policy.offline_monitor_interval == 0
        json.dumps(self.m.snapshot())

    def step(self, kind: str, data: st.DataObject) -> None:
        m = self.m
        self.prev_out = out = m.outstanding
        idle = out is None
        if kind == "answer" and out is not None:
            if isinstance(out, RunMonitor):
                if data.draw(st.booleans().map(lambda b: b and data.draw(st.integers(0, 4)) == 0)):
                    self.check(m.monitor_timed_out(out.id, self.now), resolved=True)
                    return
                result = data.draw(st.sampled_from(RESULTS))
                self.evidence = result.state
                self.check(m.monitor_done(out.id, result, self.now), True, result)
            else:
                outcome = data.draw(st.sampled_from(list(Outcome)))
                if isinstance(out, RunClean) and outcome is Outcome.SUCCEEDED:
                    self.evidence = "clean"
                self.check(m.entry_point_done(out.id, outcome, self.now), resolved=True)
        elif kind in ("tick", "jump"):
            wake = m.next_wakeup()
            if kind == "tick" and wake is not None:
                self.now = max(self.now, wake)
            else:
                self.now += data.draw(st.sampled_from([0.5, 30.0, 400.0, 4000.0]))
            overdue = out is not None and wake is not None and self.now >= wake
            self.check(m.tick(self.now), resolved=idle or overdue)
        elif kind == "restart_daemon":
            saved = json.loads(json.dumps(m.snapshot()))
            self.now += 10
            self.m = ResourceMachine.restore(saved, self.policy)
            self.evidence = None
            self.fresh_restore = not State[saved["state"]].admin_wait
            self.check(self.m.start(self.now), resolved=True)
        else:
            d = {
                "online": lambda: m.online(self.now),
                "offline": lambda: m.offline(self.now),
                "migrate": lambda: m.migrate("sys2", self.now),
                "clear": lambda: m.clear(self.now),
                "clear_admin_wait": lambda: m.clear_admin_wait(self.now),
                "clear_admin_wait_fault": lambda: m.clear_admin_wait(self.now, fault=True),
                "probe": lambda: m.probe(self.now),
                "hint": lambda: m.event_hint(self.now, "event"),
                "freeze": lambda: m.set_frozen(not m.frozen, self.now),
            }.get(kind)
            if d is not None:
                if kind in ("online", "offline", "migrate"):
                    self.fresh_restore = False  # the operator's request, not stale state
                self.check(d(), resolved=idle)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policies, data=st.data())
def test_any_input_sequence_keeps_the_safety_rules(
    policy: ResourcePolicy, data: st.DataObject
) -> None:
    world = World(policy)
    for _ in range(data.draw(st.integers(1, 80))):
        world.step(data.draw(st.sampled_from(STEPS)), data)


@settings(max_examples=200, deadline=None)
@given(policy=policies, results=st.lists(st.sampled_from([ON, UNK]), min_size=1, max_size=40))
def test_a_guest_that_never_stops_is_never_cleaned_or_restarted(
    policy: ResourcePolicy, results: list[MonitorResult]
) -> None:
    """Only ONLINE and UNKNOWN answers (and the clock): no clean, online or offline."""
    m = ResourceMachine("vm1", policy)
    now = 0.0
    decisions = [m.start(now)]
    for r in results:
        out = m.outstanding
        assert isinstance(out, RunMonitor)
        decisions.append(m.monitor_done(out.id, r, now))
        while not isinstance(m.outstanding, RunMonitor):
            wake = m.next_wakeup()
            assert wake is not None
            now = max(now, wake)
            decisions.append(m.tick(now))
    assert all(isinstance(a, RunMonitor) for d in decisions for a in d.actions)
    assert m.state in (State.ONLINE, State.UNKNOWN)


@settings(max_examples=200, deadline=None)
@given(policy=policies, n=st.integers(1, 12))
def test_unexpected_offline_cleans_at_most_restart_limit_plus_one_times(
    policy: ResourcePolicy, n: int
) -> None:
    """A guest that dies after every start: restarts are bounded, the end is FAULTED
    (or ADMIN_WAIT with ManageFaults=NONE), and every clean says reason 4 or 3."""
    m = ResourceMachine("vm1", policy)
    now = 0.0
    m.start(now)
    assert isinstance(m.outstanding, RunMonitor)
    m.monitor_done(m.outstanding.id, ON, now)
    onlines = 0
    for _ in range(200):
        out = m.outstanding
        if out is None:
            wake = m.next_wakeup()
            if wake is None:
                break
            now = max(now, wake)
            m.tick(now)
            continue
        if isinstance(out, RunMonitor):
            m.monitor_done(out.id, OFF, now)
        else:
            onlines += isinstance(out, RunOnline)
            m.entry_point_done(out.id, Outcome.SUCCEEDED, now)
        if m.state in (State.FAULTED, State.ONLINE_ADMIN_WAIT):
            break
    assert m.state in (State.FAULTED, State.ONLINE_ADMIN_WAIT)
    assert onlines <= policy.restart_limit
