"""A fake-clock rig that plays the daemon around a ResourceMachine (shared by the
framework tests), and the checks every decision must pass."""

from __future__ import annotations

from kvmguest.framework import (
    Action,
    CleanReason,
    Decision,
    Outcome,
    ResourceMachine,
    ResourcePolicy,
    RunClean,
    RunMigrate,
    RunMonitor,
    RunOffline,
    RunOnline,
    State,
)
from kvmguest.model.states import MonitorResult, intentional_offline, offline, online, unknown

ON = online(100, "running")
OFF = offline("shut off: destroyed")
IO = intentional_offline("shut off: migrated")
UNK = unknown("libvirt unreachable")

T0 = 1000.0


class Rig:
    """Holds the clock and the machine; each call returns the machine's decision."""

    def __init__(self, policy: ResourcePolicy | None = None, *, start: bool = True) -> None:
        self.now = T0
        self.m = ResourceMachine("vm1", policy or ResourcePolicy())
        self.log: list[Decision] = []
        if start:
            self._keep(self.m.start(self.now))

    @property
    def p(self) -> ResourcePolicy:
        return self.m.policy

    def state(self) -> State:  # a call: mypy must not narrow it across inputs
        return self.m.state

    @property
    def out(self) -> Action | None:
        return self.m.outstanding

    def _keep(self, d: Decision) -> Decision:
        check_decision(self.m, d)
        self.log.append(d)
        return d

    # time

    def at(self, t: float) -> Decision:
        self.now = t
        return self._keep(self.m.tick(t))

    def wait(self, seconds: float) -> Decision:
        return self.at(self.now + seconds)

    def until_wakeup(self) -> Decision:
        wake = self.m.next_wakeup()
        assert wake is not None, "nothing scheduled"
        return self.at(max(self.now, wake))

    # completions

    def mon(self, result: MonitorResult) -> Decision:
        a = self.out
        assert isinstance(a, RunMonitor), f"no monitor outstanding but {a}"
        return self._keep(self.m.monitor_done(a.id, result, self.now))

    def mon_timeout(self) -> Decision:
        a = self.out
        assert isinstance(a, RunMonitor), f"no monitor outstanding but {a}"
        return self._keep(self.m.monitor_timed_out(a.id, self.now))

    def done(self, outcome: Outcome = Outcome.SUCCEEDED, detail: str = "") -> Decision:
        a = self.out
        assert a is not None and not isinstance(a, RunMonitor), f"no entry point out: {a}"
        return self._keep(self.m.entry_point_done(a.id, outcome, self.now, detail))

    # operator and events

    def online(self) -> Decision:
        return self._keep(self.m.online(self.now))

    def offline(self) -> Decision:
        return self._keep(self.m.offline(self.now))

    def migrate(self, target: str = "sys2") -> Decision:
        return self._keep(self.m.migrate(target, self.now))

    def clear(self) -> Decision:
        return self._keep(self.m.clear(self.now))

    def clear_admin_wait(self, fault: bool = False) -> Decision:
        return self._keep(self.m.clear_admin_wait(self.now, fault))

    def probe(self) -> Decision:
        return self._keep(self.m.probe(self.now))

    def hint(self, detail: str = "lifecycle event") -> Decision:
        return self._keep(self.m.event_hint(self.now, detail))

    def freeze(self, frozen: bool = True) -> Decision:
        return self._keep(self.m.set_frozen(frozen, self.now))

    # recipes

    def to_online(self) -> Decision:
        """From a fresh rig: probe OFFLINE, online, online succeeds, monitor ONLINE."""
        if self.state() is State.PROBING:
            self.mon(OFF)
        d = self.online()
        assert isinstance(d.action, RunOnline), d
        self.done()
        d = self.mon(ON)
        assert self.state() is State.ONLINE, d.log
        return d

    def next_monitor(self, result: MonitorResult) -> Decision:
        """Wait for the next scheduled monitor (if none is out yet) and answer it."""
        if not isinstance(self.out, RunMonitor):
            self.until_wakeup()
        return self.mon(result)


def kinds(d: Decision) -> list[str]:
    return [a.kind for a in d.actions]


def clean_of(d: Decision) -> CleanReason:
    a = d.action
    assert isinstance(a, RunClean), f"expected a clean, got {a} ({d.log})"
    return a.reason


def check_decision(m: ResourceMachine, d: Decision) -> None:
    """Invariants of every decision."""
    assert len(d.actions) <= 1, d
    assert d.state is m.state
    if d.actions:
        assert m.outstanding is d.actions[0]
    for a in d.actions:
        assert a.timeout > 0
        if isinstance(a, RunClean):
            assert m.policy.manages_faults, "clean with ManageFaults=NONE"
        if isinstance(a, RunOnline | RunOffline | RunClean | RunMigrate):
            assert not m.frozen, f"{a.kind} while frozen"
    if d.log:
        assert d.log.startswith(f"{m.name} {m.state.value}: "), d.log
        assert "\n" not in d.log


def test_rig_reaches_online() -> None:
    rig = Rig()
    rig.to_online()
    assert rig.m.next_wakeup() == rig.now + 60
