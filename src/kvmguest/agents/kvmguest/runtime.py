"""KVMGuest resources bound for the daemon and the one-shot commands (the agent's Handle
and Runtime, :mod:`kvmguest.agents.base`), over the entry points."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kvmguest.agents.base import Env, EventSink, Outcome, Progress, TimedOut
from kvmguest.agents.kvmguest import entrypoints as ep
from kvmguest.agents.kvmguest import procs
from kvmguest.agents.kvmguest.libvirt_kvm import LibvirtKVM
from kvmguest.agents.kvmguest.params import guest_params
from kvmguest.agents.kvmguest.runner import DEFAULT_URI, context
from kvmguest.model import states
from kvmguest.model.attributes import Typed
from kvmguest.model.resolver import Loaded
from kvmguest.model.states import MonitorResult, ResourceState

if TYPE_CHECKING:  # the daemon's: a one-shot command must not pay for asyncio, libvirtaio
    import asyncio
    from concurrent.futures import Executor

    from kvmguest.agents.kvmguest.events import LibvirtEvents

# The libvirt whose guests' QEMU processes the daemon watches: this host's own.
LOCAL_QEMU_URIS = ("qemu:///system",)


class KvmHandle:
    """One KVMGuest resource, bound to this system."""

    def __init__(self, ctx: ep.Context, watch_process: bool, report_timeouts: bool = True) -> None:
        self.ctx = ctx
        self.resource = ctx.params.resource
        self.key = ctx.params.guest_name
        self.statics: Mapping[str, Typed] = ctx.params.statics
        self.process_name = "QEMU process"
        self._watch = watch_process and not ctx.params.rhev
        self._timeouts = report_timeouts

    def timeout(self, entry_point: str) -> int:
        return self.ctx.params.timeout(entry_point)

    def monitor(self) -> MonitorResult:
        deadline = self.ctx.deadline("Monitor")
        result = ep.monitor(self.ctx, deadline)
        if self._timeouts and result.state is ResourceState.UNKNOWN and deadline.expired():
            # The whole MonitorTimeout went by without an answer: a hung libvirtd or RHV-M
            # (a refused connection answers UNKNOWN at once and is not a timeout).
            raise TimedOut(result.detail)
        return result

    def online(self) -> Outcome:
        return ep.online(self.ctx)

    def offline(self) -> Outcome:
        return ep.offline(self.ctx)

    def clean(self, reason: int) -> Outcome:
        return ep.clean(self.ctx, reason)

    def migrate(self, target: str) -> Outcome:
        return ep.migrate(self.ctx, target)

    def action(self, token: str, args: list[str]) -> Outcome:
        return ep.action(self.ctx, token, args)

    def set_progress(self, progress: Progress) -> None:
        self.ctx.progress = progress

    def wake(self) -> None:
        notify = getattr(self.ctx.hv, "notify_changed", None)
        if notify is not None:
            notify()

    def main_process(self) -> int | None:
        # Verified: the pid file's pid counts only while /proc says it is this guest's
        # QEMU. The daemon's evidence that a guest lives while libvirt does not answer.
        return procs.qemu_pid(self.key) if self._watch else None

    def process_exited(self, pid: int, result: MonitorResult) -> MonitorResult:
        return states.offline(f"QEMU process {pid} exited (libvirt: {result.detail})")

    def close(self) -> None:
        self.ctx.hv.close()


class KvmRuntime:
    """What the KVMGuest resources of one process share.

    In the daemon (``shared``) every KVM guest goes through one libvirt connection, whose
    waits the daemon's own lifecycle events wake; a one-shot command opens its own
    connection, with events, for the one resource it runs. An RHEV resource always has its
    own RHV-M session.
    """

    def __init__(self, env: Env, *, shared: bool) -> None:
        self.env = env
        self.uri = env.uri or DEFAULT_URI
        self.shared = shared
        self._hv: LibvirtKVM | None = None

    def _shared_hv(self) -> LibvirtKVM:
        if self._hv is None:
            self._hv = LibvirtKVM(self.uri, events=False)
        return self._hv

    def bind(self, loaded: Loaded, resource: str, *, progress: Progress | None = None) -> KvmHandle:
        hv = None
        if self.shared and not guest_params(loaded, resource, self.env.system).rhev:
            hv = self._shared_hv()
        ctx = context(self.env, resource, loaded=loaded, hv=hv, progress=progress)
        # The daemon counts monitor timeouts (TimedOut); a one-shot monitor answers UNKNOWN
        # (99), the only answer the VCS script convention has for it.
        return KvmHandle(
            ctx,
            watch_process=self.shared and self.uri in LOCAL_QEMU_URIS,
            report_timeouts=self.shared,
        )

    def events(
        self, sink: EventSink, loop: asyncio.AbstractEventLoop, pool: Executor
    ) -> LibvirtEvents:
        from kvmguest.agents.kvmguest.events import LibvirtEvents

        return LibvirtEvents(self.uri, sink, loop, pool, self._shared_hv())

    def close(self) -> None:
        if self._hv is not None:
            self._hv.close()
