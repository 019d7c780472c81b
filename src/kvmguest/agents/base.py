"""What every agent offers the layers above it, and what they hand it.

The daemon, the OCF adapter, the export and the CLI are written against these protocols
only; each resource type's folder under ``agents/`` implements them. Nothing here names a
type or imports a driver.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from kvmguest.agents.host import DEFAULT_CONFIG, DEFAULT_URI, local_system
from kvmguest.model.attributes import Typed
from kvmguest.model.states import MonitorResult, unknown

__all__ = ["DEFAULT_CONFIG", "DEFAULT_URI", "local_system"]  # and what is defined below

if TYPE_CHECKING:  # annotations only: the one-shot monitor must not pay for asyncio
    import asyncio
    from concurrent.futures import Executor

    from kvmguest.model.resolver import Loaded

Progress = Callable[[str], None]


# The VCS clean reasons (the framework passes one to every clean).
CLEAN_REASONS = {
    0: "offline hung (the offline entry point did not finish in time)",
    1: "offline ineffective (the guest was still running after offline)",
    2: "online hung (the online entry point did not finish in time)",
    3: "online ineffective (the guest did not come online)",
    4: "unexpected offline (the guest went offline unexpectedly)",
    5: "monitor hung (the monitor entry point kept timing out)",
}
ACTION_OUTPUT_LIMIT = 2048


@dataclass(frozen=True)
class Env:
    """Where an entry point runs: the config file, this system, the local managed system."""

    config: str = DEFAULT_CONFIG
    system: str | None = None
    uri: str | None = None

    @classmethod
    def from_environ(cls, config: str | None, system: str | None, uri: str | None) -> Env:
        return cls(
            config=config or os.environ.get("KVMGUEST_CONFIG", DEFAULT_CONFIG),
            system=local_system(system),
            uri=uri or os.environ.get("KVMGUEST_LIBVIRT_URI", DEFAULT_URI),
        )


class Ended(enum.Enum):
    """How an entry point ended: the framework's rules differ for each (VCS clean reasons)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Its deadline (the entry point's own timeout) passed: online hung, offline hung ...
    TIMED_OUT = "timed out"
    # The managed system refused the connection or is down: nothing was done.
    UNREACHABLE = "unreachable"


@dataclass
class Outcome:
    """How an entry point (other than monitor) ended, with its one-line reason.

    ``ended`` defaults from ``ok`` (SUCCEEDED or FAILED); an entry point names TIMED_OUT or
    UNREACHABLE itself.
    """

    ok: bool
    message: str
    warnings: list[str] = field(default_factory=list)
    output: str = ""
    ended: Ended = Ended.SUCCEEDED

    def __post_init__(self) -> None:
        if not self.ok and self.ended is Ended.SUCCEEDED:
            self.ended = Ended.FAILED
        if self.ok and self.ended is not Ended.SUCCEEDED:
            raise ValueError(f"an outcome that is ok cannot have ended {self.ended.value}")

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "message": self.message, "warnings": self.warnings,
                "output": self.output, "ended": self.ended.value}  # fmt: skip


class TimedOut(Exception):
    """Raised by :meth:`Handle.monitor` when the managed system did not answer within
    MonitorTimeout: the framework counts it toward FaultOnMonitorTimeouts. A managed system
    that refuses the connection is not a timeout: the monitor answers UNKNOWN."""


def monitor_once(handle: Handle) -> MonitorResult:
    """One monitor outside the daemon (a one-shot command, a probe on request): a monitor
    timeout is UNKNOWN, as the exit code table says (only the daemon counts timeouts)."""
    try:
        return handle.monitor()
    except TimedOut as e:
        return unknown(f"no answer within MonitorTimeout: {e}")


def cap_output(text: str) -> str:
    """An action's output, cut to ACTION_OUTPUT_LIMIT bytes (the VCS limit)."""
    data = text.encode()
    if len(data) <= ACTION_OUTPUT_LIMIT:
        return text
    return data[: ACTION_OUTPUT_LIMIT - 4].decode(errors="ignore") + "\n..."


class Handle(Protocol):
    """One resource of an agent, bound to this system: what the daemon and the CLI run.

    Every method is bounded by the entry point's own timeout and never raises for a
    managed system that cannot be reached (monitor answers UNKNOWN, the others fail).
    """

    resource: str
    # The name the agent's events carry for this resource (a guest's or container's name).
    key: str
    statics: Mapping[str, Typed]
    # What main_process() is, for the history: "QEMU process", "container process" ...
    process_name: str

    def timeout(self, entry_point: str) -> int:
        """OnlineTimeout, OfflineTimeout, MonitorTimeout ... of this resource."""
        ...

    def monitor(self) -> MonitorResult:
        """The resource's state. Bound for the daemon (``Runtime`` made with shared=True),
        raises :class:`TimedOut` past MonitorTimeout; otherwise answers UNKNOWN."""
        ...

    def online(self) -> Outcome: ...

    def offline(self) -> Outcome: ...

    def clean(self, reason: int) -> Outcome: ...

    def migrate(self, target: str) -> Outcome: ...

    def action(self, token: str, args: list[str]) -> Outcome: ...

    def set_progress(self, progress: Progress) -> None: ...

    def wake(self) -> None:
        """Something may have changed: cut short a wait of an entry point in progress."""
        ...

    def main_process(self) -> int | None:
        """The verified pid of the resource's main process on this host, when its death can
        be watched here (the daemon then sees it in milliseconds); None otherwise."""
        ...

    def process_exited(self, pid: int, result: MonitorResult) -> MonitorResult:
        """The monitor's answer once the watched process ``pid`` exited, given what the
        managed system still says (``result``)."""
        ...

    def close(self) -> None: ...


class EventSink(Protocol):
    """Where an agent's event source reports (the daemon's engine, on its loop)."""

    def resource_changed(self, key: str, what: str) -> None:
        """The resource known by ``key`` may have changed state."""
        ...

    def all_changed(self, what: str) -> None:
        """Any resource of this agent may have changed (a reconnect, a lost connection)."""
        ...

    def connection(self, source: str, up: bool, why: str, changed: bool) -> None:
        """The managed system is reachable for events (or no longer is); ``changed``: it
        was not so before."""
        ...


class EventSource(Protocol):
    """Pushes state changes of an agent's resources into the daemon (events, not polls)."""

    name: str  # for the history and the log: "libvirt", ...

    async def start(self) -> None:
        """Connect (bounded, off the loop); keeps reconnecting by itself after a loss."""
        ...

    async def stop(self) -> None:
        """Disconnect, bounded; never blocks the loop."""
        ...


class Runtime(Protocol):
    """An agent's state shared by the resources of one process (connections, caches)."""

    def bind(self, loaded: Loaded, resource: str, *, progress: Progress | None = None) -> Handle:
        """Raises KeyError for an unknown resource (message: the one-line reason)."""
        ...

    def events(
        self, sink: EventSink, loop: asyncio.AbstractEventLoop, pool: Executor
    ) -> EventSource | None: ...

    def close(self) -> None: ...
