"""Resource states, monitor results and the state tables (pure, no I/O).

The RHEV table is the seed's, verbatim. The KVM table is ours (DESIGN.md §4): it
maps libvirt's ``virDomainGetState`` state *and* reason, because the state alone
cannot tell a guest that crashed from one that was migrated away.
"""

from __future__ import annotations

import enum


class ResourceState(enum.Enum):
    """What a monitor can report. FAULTED is the framework's verdict, never a monitor's."""

    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    INTENTIONAL_OFFLINE = "INTENTIONAL OFFLINE"
    UNKNOWN = "UNKNOWN"


# VCS monitor entry-point exit codes.
EXIT_OFFLINE = 100
EXIT_INTENTIONAL_OFFLINE = 200
EXIT_UNKNOWN = 99


class MonitorResult:
    """One monitor's answer. Immutable.

    A plain class, not a dataclass: the OCF monitor imports this module on every call, and
    ``dataclasses`` (with ``inspect``) would cost it ~5 ms of a ~45 ms run.
    """

    __slots__ = ("confidence", "detail", "state")

    state: ResourceState
    confidence: int
    detail: str

    def __init__(self, state: ResourceState, confidence: int = 0, detail: str = "") -> None:
        if state is ResourceState.ONLINE and not 10 <= confidence <= 100:
            raise ValueError(f"ONLINE confidence must be 10..100, got {confidence}")
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "confidence", confidence)
        object.__setattr__(self, "detail", detail)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("MonitorResult is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MonitorResult):
            return NotImplemented
        return (self.state, self.confidence, self.detail) == (
            other.state, other.confidence, other.detail,
        )  # fmt: skip

    def __hash__(self) -> int:
        return hash((self.state, self.confidence, self.detail))

    def __repr__(self) -> str:
        return f"MonitorResult({self.state.name}, {self.confidence}, {self.detail!r})"

    @property
    def exit_code(self) -> int:
        """The VCS convention: 100 offline, 101..110 online (confidence/10), 200, 99."""
        if self.state is ResourceState.ONLINE:
            return 100 + max(1, min(10, self.confidence // 10))
        if self.state is ResourceState.OFFLINE:
            return EXIT_OFFLINE
        if self.state is ResourceState.INTENTIONAL_OFFLINE:
            return EXIT_INTENTIONAL_OFFLINE
        return EXIT_UNKNOWN

    def as_dict(self) -> dict[str, object]:
        return {"state": self.state.value, "confidence": self.confidence, "detail": self.detail}

    def line(self, resource: str) -> str:
        conf = f" (confidence {self.confidence})" if self.state is ResourceState.ONLINE else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{resource} {self.state.value}{conf}{detail}"


def online(confidence: int, detail: str) -> MonitorResult:
    return MonitorResult(ResourceState.ONLINE, confidence, detail)


def offline(detail: str) -> MonitorResult:
    return MonitorResult(ResourceState.OFFLINE, 0, detail)


def intentional_offline(detail: str) -> MonitorResult:
    return MonitorResult(ResourceState.INTENTIONAL_OFFLINE, 0, detail)


def unknown(detail: str) -> MonitorResult:
    return MonitorResult(ResourceState.UNKNOWN, 0, detail)


# --- RHEV (normative: the seed's table) -------------------------------------------------

_RHEV_TABLE: dict[str, tuple[ResourceState, int]] = {
    "wait_for_launch": (ResourceState.ONLINE, 10),
    "powering_up": (ResourceState.ONLINE, 60),
    "up": (ResourceState.ONLINE, 100),
    "powering_down": (ResourceState.ONLINE, 40),
    "paused": (ResourceState.ONLINE, 20),
    "down": (ResourceState.OFFLINE, 0),
    "saving_state": (ResourceState.INTENTIONAL_OFFLINE, 0),
    "suspended": (ResourceState.INTENTIONAL_OFFLINE, 0),
    "restoring_state": (ResourceState.ONLINE, 50),
    "migrating": (ResourceState.INTENTIONAL_OFFLINE, 0),
    "reboot_in_progress": (ResourceState.INTENTIONAL_OFFLINE, 0),
    "image_locked": (ResourceState.UNKNOWN, 0),
    "unknown": (ResourceState.UNKNOWN, 0),
    # Not in the seed; the API reports them. UNKNOWN never triggers a failover, and a VM
    # whose host stopped answering may well still be running there.
    "not_responding": (ResourceState.UNKNOWN, 0),
    "unassigned": (ResourceState.UNKNOWN, 0),
}


def rhev_state(vm_status: str) -> MonitorResult:
    """Map an oVirt ``VmStatus`` value to a monitor result (the seed's table)."""
    state, confidence = _RHEV_TABLE.get(vm_status, (ResourceState.UNKNOWN, 0))
    detail = f"VM status {vm_status}"
    if vm_status not in _RHEV_TABLE:
        detail += " (not in the state table)"
    return MonitorResult(state, confidence, detail)


RHEV_STATUSES: tuple[str, ...] = tuple(_RHEV_TABLE)


# --- KVM (ours, by analogy; DESIGN.md §4) -----------------------------------------------
# libvirt's virDomainState and reason numbers; stable ABI, spelled out so that this
# module needs no libvirt import.


class DomState(enum.IntEnum):
    NOSTATE = 0
    RUNNING = 1
    BLOCKED = 2
    PAUSED = 3
    SHUTDOWN = 4
    SHUTOFF = 5
    CRASHED = 6
    PMSUSPENDED = 7


class PausedReason(enum.IntEnum):
    UNKNOWN = 0
    USER = 1
    MIGRATION = 2
    SAVE = 3
    DUMP = 4
    IOERROR = 5
    WATCHDOG = 6
    FROM_SNAPSHOT = 7
    SHUTTING_DOWN = 8
    SNAPSHOT = 9
    CRASHED = 10
    STARTING_UP = 11
    POSTCOPY = 12
    POSTCOPY_FAILED = 13
    API_ERROR = 14


class ShutoffReason(enum.IntEnum):
    UNKNOWN = 0
    SHUTDOWN = 1
    DESTROYED = 2
    CRASHED = 3
    MIGRATED = 4
    SAVED = 5
    FAILED = 6
    FROM_SNAPSHOT = 7
    DAEMON = 8


class RunningReason(enum.IntEnum):
    UNKNOWN = 0
    BOOTED = 1
    MIGRATED = 2
    RESTORED = 3
    FROM_SNAPSHOT = 4
    UNPAUSED = 5
    MIGRATION_CANCELED = 6
    SAVE_CANCELED = 7
    WAKEUP = 8
    CRASHED = 9
    POSTCOPY = 10
    POSTCOPY_FAILED = 11


class JobOperation(enum.IntEnum):
    """virDomainJobOperation: tells an incoming migration from an outgoing one."""

    UNKNOWN = 0
    START = 1
    SAVE = 2
    RESTORE = 3
    MIGRATION_IN = 4
    MIGRATION_OUT = 5
    SNAPSHOT = 6
    SNAPSHOT_REVERT = 7
    DUMP = 8
    BACKUP = 9


def _name(enum_cls: type[enum.IntEnum], value: int) -> str:
    try:
        return enum_cls(value).name.lower().replace("_", " ")
    except ValueError:
        return f"reason {value}"


def kvm_state(
    state: int | None, reason: int = 0, job_operation: int | None = None
) -> MonitorResult:
    """Map libvirt's (state, reason) to a monitor result.

    ``state=None`` means the domain is not defined on this host. ``job_operation`` is
    only needed for paused(migration), which libvirt reports both on the source of an
    outgoing migration and on the destination of an incoming one.
    """
    if state is None:
        return offline("not defined on this host")
    try:
        st = DomState(state)
    except ValueError:
        return unknown(f"libvirt state {state} is not known to this agent")

    if st in (DomState.RUNNING, DomState.BLOCKED):
        if st is DomState.RUNNING and reason == RunningReason.POSTCOPY_FAILED:
            # Running on the destination with part of its memory still at the source.
            return unknown("running, but a post-copy migration failed")
        return online(100, st.name.lower())

    if st is DomState.PAUSED:
        what = "I/O error" if reason == PausedReason.IOERROR else _name(PausedReason, reason)
        if reason == PausedReason.STARTING_UP:
            return online(10, "paused: starting up")
        if reason == PausedReason.MIGRATION:
            if job_operation == JobOperation.MIGRATION_IN:
                return online(10, "paused: incoming migration")
            return intentional_offline("paused: migrating away")
        if reason == PausedReason.USER:
            return online(20, "paused by user")
        if reason == PausedReason.SHUTTING_DOWN:
            return online(40, "paused: shutting down")
        if reason in (
            PausedReason.SAVE,
            PausedReason.DUMP,
            PausedReason.SNAPSHOT,
            PausedReason.FROM_SNAPSHOT,
            PausedReason.POSTCOPY,
        ):
            return intentional_offline(f"paused: {what}")
        if reason in (PausedReason.CRASHED, PausedReason.WATCHDOG):
            # The guest kernel panicked or hung: it serves nothing. OFFLINE so that the
            # framework cleans (destroys) and restarts it.
            return offline(f"paused: {what}")
        # I/O error, post-copy failure, API error, unknown: the guest is not healthy,
        # but a restart elsewhere on the same (failing) storage may make it worse and
        # may lose data still in guest memory. UNKNOWN alerts without failing over.
        return unknown(f"paused: {what}")

    if st is DomState.SHUTDOWN:
        return online(40, "shutting down")

    if st is DomState.SHUTOFF:
        what = _name(ShutoffReason, reason)
        if reason in (ShutoffReason.MIGRATED, ShutoffReason.SAVED, ShutoffReason.FROM_SNAPSHOT):
            return intentional_offline(f"shut off: {what}")
        return offline(f"shut off: {what}")

    if st is DomState.CRASHED:
        return offline(f"crashed: {'panicked' if reason == 1 else 'unknown reason'}")

    if st is DomState.PMSUSPENDED:
        return intentional_offline("suspended by the guest (pmsuspended)")

    return unknown("libvirt reports no state")
