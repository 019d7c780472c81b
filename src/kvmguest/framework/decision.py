"""What the state machine says: framework states, actions to run, and decisions.

A :class:`Decision` is the whole answer to one input: the state after it, the entry
point to run now (at most one: the framework never runs two entry points of one
resource at once, monitor included) and one readable log line.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kvmguest.framework.policy import CleanReason


class State(enum.Enum):
    """The framework's view of a resource (steady, transitional and ADMIN_WAIT states)."""

    PROBING = "PROBING"
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    INTENTIONAL_OFFLINE = "INTENTIONAL OFFLINE"
    UNKNOWN = "UNKNOWN"
    FAULTED = "FAULTED"
    GOING_ONLINE = "GOING ONLINE"
    GOING_OFFLINE = "GOING OFFLINE"
    CLEANING = "CLEANING"
    MIGRATING = "MIGRATING"
    RESTARTING = "RESTARTING"
    # ManageFaults=NONE (or CleanRetryLimit exhausted): the framework waits for the
    # operator instead of cleaning. Named after the state the fault was found in.
    ONLINE_ADMIN_WAIT = "ONLINE|ADMIN_WAIT"
    GOING_ONLINE_ADMIN_WAIT = "GOING ONLINE|ADMIN_WAIT"
    GOING_OFFLINE_ADMIN_WAIT = "GOING OFFLINE|ADMIN_WAIT"

    @property
    def admin_wait(self) -> bool:
        return self in ADMIN_WAIT_STATES

    @property
    def steady(self) -> bool:
        return self in STEADY_STATES


ADMIN_WAIT_STATES = frozenset(
    {State.ONLINE_ADMIN_WAIT, State.GOING_ONLINE_ADMIN_WAIT, State.GOING_OFFLINE_ADMIN_WAIT}
)
STEADY_STATES = frozenset(
    {State.ONLINE, State.OFFLINE, State.INTENTIONAL_OFFLINE, State.UNKNOWN, State.FAULTED}
)


class Outcome(enum.Enum):
    """How an online, offline, clean or migrate entry point ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed out"


@dataclass(frozen=True)
class RunMonitor:
    id: int
    timeout: float
    probe: bool = False  # the first monitor, or one the operator asked for

    @property
    def kind(self) -> str:
        return "monitor"


@dataclass(frozen=True)
class RunOnline:
    id: int
    timeout: float

    @property
    def kind(self) -> str:
        return "online"


@dataclass(frozen=True)
class RunOffline:
    id: int
    timeout: float

    @property
    def kind(self) -> str:
        return "offline"


@dataclass(frozen=True)
class RunClean:
    id: int
    timeout: float
    reason: CleanReason

    @property
    def kind(self) -> str:
        return "clean"


@dataclass(frozen=True)
class RunMigrate:
    id: int
    timeout: float
    target: str

    @property
    def kind(self) -> str:
        return "migrate"


Action = RunMonitor | RunOnline | RunOffline | RunClean | RunMigrate


@dataclass(frozen=True)
class Decision:
    """The answer to one input. ``log`` is empty when nothing worth a line happened."""

    resource: str
    previous: State
    state: State
    actions: tuple[Action, ...] = ()
    log: str = ""
    rejected: bool = False  # an operator request that was refused (log says why)

    @property
    def changed(self) -> bool:
        return self.previous is not self.state

    @property
    def action(self) -> Action | None:
        return self.actions[0] if self.actions else None
