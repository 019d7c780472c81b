"""The per-resource state machine of the agent framework (pure: no I/O, no clock reads).

Every input is a method call that carries the current time (``now``, from the daemon's
injected :data:`kvmguest.deadline.Clock`) and returns a :class:`Decision`: the state
afterwards, at most one entry point to run, and one readable log line. The machine runs
one entry point of a resource at a time (monitor included); inputs that arrive while one
runs are queued or folded into a "monitor as soon as possible" flag. Completions carry
the action's id: a late completion of an action the machine already gave up on is ignored.

Driving loop (the daemon's, roughly)::

    m = ResourceMachine("vm1", policy)            # or ResourceMachine.restore(saved, policy)
    run(m.start(clock()))                         # probes first, always
    while True:
        wait until m.next_wakeup(), an event, a completion or an operator request
        d = m.tick(clock())                       # or, for what arrived:
        d = m.monitor_done(action_id, result, clock())      # MonitorResult
        d = m.monitor_timed_out(action_id, clock())
        d = m.entry_point_done(action_id, Outcome.SUCCEEDED, clock(), detail)
        d = m.event_hint(clock(), "libvirt: domain stopped")
        d = m.online(clock()) / m.offline(clock()) / m.migrate("sys2", clock()) / m.clear(...)
        log(d.log); persist(m.snapshot()); run(d.actions)

    def run(actions):  # each carries .id and .timeout; report back with that id
        for a in actions: executor.submit(a)  # RunMonitor, RunOnline, RunClean(reason) ...

The rules, with their VCS attribute names, are in docs/framework.md.
"""

from __future__ import annotations

from typing import Any

from kvmguest.framework.core import TIMEOUT_GRACE, Goal, Intent, MachineCore
from kvmguest.framework.decision import Decision, Outcome, RunMonitor, State
from kvmguest.framework.policy import CleanReason, ResourcePolicy
from kvmguest.model.states import MonitorResult, ResourceState

SNAPSHOT_VERSION = 1

_ON = ResourceState.ONLINE
_IO = ResourceState.INTENTIONAL_OFFLINE
_UNK = ResourceState.UNKNOWN


class ResourceMachine(MachineCore):
    """One resource under the agent framework's rules (see the module docstring)."""

    # --- inputs -----------------------------------------------------------------------

    def start(self, now: float) -> Decision:
        """Begin: probe before anything else (a restored machine too)."""
        self._begin()
        if self._started:
            return self._finish(now, "already started")
        self._started = True
        self._monitor_asap = self._probe_next = True
        if self._state is State.PROBING and self._intent is not Intent.NONE:
            return self._finish(now, f"restored ({self._intent.value} was under way); probing")
        return self._finish(now, "probing")

    def tick(self, now: float) -> Decision:
        """Time passed: give up on an overdue entry point, start a due monitor or clean."""
        self._begin()
        self._need_started()
        p = self._pending
        if p is not None and now >= p.deadline:
            self._pending = None
            self._reschedule = True
            what = f"no answer within {p.action.timeout:g} s (+{TIMEOUT_GRACE:g} s grace)"
            if isinstance(p.action, RunMonitor):
                self._monitor_timeout(now, what)
            else:
                self._ep_done(p.action, Outcome.TIMED_OUT, what, now)
        return self._finish(now)

    def monitor_done(self, action_id: int, result: MonitorResult, now: float) -> Decision:
        self._begin()
        if not self._accept(action_id, "monitor"):
            return self._finish(now)
        if result.state is not _UNK:
            # Only a definite answer ends a run of timeouts: a managed system that hangs,
            # then refuses, then hangs again is still not answering.
            self._monitor_timeouts = 0
            self._first_monitor_timeout = None
        self._last = result
        self._on_result(result, now)
        return self._finish(now)

    def monitor_timed_out(
        self, action_id: int, now: float, alive: bool = False, detail: str = ""
    ) -> Decision:
        """The monitor got no answer within MonitorTimeout. ``alive``: the resource's main
        process is verifiably alive on this host (the managed system hangs, not the guest)."""
        self._begin()
        if self._accept(action_id, "monitor"):
            what = detail or f"no answer within MonitorTimeout {self.policy.monitor_timeout} s"
            self._monitor_timeout(now, what, alive)
        return self._finish(now)

    def entry_point_done(
        self, action_id: int, outcome: Outcome, now: float, detail: str = ""
    ) -> Decision:
        """An online, offline, clean or migrate entry point ended."""
        self._begin()
        p = self._pending
        if self._accept(action_id, "entry point") and p is not None:
            self._ep_done(p.action, outcome, detail, now)
        return self._finish(now)

    def event_hint(self, now: float, detail: str = "") -> Decision:
        """A hypervisor event concerns this resource: monitor now, not at the interval."""
        self._begin()
        self._need_started()
        if self._state is State.CLEANING:
            return self._finish(now, f"event ({detail}) ignored while cleaning")
        self._monitor_asap = True
        return self._finish(now, f"event{f' ({detail})' if detail else ''}: monitoring now")

    def probe(self, now: float) -> Decision:
        """Operator probe: one monitor now (it counts like any monitor, as in VCS)."""
        self._begin()
        self._need_started()
        if self._state is State.CLEANING:
            return self._reject(now, "probe refused: clean in progress")
        self._monitor_asap = self._probe_next = True
        return self._finish(now, "probe requested")

    def online(self, now: float) -> Decision:
        return self._request("online", "", now)

    def offline(self, now: float) -> Decision:
        return self._request("offline", "", now)

    def migrate(self, target: str, now: float) -> Decision:
        return self._request("migrate", target, now)

    def clear(self, now: float) -> Decision:
        """Clear a fault (hares -clear): counters reset, and a probe decides the state.

        Not straight to OFFLINE as in VCS: an online accepted before the probe answers
        could start a guest that is in fact running (a fault the operator forced).
        """
        self._begin()
        self._need_started()
        if self._state.admin_wait:
            return self._reject(now, "clear refused: in ADMIN_WAIT (use clear_admin_wait)")
        if self._state is not State.FAULTED:
            return self._finish(now, "nothing to clear")
        self._tolerance = self._restarts = self._online_retries = 0
        self._intent = Intent.NONE
        self._set(State.PROBING)
        self._monitor_asap = self._probe_next = True
        return self._finish(now, "fault cleared by the operator; probing")

    def clear_admin_wait(self, now: float, fault: bool = False) -> Decision:
        """hagrp -clearadminwait [-fault]: verify with a monitor, or mark FAULTED (no clean)."""
        self._begin()
        self._need_started()
        if not self._state.admin_wait:
            return self._reject(now, "clear_admin_wait refused: not in ADMIN_WAIT")
        if fault:
            self._set(State.FAULTED)
            return self._finish(now, "marked FAULTED by the operator (clean not called)")
        self._verify_aw = True
        self._monitor_asap = self._probe_next = True
        return self._finish(now, "operator cleared ADMIN_WAIT; verifying with a monitor")

    def set_frozen(self, frozen: bool, now: float) -> Decision:
        """Freeze (group-level): monitors go on, online/offline/clean are not started.

        May be called before :meth:`start`, to start a machine of a frozen group frozen.
        """
        self._begin()
        if frozen == self._frozen:
            return self._finish(now)
        self._frozen = frozen
        if frozen and self._clean_due is not None:
            self._settle(now, "clean retry")
        return self._finish(now, "frozen" if frozen else "unfrozen")

    # --- monitor results --------------------------------------------------------------

    def _on_result(self, r: MonitorResult, now: float) -> None:
        s = self._state
        if s.admin_wait:
            self._aw_result(r, now)
        elif s is State.UNKNOWN:
            if r.state is _UNK:
                self._note(f"monitor: still UNKNOWN ({r.detail})")
                return
            self._state = self._prior  # the rules of the state before it apply again
            self._reschedule = True
            self._on_result(r, now)
        elif s is State.PROBING:
            self._probe_result(r, now)
        elif s is State.ONLINE:
            self._online_result(r, now)
        elif s in (State.OFFLINE, State.INTENTIONAL_OFFLINE):
            self._offline_result(r, now)
        elif s is State.FAULTED:
            if r.state is _ON:
                self._went_online(now, "online outside the agent's control: fault cleared", r)
        elif s in (State.GOING_ONLINE, State.RESTARTING):
            self._going_online_result(r, now)
        elif s is State.GOING_OFFLINE:
            self._going_offline_result(r, now)
        elif s is State.MIGRATING:
            self._migrating_result(r, now)
        else:
            self._note(f"monitor result ignored while {s.value}")

    def _probe_result(self, r: MonitorResult, now: float) -> None:
        intent, self._intent = self._intent, Intent.NONE
        if r.state is _UNK:
            self._intent = intent  # decided once the state is known
            self._to_unknown(State.PROBING, f"probe: {self._said(r)}")
        elif r.state is _ON:
            why = "probe"
            if intent is Intent.FAULT:
                why = "probe: online outside the agent's control, fault cleared"
            elif intent is Intent.OFFLINE:
                why = "probe: the interrupted offline is not resumed"
            self._went_online(now, why, r)
        elif intent is Intent.FAULT:
            self._set(State.FAULTED)
            self._note(f"probe: {self._said(r)}; the fault stands")
        elif r.state is _IO and self.policy.intentional_offline:
            self._set(State.INTENTIONAL_OFFLINE)
            self._note(f"probe: {self._said(r)}")
        elif intent in (Intent.ONLINE, Intent.RESTART):
            state = State.RESTARTING if intent is Intent.RESTART else State.GOING_ONLINE
            self._note(f"probe: {self._said(r)}")
            self._start_online(state, now, "resuming the online interrupted by an agent restart")
        else:
            self._set(State.OFFLINE)
            self._note(f"probe: {self._said(r)}")

    def _online_result(self, r: MonitorResult, now: float) -> None:
        policy = self.policy
        if r.state is _ON:
            if self._prev is State.ONLINE:
                self._check_conf_interval(now)
            else:  # back from UNKNOWN: the online run starts again
                self._stable_since = now
                self._note(f"monitor: {self._said(r)}")
        elif r.state is _UNK:
            self._to_unknown(State.ONLINE, f"monitor: {self._said(r)}; not a fault")
        elif not policy.offline_means_fault(r.state):
            self._set(State.INTENTIONAL_OFFLINE)
            self._note(f"monitor: {self._said(r)}; not a fault (IntentionalOffline=1)")
        elif self._frozen:
            self._set(self._offline_state(r))
            self._note(f"went offline while frozen ({self._said(r)}): not a fault, no action")
        else:
            self._tolerance += 1
            self._stable_since = now
            what = f"went offline unexpectedly ({self._said(r)})"
            if self._tolerance <= policy.tolerance_limit:
                self._set(State.ONLINE)
                limit = policy.tolerance_limit
                self._note(f"{what}, tolerated {self._tolerance} of {limit} (ToleranceLimit)")
            else:
                self._set(State.ONLINE)
                self._fault(CleanReason.UNEXPECTED_OFFLINE, what, now)

    def _check_conf_interval(self, now: float) -> None:
        """ConfInterval: counters are forgotten once every monitor for that long said ONLINE."""
        if not (self._tolerance or self._restarts):
            return
        since = self._stable_since
        conf = self.policy.effective_conf_interval
        if since is None or now - since >= conf:
            self._note(
                f"online for ConfInterval ({conf} s): ToleranceCount {self._tolerance} and "
                f"RestartCount {self._restarts} reset"
            )
            self._tolerance = self._restarts = 0

    def _offline_result(self, r: MonitorResult, now: float) -> None:
        if r.state is _ON:
            self._went_online(now, "online, not started by the agent", r)
        elif r.state is _UNK:
            self._to_unknown(self._state, f"monitor: {self._said(r)}")
        else:
            state = self._offline_state(r)
            if state is not self._state or self._prev is not state:
                self._set(state)
                self._note(f"monitor: {self._said(r)}")

    def _going_online_result(self, r: MonitorResult, now: float) -> None:
        restart = self._state is State.RESTARTING
        limit = self.policy.online_wait_limit
        if r.state is _ON:
            self._online_retries = 0
            self._went_online(now, "restarted" if restart else "online", r)
        elif r.state is _UNK:
            self._note(f"monitor: {self._said(r)}; not counted against OnlineWaitLimit")
        elif not self.policy.offline_means_fault(r.state):
            self._set(State.INTENTIONAL_OFFLINE)
            self._note(f"online attempt ended: {self._said(r)}; not retried")
        else:
            self._waits += 1
            if self._ep_failed:
                what = f"online failed and the monitor reports {self._said(r)}"
                self._online_failed(CleanReason.ONLINE_INEFFECTIVE, what, now)
            elif self._waits > limit:
                what = f"online ineffective: not online after {self._waits} monitors"
                self._online_failed(
                    CleanReason.ONLINE_INEFFECTIVE, f"{what} (OnlineWaitLimit {limit})", now
                )
            else:
                self._note(f"not online yet ({self._said(r)}), wait {self._waits} of {limit}")

    def _going_offline_result(self, r: MonitorResult, now: float) -> None:
        limit = self.policy.offline_wait_limit
        if r.state is _UNK:
            self._note(f"monitor: {self._said(r)}; not counted against OfflineWaitLimit")
        elif r.state is _ON:
            self._waits += 1
            if self._ep_failed:
                what = f"offline failed and the monitor reports {self._said(r)}"
                self._offline_failed(CleanReason.OFFLINE_INEFFECTIVE, what, now)
            elif self._waits > limit:
                what = f"offline ineffective: still online after {self._waits} monitors"
                self._offline_failed(
                    CleanReason.OFFLINE_INEFFECTIVE, f"{what} (OfflineWaitLimit {limit})", now
                )
            else:
                self._note(f"still online, wait {self._waits} of {limit}")
        else:
            self._tolerance = self._restarts = 0
            self._set(self._offline_state(r))
            self._note(f"offline ({self._said(r)})")

    def _migrating_result(self, r: MonitorResult, now: float) -> None:
        limit = self.policy.migrate_wait_limit
        target = self._migrate_target
        if r.state is _UNK:
            self._note(f"monitor: {self._said(r)}; not counted against MigrateWaitLimit")
        elif r.state is _ON:
            self._waits += 1
            if self._ep_failed:
                self._set(State.ONLINE)
                self._note(f"migration to {target} failed: still running here")
            elif self._waits > limit:
                self._set(State.ONLINE)
                self._note(
                    f"migration to {target} ineffective: still running here after "
                    f"{self._waits} monitors (MigrateWaitLimit {limit})"
                )
            else:
                self._note(f"still running here, wait {self._waits} of {limit}")
        else:
            # Gone from here: whatever the monitor calls it, this system's copy is offline.
            self._tolerance = self._restarts = 0
            self._set(State.OFFLINE)
            self._note(f"migrated to {target} ({self._said(r)})")

    def _aw_result(self, r: MonitorResult, now: float) -> None:
        wanted_online = self._state is not State.GOING_OFFLINE_ADMIN_WAIT
        ok = r.state is _ON if wanted_online else r.state in (ResourceState.OFFLINE, _IO)
        if self._aw_hung and self.policy.offline_means_fault(r.state):
            # The live process the ADMIN_WAIT protected is gone: nothing left to protect,
            # so the fault rules apply again (clean, restart) instead of waiting.
            self._aw_hung = self._verify_aw = False
            self._set(State.ONLINE)
            what = f"went offline while waiting for the operator ({self._said(r)})"
            self._fault(CleanReason.UNEXPECTED_OFFLINE, what, now)
            return
        if not self._verify_aw:
            return  # the operator decides; the result is kept in last_result
        self._verify_aw = False
        if not ok:
            need = "ONLINE" if wanted_online else "OFFLINE"
            self._note(f"ADMIN_WAIT stays: monitor reports {self._said(r)}, {need} required")
        elif wanted_online:
            self._tolerance = 0
            self._went_online(now, "ADMIN_WAIT cleared", r)
        else:
            self._set(self._offline_state(r))
            self._note(f"ADMIN_WAIT cleared ({self._said(r)})")

    # --- persistence ------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What the daemon persists: plain JSON-able values. Times are not kept."""
        return {
            "version": SNAPSHOT_VERSION,
            "name": self.name,
            "state": self._state.name,
            "prior": self._prior.name,
            "intent": self._intent.name,
            "goal": self._goal.name if self._goal else None,
            "clean_reason": int(self._clean_reason) if self._clean_reason is not None else None,
            "aw_reason": int(self._aw_reason) if self._aw_reason is not None else None,
            "aw_why": self._aw_why,
            "aw_hung": self._aw_hung,
            "frozen": self._frozen,
            "tolerance": self._tolerance,
            "restarts": self._restarts,
            "online_retries": self._online_retries,
            "migrate_target": self._migrate_target,
            "last": self._last.as_dict() if self._last else None,
            "seq": self._seq,
        }

    @classmethod
    def restore(cls, data: dict[str, Any], policy: ResourcePolicy | None = None) -> ResourceMachine:
        """Rebuild after a daemon restart. Call :meth:`start`: it probes before acting.

        The persisted state is only a hint for after the probe: an online that was under
        way is resumed when the probe shows the guest not running; an offline or clean
        is never re-issued; a fault stands unless the guest is found online.
        """
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {data.get('version')!r} is not {SNAPSHOT_VERSION}")
        m = cls(str(data["name"]), policy)
        saved = State[str(data["state"])]
        goal = Goal[str(data["goal"])] if data.get("goal") else None
        m._tolerance = int(data.get("tolerance", 0))
        m._restarts = int(data.get("restarts", 0))
        m._online_retries = int(data.get("online_retries", 0))
        m._migrate_target = str(data.get("migrate_target", ""))
        m._frozen = bool(data.get("frozen", False))
        m._seq = int(data.get("seq", 0))
        last = data.get("last")
        if isinstance(last, dict):
            m._last = MonitorResult(
                ResourceState(last["state"]), int(last["confidence"]), str(last["detail"])
            )
        if saved.admin_wait:
            # The operator's to resolve, whatever the probe says.
            m._state = saved
            reason = data.get("aw_reason")
            m._aw_reason = CleanReason(int(reason)) if reason is not None else None
            m._aw_why = str(data.get("aw_why") or "")
            m._aw_hung = bool(data.get("aw_hung", False))
            return m
        m._intent = _restored_intent(saved, goal, Intent[str(data.get("intent", "NONE"))])
        return m


def _restored_intent(saved: State, goal: Goal | None, intent: Intent) -> Intent:
    """What the probe after a restart decides about (see ResourceMachine._probe_result)."""
    if saved in (State.PROBING, State.UNKNOWN):
        return intent  # restarted again before the last probe settled it
    if saved is State.GOING_ONLINE:
        return Intent.ONLINE
    if saved is State.RESTARTING:
        return Intent.RESTART
    if saved is State.GOING_OFFLINE:
        return Intent.OFFLINE
    if saved is State.FAULTED:
        return Intent.FAULT
    if saved is State.CLEANING:
        return {
            Goal.FAULT: Intent.FAULT,
            Goal.RESTART: Intent.RESTART,
            Goal.RETRY_ONLINE: Intent.ONLINE,
            Goal.OFFLINE: Intent.OFFLINE,
            None: Intent.NONE,
        }[goal]
    return Intent.NONE
