"""DockerContainer and DockerDaemon resources bound for the daemon and the one-shot
commands (the agents' Handle and Runtime, :mod:`kvmguest.agents.base`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kvmguest.agents.base import Env, EventSink, Outcome, Progress, TimedOut
from kvmguest.agents.docker import container as cep
from kvmguest.agents.docker import engine_ep as dep
from kvmguest.agents.docker import procs
from kvmguest.agents.docker.params import container_params, daemon_params, event_key
from kvmguest.deadline import Deadline
from kvmguest.model import states
from kvmguest.model.attributes import Typed
from kvmguest.model.resolver import Loaded
from kvmguest.model.states import MonitorResult, ResourceState

if TYPE_CHECKING:  # the daemon's: a one-shot command must not pay for asyncio
    import asyncio
    from concurrent.futures import Executor

    from kvmguest.agents.docker.events import EngineEvents


class ContainerHandle:
    """One DockerContainer resource, bound to this system."""

    process_name = "container process"

    def __init__(self, ctx: cep.Context, shared: bool) -> None:
        self.ctx = ctx
        p = ctx.params
        self.resource = p.resource
        self.host = p.host
        self.key = event_key(p.host, p.container_name)
        self.statics: Mapping[str, Typed] = p.statics
        self._shared = shared
        # The main process last seen running, with its start time: the evidence that the
        # container lives while its engine does not answer.
        self._pid: tuple[int, int | None] | None = None

    def timeout(self, entry_point: str) -> int:
        return self.ctx.params.timeout(entry_point)

    def monitor(self) -> MonitorResult:
        deadline = Deadline(self.ctx.params.timeout("Monitor"))
        result, doc = cep.monitor(self.ctx, deadline)
        if doc is not None:
            state = doc.get("State") or {}
            pid = state.get("Pid")
            if state.get("Status") == "running" and isinstance(pid, int) and pid > 0:
                self._pid = (pid, procs.start_time(pid))
            else:
                self._pid = None
        if doc is None and result.state is not ResourceState.ONLINE:
            # The engine said nothing (gone, hung): the process the last monitor saw is
            # the evidence; alive, the container runs whatever else seems to say.
            alive = self._alive_pid()
            if self._shared and deadline.expired():
                raise TimedOut(result.detail)
            if alive is not None:
                return states.unknown(f"{result.detail}; its main process {alive} is alive")
            if self._pid is not None and result.detail.startswith(cep.ENGINE_GONE):
                # It ran, and died with its engine (dockerd stopping or restarting): not a
                # fault of the container, and nothing can restart it before the engine is
                # back. UNKNOWN while the engine is away; once back, it tells.
                return states.unknown(f"{result.detail}; it ran until its engine went away")
        return result

    def _alive_pid(self) -> int | None:
        if self._pid is None:
            return None
        pid, started = self._pid
        return pid if procs.alive(pid, started) else None

    def online(self) -> Outcome:
        return cep.online(self.ctx)

    def offline(self) -> Outcome:
        return cep.offline(self.ctx)

    def clean(self, reason: int) -> Outcome:
        return cep.clean(self.ctx, reason)

    def migrate(self, target: str) -> Outcome:
        return Outcome(False, "a container does not live-migrate: switch its group (offline "
                       "here, online there)")  # fmt: skip

    def action(self, token: str, args: list[str]) -> Outcome:
        return cep.action(self.ctx, token, args)

    def set_progress(self, progress: Progress) -> None:
        self.ctx.progress = progress

    def wake(self) -> None:
        self.ctx.changed.set()

    def main_process(self) -> int | None:
        # The pid the last monitor saw running, while /proc says it is still that process.
        return self._alive_pid() if self._shared else None

    def process_exited(self, pid: int, result: MonitorResult) -> MonitorResult:
        return states.offline(f"container process {pid} exited ({result.detail})")

    def close(self) -> None:
        pass


class DaemonHandle:
    """One DockerDaemon resource (the engine), bound to this system."""

    process_name = "engine process"

    def __init__(self, ctx: dep.Context, shared: bool) -> None:
        self.ctx = ctx
        p = ctx.params
        self.resource = p.resource
        self.key = p.host
        self.statics: Mapping[str, Typed] = p.statics
        self._shared = shared

    def timeout(self, entry_point: str) -> int:
        return self.ctx.params.timeout(entry_point)

    def monitor(self) -> MonitorResult:
        deadline = Deadline(self.ctx.params.timeout("Monitor"))
        result = dep.monitor(self.ctx, deadline)
        if self._shared and result.state is ResourceState.UNKNOWN and deadline.expired():
            raise TimedOut(result.detail)
        return result

    def online(self) -> Outcome:
        return dep.online(self.ctx)

    def offline(self) -> Outcome:
        return dep.offline(self.ctx)

    def clean(self, reason: int) -> Outcome:
        return dep.clean(self.ctx, reason)

    def migrate(self, target: str) -> Outcome:
        return Outcome(False, "an engine does not migrate")

    def action(self, token: str, args: list[str]) -> Outcome:
        return dep.action(self.ctx, token, args)

    def set_progress(self, progress: Progress) -> None:
        self.ctx.progress = progress

    def wake(self) -> None:
        self.ctx.changed.set()

    def main_process(self) -> int | None:
        return self.ctx.engine_pid() if self._shared else None

    def process_exited(self, pid: int, result: MonitorResult) -> MonitorResult:
        return states.offline(f"engine process {pid} exited ({result.detail})")

    def close(self) -> None:
        pass


class ContainerRuntime:
    """What the DockerContainer resources of one process share: in the daemon, one event
    stream per engine, which wakes the resources' waits and monitors."""

    def __init__(self, env: Env, *, shared: bool) -> None:
        self.env = env
        self.shared = shared
        self.handles: list[ContainerHandle] = []

    def bind(
        self, loaded: Loaded, resource: str, *, progress: Progress | None = None
    ) -> ContainerHandle:
        ctx = cep.Context(container_params(loaded, resource, self.env.system), progress)
        handle = ContainerHandle(ctx, self.shared)
        self.handles.append(handle)
        return handle

    def events(
        self, sink: EventSink, loop: asyncio.AbstractEventLoop, pool: Executor
    ) -> EngineEvents | None:
        from kvmguest.agents.docker.events import EngineEvents

        hosts = sorted({h.host for h in self.handles})
        return EngineEvents(hosts, sink, loop, self.handles) if hosts else None

    def close(self) -> None:
        pass


class DaemonRuntime:
    def __init__(self, env: Env, *, shared: bool) -> None:
        self.env = env
        self.shared = shared

    def bind(
        self, loaded: Loaded, resource: str, *, progress: Progress | None = None
    ) -> DaemonHandle:
        ctx = dep.Context(daemon_params(loaded, resource, self.env.system), progress)
        return DaemonHandle(ctx, self.shared)

    def events(self, sink: EventSink, loop: asyncio.AbstractEventLoop, pool: Executor) -> None:
        # The engine's death is its process's exit (the daemon's pidfd watch).
        return None

    def close(self) -> None:
        pass
