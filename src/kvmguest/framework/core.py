"""The engine room of the resource state machine: its state, scheduling, operator
requests, how entry points are started, and how failures escalate (clean, restart,
retry, FAULTED, ADMIN_WAIT).

:class:`kvmguest.framework.machine.ResourceMachine` adds the inputs and the monitor-result
rules on top; read that module first. Split in two only to keep each file readable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kvmguest.framework.decision import (
    Action,
    Decision,
    Outcome,
    RunClean,
    RunMigrate,
    RunMonitor,
    RunOffline,
    RunOnline,
    State,
)
from kvmguest.framework.policy import MONITOR_TIMEOUT_WINDOW, CleanReason, ResourcePolicy
from kvmguest.model.states import MonitorResult, ResourceState

# The executor is expected to report a timeout itself at the action's ``timeout``; the
# machine gives up on its own a little later, so a hung executor cannot stall a resource.
TIMEOUT_GRACE = 5.0

_ON = ResourceState.ONLINE
_IO = ResourceState.INTENTIONAL_OFFLINE


class Goal(enum.Enum):
    """What follows a successful clean."""

    FAULT = "FAULTED"
    RESTART = "restart"
    RETRY_ONLINE = "online retry"
    OFFLINE = "OFFLINE"


class Intent(enum.Enum):
    """What was under way when the daemon stopped (restored state); decided after the probe."""

    NONE = "none"
    ONLINE = "online"
    RESTART = "restart"
    OFFLINE = "offline"
    FAULT = "fault"


@dataclass(frozen=True)
class _Pending:
    action: Action
    deadline: float


class MachineCore:
    """One resource's framework state. Not thread-safe: drive it from one loop."""

    def __init__(self, name: str, policy: ResourcePolicy | None = None) -> None:
        self.name = name
        self.policy = policy or ResourcePolicy()
        self._state = State.PROBING
        self._prior = State.PROBING  # UNKNOWN only: the state whose rules apply again later
        self._intent = Intent.NONE
        self._goal: Goal | None = None
        self._clean_reason: CleanReason | None = None
        self._clean_aw = State.ONLINE_ADMIN_WAIT  # where exhausted clean retries lead
        self._aw_reason: CleanReason | None = None
        self._aw_why = ""  # the ADMIN_WAIT's reason, for status and history
        # ADMIN_WAIT because the managed system hung while the main process lived: a
        # definite OFFLINE later (the process died) is handled as a fault again.
        self._aw_hung = False
        self._verify_aw = False
        self._pending: _Pending | None = None
        self._seq = 0
        self._started = False
        self._frozen = False
        self._monitor_due: float | None = None
        self._reschedule = True
        self._monitor_asap = False
        self._probe_next = False
        self._clean_due: float | None = None
        self._queued: tuple[str, str] | None = None  # (request, migrate target)
        self._tolerance = 0
        self._restarts = 0
        self._online_retries = 0
        self._clean_failures = 0
        self._waits = 0
        self._ep_failed = False
        self._monitor_timeouts = 0
        self._first_monitor_timeout: float | None = None
        self._stable_since: float | None = None
        self._migrate_target = ""
        self._last: MonitorResult | None = None
        # Scratch for the decision being built.
        self._prev = State.PROBING
        self._actions: list[Action] = []
        self._notes: list[str] = []
        self._rejected = False

    # --- read-only view ---------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def frozen(self) -> bool:
        return self._frozen

    @property
    def outstanding(self) -> Action | None:
        """The entry point the machine is waiting for, if any."""
        return self._pending.action if self._pending else None

    @property
    def last_result(self) -> MonitorResult | None:
        return self._last

    @property
    def admin_wait_reason(self) -> str | None:
        """Why the resource waits for the operator (None when not in ADMIN_WAIT)."""
        if not self._state.admin_wait:
            return None
        return self._aw_why or "waiting for the operator"

    @property
    def clean_reason(self) -> CleanReason | None:
        """The reason of the clean under way, or of the ADMIN_WAIT the resource is in."""
        return self._aw_reason if self._state.admin_wait else self._clean_reason

    def counters(self) -> dict[str, int]:
        return {
            "ToleranceCount": self._tolerance,
            "RestartCount": self._restarts,
            "OnlineRetryCount": self._online_retries,
            "CleanFailures": self._clean_failures,
            "CurrentMonitorTimeoutCount": self._monitor_timeouts,
        }

    def next_wakeup(self) -> float | None:
        """When :meth:`tick` has something to do (may be in the past), or None."""
        if not self._started:
            return None
        if self._pending is not None:
            return self._pending.deadline
        if self._clean_due is not None:
            return self._clean_due
        return self._monitor_due

    # --- decision plumbing ------------------------------------------------------------

    def _begin(self) -> None:
        self._prev = self._state
        self._actions = []
        self._notes = []
        self._rejected = False

    def _need_started(self) -> None:
        if not self._started:
            raise RuntimeError(f"{self.name}: call start() before feeding the machine")

    def _note(self, text: str) -> None:
        if text:
            self._notes.append(text)

    def _reject(self, now: float, why: str) -> Decision:
        self._rejected = True
        return self._finish(now, why)

    def _finish(self, now: float, text: str = "") -> Decision:
        self._note(text)
        self._kick(now)
        log = f"{self.name} {self._state.value}: {'; '.join(self._notes)}" if self._notes else ""
        return Decision(
            self.name, self._prev, self._state, tuple(self._actions), log, self._rejected
        )

    def _set(self, state: State) -> None:
        self._state = state
        self._reschedule = True

    def _accept(self, action_id: int, what: str) -> bool:
        self._need_started()
        p = self._pending
        if p is None or p.action.id != action_id:
            self._note(f"ignoring a late {what} result (#{action_id}): no longer waited for")
            return False
        if (what == "monitor") != isinstance(p.action, RunMonitor):
            raise ValueError(f"{self.name}: #{action_id} is a {p.action.kind}, not a {what}")
        self._pending = None
        self._reschedule = True
        return True

    def _issue(self, action: Action, now: float) -> None:
        assert self._pending is None, "one entry point at a time"
        self._pending = _Pending(action, now + action.timeout + TIMEOUT_GRACE)
        self._actions.append(action)

    def _next_id(self) -> int:
        self._seq += 1
        return self._seq

    def _interval(self) -> float | None:
        if self._state in (State.OFFLINE, State.INTENTIONAL_OFFLINE, State.FAULTED):
            return self.policy.offline_monitor_interval or None
        if self._state is State.CLEANING:
            return None
        return float(self.policy.monitor_interval)

    def _kick(self, now: float) -> None:
        """Start whatever is due when no entry point runs."""
        if not self._started or self._pending is not None:
            return
        if self._clean_due is not None:
            if now < self._clean_due:
                return
            self._clean_due = None
            self._run_clean(now)  # frozen: settles instead, and a monitor follows
            if self._pending is not None:
                return
        if self._queued is not None:
            request, target = self._queued
            self._queued = None
            self._apply(request, target, now)
            if self._pending is not None:
                return
        if self._reschedule:
            self._reschedule = False
            interval = self._interval()
            self._monitor_due = None if interval is None else now + interval
        due = self._monitor_due is not None and now >= self._monitor_due
        if self._monitor_asap or due:
            probe = self._probe_next or self._state is State.PROBING
            self._monitor_asap = self._probe_next = False
            self._monitor_due = None
            self._reschedule = True
            self._issue(RunMonitor(self._next_id(), float(self.policy.monitor_timeout), probe), now)

    # --- operator requests ------------------------------------------------------------

    def _request(self, request: str, target: str, now: float) -> Decision:
        self._begin()
        self._need_started()
        why = self._refusal(request, target)
        if why is None:
            if self._pending is not None:
                if self._queued is not None:
                    self._note(f"replaces the queued {self._queued[0]}")
                self._queued = (request, target)
                return self._finish(now, f"{request} queued until the running monitor ends")
            self._apply(request, target, now)
            return self._finish(now)
        if why.startswith("!"):
            return self._reject(now, f"{request} refused: {why[1:]}")
        return self._finish(now, why)

    def _refusal(self, request: str, target: str) -> str | None:
        """None to go ahead; "!why" to refuse; plain text for a no-op."""
        s = self._state
        if self._frozen:
            return "!the group is frozen"
        if s.admin_wait:
            return f"!in {s.value}: clear it first (clear_admin_wait)"
        if s is State.PROBING:
            return "!not probed yet"
        if s is State.CLEANING:
            return "!clean in progress"
        if request == "online":
            if s in (State.ONLINE, State.GOING_ONLINE, State.RESTARTING):
                return "online: already online or going online"
            if s is State.FAULTED:
                return "!FAULTED: clear the fault first"
            if s is State.UNKNOWN:
                return "!state UNKNOWN: cannot tell whether the guest runs; probe it first"
            if s in (State.OFFLINE, State.INTENTIONAL_OFFLINE):
                return None
            return f"!{s.value} in progress"
        if request == "offline":
            if s in (State.OFFLINE, State.INTENTIONAL_OFFLINE, State.FAULTED, State.GOING_OFFLINE):
                return "offline: already offline or going offline"
            if s in (State.ONLINE, State.UNKNOWN):
                return None
            return f"!{s.value} in progress"
        if not target:
            return "!no migration target given"
        if s is not State.ONLINE:
            return f"!only an ONLINE resource can migrate (it is {s.value})"
        return None

    def _apply(self, request: str, target: str, now: float) -> None:
        why = self._refusal(request, target)
        if why is not None:  # a queued request that the monitor's result overtook
            self._rejected = why.startswith("!")
            self._note(f"queued {request} dropped: {why.lstrip('!')}")
            return
        if request == "online":
            self._online_retries = 0
            self._start_online(State.GOING_ONLINE, now, "online requested")
        elif request == "offline":
            self._start_offline(now)
        else:
            self._migrate_target = target
            self._waits, self._ep_failed = 0, False
            self._set(State.MIGRATING)
            timeout = float(self.policy.migrate_timeout)
            self._issue(RunMigrate(self._next_id(), timeout, target), now)
            self._note(f"migrating to {target}")

    # --- starting entry points (the frozen guard lives here) --------------------------

    def _settle(self, now: float, what: str) -> None:
        """Frozen: instead of acting, drop the plan and let the next monitor tell the state."""
        self._goal = None
        self._intent = Intent.NONE
        self._clean_due = None
        self._set(State.PROBING)
        self._monitor_asap = True
        self._note(f"group frozen: {what} not started; probing to settle the state")

    def _start_online(self, state: State, now: float, why: str) -> None:
        if self._frozen:
            self._settle(now, "online")
            return
        self._set(state)
        self._waits, self._ep_failed = 0, False
        self._issue(RunOnline(self._next_id(), float(self.policy.online_timeout)), now)
        self._note(why)

    def _start_offline(self, now: float) -> None:
        self._set(State.GOING_OFFLINE)
        self._waits, self._ep_failed = 0, False
        self._issue(RunOffline(self._next_id(), float(self.policy.offline_timeout)), now)
        self._note("offline requested")

    def _start_clean(
        self, reason: CleanReason, goal: Goal, aw: State, now: float, why: str
    ) -> None:
        self._note(why)
        if self._frozen:
            self._settle(now, "clean")
            return
        self._goal, self._clean_reason, self._clean_aw = goal, reason, aw
        self._clean_failures = 0
        self._set(State.CLEANING)
        self._run_clean(now)

    def _run_clean(self, now: float) -> None:
        if self._frozen:
            self._settle(now, "clean retry")
            return
        reason = self._clean_reason
        assert reason is not None, "a clean always has its reason"
        self._issue(RunClean(self._next_id(), float(self.policy.clean_timeout), reason), now)

    def _admin_wait(
        self, state: State, reason: CleanReason, why: str, because: str = "ManageFaults=NONE"
    ) -> None:
        self._set(state)
        self._aw_reason = reason
        self._aw_why = f"{why} ({because}, clean not called)"
        self._aw_hung = False
        self._verify_aw = False
        self._note(f"{why}: waiting for the operator ({because}, clean not called)")

    # --- entry point completions ------------------------------------------------------

    def _ep_done(self, action: Action, outcome: Outcome, detail: str, now: float) -> None:
        said = f"{action.kind} {outcome.value}{f' ({detail})' if detail else ''}"
        if isinstance(action, RunClean):
            self._clean_done(outcome, said, now)
            return
        if outcome is Outcome.SUCCEEDED:
            self._monitor_asap = True
            self._note(f"{said}; monitoring")
            return
        if isinstance(action, RunOnline) and outcome is Outcome.TIMED_OUT:
            limit = self.policy.online_timeout
            self._online_failed(
                CleanReason.ONLINE_HUNG, f"online hung (OnlineTimeout {limit} s)", now
            )
        elif isinstance(action, RunOffline) and outcome is Outcome.TIMED_OUT:
            limit = self.policy.offline_timeout
            why = f"offline hung (OfflineTimeout {limit} s)"
            self._offline_failed(CleanReason.OFFLINE_HUNG, why, now)
        else:
            # A failed online/offline, or a failed or hung migrate: the monitor says
            # where the guest is. A migrate is never followed by clean: the guest may be
            # running on the target already.
            self._ep_failed = True
            self._monitor_asap = True
            self._note(f"{said}; checking with a monitor")

    def _clean_done(self, outcome: Outcome, said: str, now: float) -> None:
        reason = self._clean_reason
        assert reason is not None, "a clean always has its reason"
        if outcome is not Outcome.SUCCEEDED:
            self._clean_failures += 1
            limit = self.policy.clean_retry_limit
            if limit and self._clean_failures > limit:
                self._set(self._clean_aw)
                self._aw_reason, self._goal, self._aw_hung = reason, None, False
                self._aw_why = (
                    f"clean failed {self._clean_failures} times (CleanRetryLimit {limit})"
                )
                self._note(f"{said}; CleanRetryLimit {limit} reached: waiting for the operator")
                return
            if self._frozen:
                self._note(said)
                self._settle(now, "clean retry")
                return
            self._clean_due = now + self.policy.monitor_interval
            of = f" of {limit}" if limit else ""
            self._note(
                f"{said}; retry {self._clean_failures}{of} in {self.policy.monitor_interval} s"
            )
            return
        goal, self._goal = self._goal, None
        self._clean_failures = 0
        self._note(f"clean (reason {int(reason)}, {reason.label}) succeeded")
        if goal is Goal.RESTART:
            self._start_online(State.RESTARTING, now, self._restart_text())
        elif goal is Goal.RETRY_ONLINE:
            retry = f"online retry {self._online_retries} of {self.policy.online_retry_limit}"
            self._start_online(State.GOING_ONLINE, now, retry)
        elif goal is Goal.OFFLINE:
            self._tolerance = self._restarts = 0
            self._set(State.OFFLINE)
        else:
            self._set(State.FAULTED)

    def _restart_text(self) -> str:
        return f"restart {self._restarts} of {self.policy.restart_limit}"

    # --- faults -----------------------------------------------------------------------

    def _fault(self, reason: CleanReason, what: str, now: float) -> None:
        """An ONLINE resource failed (unexpected offline, or monitor hung)."""
        why = f"{what} (clean reason {int(reason)})"
        self._tolerance = 0
        if self._frozen:
            self._note(why)
            self._settle(now, "fault handling")
        elif not self.policy.manages_faults:
            self._admin_wait(State.ONLINE_ADMIN_WAIT, reason, why)
        elif self._restarts < self.policy.restart_limit:
            self._restarts += 1
            goal_text = self._restart_text()
            self._start_clean(
                reason, Goal.RESTART, State.ONLINE_ADMIN_WAIT, now, f"{why}, {goal_text}"
            )
        else:
            limit = self.policy.restart_limit
            no = f"restart limit {limit} reached" if limit else "no restart (RestartLimit 0)"
            text = f"{why}, {no}: FAULTED once clean completes"
            self._start_clean(reason, Goal.FAULT, State.ONLINE_ADMIN_WAIT, now, text)

    def _online_failed(self, reason: CleanReason, what: str, now: float) -> None:
        why = f"{what} (clean reason {int(reason)})"
        aw = State.GOING_ONLINE_ADMIN_WAIT
        if self._frozen:
            self._note(why)
            self._settle(now, "clean")
        elif not self.policy.manages_faults:
            self._admin_wait(aw, reason, why)
        elif self._state is State.RESTARTING:
            if self._restarts < self.policy.restart_limit:
                self._restarts += 1
                self._start_clean(reason, Goal.RESTART, aw, now, f"{why}, {self._restart_text()}")
            else:
                text = f"{why}, restart limit reached: FAULTED once clean completes"
                self._start_clean(reason, Goal.FAULT, aw, now, text)
        elif self._online_retries < self.policy.online_retry_limit:
            self._online_retries += 1
            limit = self.policy.online_retry_limit
            text = f"{why}, online retry {self._online_retries} of {limit}"
            self._start_clean(reason, Goal.RETRY_ONLINE, aw, now, text)
        else:
            limit = self.policy.online_retry_limit
            no = f"OnlineRetryLimit {limit} reached" if limit else "no retry (OnlineRetryLimit 0)"
            self._start_clean(
                reason, Goal.FAULT, aw, now, f"{why}, {no}: FAULTED once clean completes"
            )

    def _offline_failed(self, reason: CleanReason, what: str, now: float) -> None:
        why = f"{what} (clean reason {int(reason)})"
        if self._frozen:
            self._note(why)
            self._settle(now, "clean")
        elif not self.policy.manages_faults:
            self._admin_wait(State.GOING_OFFLINE_ADMIN_WAIT, reason, why)
        else:
            text = f"{why}: OFFLINE once clean completes"
            self._start_clean(reason, Goal.OFFLINE, State.GOING_OFFLINE_ADMIN_WAIT, now, text)

    # --- monitor timeouts -------------------------------------------------------------

    def _monitor_timeout(self, now: float, what: str, alive: bool = False) -> None:
        first = self._first_monitor_timeout
        if first is None or now - first >= MONITOR_TIMEOUT_WINDOW:
            self._first_monitor_timeout, self._monitor_timeouts = now, 0
        self._monitor_timeouts += 1
        limit = self.policy.fault_on_monitor_timeouts
        count = self._monitor_timeouts
        reached = bool(limit) and count >= limit
        if reached:
            self._monitor_timeouts, self._first_monitor_timeout = 0, None
        hung = f"monitor timed out {count} times in a row (FaultOnMonitorTimeouts {limit})"
        counted = f"{count} of {limit}" if limit else "FaultOnMonitorTimeouts 0: never a fault"
        self._note(f"monitor timed out: {what} ({counted})")
        s = self._state
        if s is State.UNKNOWN and self._prior is State.ONLINE:
            s = State.ONLINE
        if s is State.ONLINE:
            self._stable_since = now
            if reached and alive and not self._frozen:
                # Our rule where VCS would clean: the managed system hangs, but the main
                # process verifiably lives. Clean would kill a healthy guest; the operator
                # decides instead.
                self._admin_wait(
                    State.ONLINE_ADMIN_WAIT, CleanReason.MONITOR_HUNG,
                    f"{hung}, while the main process is verifiably alive",
                    "the managed system hangs",
                )  # fmt: skip
                self._aw_hung = True
            elif reached:
                self._set(State.ONLINE)
                self._fault(CleanReason.MONITOR_HUNG, hung, now)
        elif s in (State.GOING_ONLINE, State.RESTARTING):
            if reached:
                self._online_failed(CleanReason.MONITOR_HUNG, hung, now)
        elif s is State.GOING_OFFLINE:
            if reached:
                self._offline_failed(CleanReason.MONITOR_HUNG, hung, now)
        elif s is State.MIGRATING:
            if reached:  # never clean after a migrate: the guest may run on the target
                self._to_unknown(State.PROBING, "state unknown after the migration")
        elif s in (State.OFFLINE, State.INTENTIONAL_OFFLINE, State.PROBING) and reached:
            self._to_unknown(s, "state unknown (no clean: it is not known to be online)")

    # --- monitor results --------------------------------------------------------------

    def _to_unknown(self, prior: State, why: str) -> None:
        self._prior = prior
        self._set(State.UNKNOWN)
        self._note(why)

    def _said(self, r: MonitorResult) -> str:
        conf = f", confidence {r.confidence}" if r.state is _ON else ""
        detail = f": {r.detail}" if r.detail else ""
        return f"{r.state.value}{conf}{detail}"

    def _went_online(self, now: float, why: str, r: MonitorResult) -> None:
        self._set(State.ONLINE)
        self._stable_since = now
        self._note(f"{why} ({self._said(r)})")

    def _offline_state(self, r: MonitorResult) -> State:
        if r.state is _IO and self.policy.intentional_offline:
            return State.INTENTIONAL_OFFLINE
        return State.OFFLINE
