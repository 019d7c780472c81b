"""The one small protocol the entry points are written against (KVM and RHEV alike).

Each method is bounded by the deadline it is given and raises
:class:`kvmguest.errors.AgentError` subclasses: ``Unreachable`` when the hypervisor or
manager cannot be asked (the monitor then says UNKNOWN), ``ConfigError`` for bad input,
``NotAllowed`` for refusals. ``probe`` never raises for an unreachable hypervisor: it
returns UNKNOWN itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from kvmguest.agents.kvmguest.params import GuestParams
from kvmguest.deadline import Deadline
from kvmguest.model.resolver import SystemInfo
from kvmguest.model.states import MonitorResult

Progress = Callable[[str], None]


class Hypervisor(Protocol):
    kind: str  # "kvm" or "rhev"

    def probe(self, guest: GuestParams, deadline: Deadline) -> MonitorResult:
        """The guest's state by the state table; UNKNOWN when it cannot be known."""
        ...

    def prepare_online(self, guest: GuestParams, deadline: Deadline) -> list[str]:
        """Define / resync the guest and attach the DR payload; returns notes for the log."""
        ...

    def start(self, guest: GuestParams, deadline: Deadline) -> None: ...

    def shutdown(self, guest: GuestParams, deadline: Deadline) -> None:
        """Ask the guest to shut down gracefully (returns once asked, not once off)."""
        ...

    def power_off(self, guest: GuestParams, deadline: Deadline) -> None:
        """Force the guest off (destroy / stop). Must work even when nothing else does."""
        ...

    def wait_changed(self, timeout: float) -> None:
        """Block until a lifecycle event may have changed a state, or ``timeout`` passes."""
        ...

    def definition(self, guest: GuestParams, deadline: Deadline) -> str | None:
        """The guest's persistent definition for SyncDir, or None where there is none."""
        ...

    def migrate(
        self, guest: GuestParams, target: SystemInfo, deadline: Deadline, progress: Progress
    ) -> None: ...

    def dev_scan(self, guest: GuestParams, deadline: Deadline) -> tuple[list[str], list[str]]:
        """(devices found fine, problems) for the guest's disks and CD-ROMs on this host."""
        ...

    def locate(self, guest: GuestParams, systems: list[SystemInfo], deadline: Deadline) -> str:
        """Where the guest runs now, as one line (for the guestmigrated action)."""
        ...

    def heartbeat(self, system: SystemInfo, deadline: Deadline) -> bool:
        """True when the control entity on ``system`` answers (CEInfo)."""
        ...

    def close(self) -> None: ...
