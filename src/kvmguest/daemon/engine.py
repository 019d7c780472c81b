"""The agent daemon's engine: the framework's state machines, driven by time, the agents'
events, main-process exits and operator requests, running entry points on worker threads.

Everything here runs on one asyncio loop. The state machines (:mod:`kvmguest.framework`)
decide; this module only feeds them and carries out what they say. Entry points run on a
thread pool, each bounded by its own deadline, so a hung resource or managed system never
stalls the loop or the other resources. The engine knows no resource type: it binds each
resource through its type's agent (:mod:`kvmguest.agents.registry`) and takes events from
the event sources the agents provide.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kvmguest.agents import registry
from kvmguest.agents.base import Ended, Env, EventSource, Handle, Outcome, Runtime, TimedOut
from kvmguest.agents.coverage import groups_not_run, managed
from kvmguest.daemon.events import QemuWatch
from kvmguest.daemon.metrics import Metrics
from kvmguest.daemon.store import Store
from kvmguest.deadline import DeadlineExceeded
from kvmguest.errors import Unreachable
from kvmguest.framework.decision import (
    Action,
    Decision,
    RunClean,
    RunMigrate,
    RunMonitor,
    RunOffline,
    RunOnline,
    State,
)
from kvmguest.framework.decision import Outcome as EpEnded
from kvmguest.framework.machine import ResourceMachine
from kvmguest.framework.policy import ResourcePolicy
from kvmguest.model import states
from kvmguest.model.resolver import Loaded
from kvmguest.model.states import MonitorResult, ResourceState

log = logging.getLogger("kvmguest.daemon")

# An entry point reports its own timeout at its deadline; the engine stops waiting for it
# this much later (the worker is abandoned: every call it makes is bounded anyway).
RUN_SLACK = 2.0
_ENDED = {
    Ended.SUCCEEDED: EpEnded.SUCCEEDED,
    Ended.FAILED: EpEnded.FAILED,
    Ended.TIMED_OUT: EpEnded.TIMED_OUT,
    # Nothing was done: for the framework a failure, which a monitor then checks.
    Ended.UNREACHABLE: EpEnded.FAILED,
}


@dataclass
class Resource:
    name: str
    group: str
    machine: ResourceMachine
    handle: Handle
    kind: str  # the resource's type
    since: float = field(default_factory=time.time)
    last_monitor: float | None = None
    # Why the last entry point failed (e.g. a migration libvirt refused): `group switch`
    # reports it, not only `history`.
    last_failure: str | None = None
    # The main process whose exit we saw before the managed system did (monitor reports
    # OFFLINE for it).
    exited: int | None = None
    event_at: float | None = None
    saved: dict[str, Any] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def guest(self) -> str:
        return self.handle.key

    def status(self) -> dict[str, Any]:
        last = self.machine.last_result
        m = self.machine
        return {
            "resource": self.name,
            "group": self.group,
            "guest": self.guest,
            "state": self.machine.state.value,
            # The last ONLINE answer may predate an offline or a clean: only while ONLINE.
            "confidence": last.confidence
            if last and last.state is ResourceState.ONLINE and self.machine.state is State.ONLINE
            else 0,
            "detail": last.detail if last else "",
            "since": self.since,
            "last_monitor": self.last_monitor,
            "frozen": m.frozen,
            "admin_wait": m.admin_wait_reason,
            "counters": m.counters(),
        }


def _level(d: Decision) -> int:
    """What an operator sees without -v: every state change, louder for faults."""
    if not d.changed:
        return logging.DEBUG
    if d.state is State.FAULTED or d.state.admin_wait:
        return logging.ERROR
    if d.state in (State.CLEANING, State.RESTARTING, State.UNKNOWN):
        return logging.WARNING
    return logging.INFO


def _persisted(snap: dict[str, Any] | None) -> dict[str, Any] | None:
    """The snapshot without the action counter, which every routine monitor bumps: writing
    it each time cost a database write per monitor. After a restart nothing from before can
    report back, so a counter a little behind is harmless."""
    if snap is None:
        return None
    return {k: v for k, v in snap.items() if k != "seq"}


class _Sink:
    """An agent's event source reports here (on the loop): for the resources of its type."""

    def __init__(self, engine: Engine, kind: str) -> None:
        self.engine = engine
        self.kind = kind

    def resource_changed(self, key: str, what: str) -> None:
        r = self.engine.by_key.get((self.kind, key))
        if r is None:
            return
        now = self.engine.clock()
        r.event_at = now
        self.engine.apply(r, r.machine.event_hint(now, what))

    def all_changed(self, what: str) -> None:
        now = self.engine.clock()
        for r in list(self.engine.resources.values()):
            if r.kind == self.kind:
                self.engine.apply(r, r.machine.event_hint(now, what))

    def connection(self, source: str, up: bool, why: str, changed: bool) -> None:
        self.engine.set_connected(source, up, why, changed)


def _reraise(what: str, e: BaseException) -> None:
    raise RuntimeError(f"{what}: {type(e).__name__}: {e}") from e


class Engine:
    def __init__(
        self,
        loaded: Loaded,
        env: Env,
        store: Store,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        fatal: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        loaded.require_system(env.system)  # KeyError: a host outside the cluster
        self.loaded = loaded
        # Called when a task the engine owns dies of an unexpected exception: the daemon
        # must then exit (and be restarted), never stay alive without protecting.
        self.fatal = fatal or _reraise
        self.env = env
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.runtimes: dict[str, Runtime] = {}  # by type, for the types that run here
        # Group -> why it is not run (a resource of a type without an agent).
        self.not_run: dict[str, str] = {}
        # Called at every state change (the service propagates faults to parents).
        self.on_change: Callable[[Resource], None] = lambda r: None
        self.sources: list[EventSource] = []
        self.resources: dict[str, Resource] = {}
        self.by_key: dict[tuple[str, str], Resource] = {}  # (type, event key) -> resource
        self.wake = asyncio.Event()
        # (wake-up time, tie-break, resource): pushed at every decision, stale entries are
        # skipped when popped. A scan of every machine at every wake-up cost O(n) per
        # monitor: the daemon's top CPU consumer at 500 guests.
        self._due: list[tuple[float, int, str]] = []
        self._due_seq = itertools.count()
        self.stopping = False
        # The loop's longest sleep, and when it last went round (the watchdog's proof).
        self.max_sleep = 3600.0
        self.last_pass = clock()
        self._connected: dict[str, bool] = {}  # event source -> connected
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.get_running_loop()
        self.process = QemuWatch(self._loop)
        threads = 10
        self._build()
        if self.resources:
            first = next(iter(self.resources.values()))
            num = first.handle.statics["NumThreads"]
            threads = max(4, num if isinstance(num, int) else threads)
        # Twice NumThreads: an abandoned (hung) call keeps a worker only until its deadline.
        self.pool = ThreadPoolExecutor(max_workers=threads * 2, thread_name_prefix="ep")

    @property
    def connected(self) -> bool:
        """Every event source reaches its managed system (libvirt ...)."""
        return all(self._connected.values()) if self._connected else not self.sources

    # --- set-up ------------------------------------------------------------------------

    def _runtime(self, kind: str) -> Runtime | None:
        if kind not in self.runtimes:
            agent = registry.get(kind)
            if agent is None:
                return None  # a type kvmguest has no agent for: not run here
            self.runtimes[kind] = agent.runtime(self.env, shared=True)
        return self.runtimes[kind]

    def _build(self) -> None:
        system = self.env.system
        saved = self.store.load_snapshots()
        self.not_run = groups_not_run(self.loaded)
        for group_name, group in self.loaded.cfg.groups.items():
            sl = group.attrs.get("SystemList")
            if isinstance(sl, dict) and sl and system not in sl:
                continue  # this group never runs here
            if group_name in self.not_run:
                log.warning("group %s is not run: %s", group_name, self.not_run[group_name])
                continue
            for block in self.loaded.cfg.group_resources(group_name):
                if not managed(self.loaded, block):
                    continue
                runtime = self._runtime(block.kind)
                if runtime is None:
                    continue
                handle = runtime.bind(self.loaded, block.name)
                policy = ResourcePolicy.from_attrs(handle.statics)
                try:
                    snap = saved.get(block.name)
                    machine = (
                        ResourceMachine.restore(snap, policy)
                        if snap
                        else ResourceMachine(block.name, policy)
                    )
                except (ValueError, KeyError):
                    machine = ResourceMachine(block.name, policy)
                if self.store.reset_at is not None and not snap:
                    # The database was lost (moved aside as corrupt): frozen flags, faults
                    # and operator offlines with it. Nothing starts until an operator
                    # looks; the probe still tells the state.
                    machine.set_frozen(True, self.clock())
                r = Resource(block.name, group_name, machine, handle, block.kind, saved=snap)
                self.resources[block.name] = r
                self.by_key[(block.kind, handle.key)] = r

    async def start(self) -> None:
        for kind, runtime in self.runtimes.items():
            source = runtime.events(_Sink(self, kind), self._loop, self.pool)
            if source is not None:
                self.sources.append(source)
                self._connected[source.name] = False
                await source.start()
        now = self.clock()
        for r in self.resources.values():
            self.apply(r, r.machine.start(now))

    # --- events --------------------------------------------------------------------------

    def set_connected(self, source: str, up: bool, why: str, changed: bool) -> None:
        if changed:
            (log.info if up else log.warning)("%s: %s", source, why)
            self.store.record("-", source, why)
        self._connected[source] = up
        if self.metrics:
            self.metrics.libvirt_connected.set(1 if self.connected else 0)

    def _on_process_exit(self, r: Resource, pid: int) -> None:
        now = self.clock()
        r.exited = pid
        r.event_at = now
        what = f"{r.handle.process_name} {pid} exited"
        self.store.record(r.name, "event", what)
        r.handle.wake()
        self.apply(r, r.machine.event_hint(now, what))

    def _watch_process(self, r: Resource, result: MonitorResult) -> MonitorResult:
        """Watch the running resource's main process; report OFFLINE once it exited,
        before the managed system does."""
        if result.state is ResourceState.UNKNOWN:
            # The managed system cannot tell: keep watching the process (its exit is the
            # one thing still known) until it can.
            return result
        if result.state is not ResourceState.ONLINE:
            r.exited = None
            self.process.unwatch(r.name)
            return result
        pid = r.handle.main_process()
        if r.exited is not None and pid in (None, r.exited):
            return r.handle.process_exited(r.exited, result)
        r.exited = None
        if pid is not None:
            self.process.watch(r.name, pid, lambda p: self._on_process_exit(r, p))
        return result

    # --- the decision loop -------------------------------------------------------------

    def apply(self, r: Resource, d: Decision) -> None:
        # The snapshot first: it is what a restart resumes from. A history row written
        # before it would tell of a decision that a SIGKILL in between then forgets.
        snap = r.machine.snapshot()
        if _persisted(snap) != _persisted(r.saved):
            self.store.save_snapshot(r.name, snap)
            r.saved = snap
        if d.log:
            log.log(_level(d), "%s", d.log)
            self.store.record(r.name, "decision", d.log)
        if d.changed:
            r.since = time.time()
            r.changed.set()
            self.store.record(r.name, "state", f"{d.previous.value} -> {d.state.value}")
            if self.metrics:
                self.metrics.set_state(r.name, d.state.value)
                if d.state is State.FAULTED:
                    self.metrics.faults.labels(r.name).inc()
                if d.state is State.RESTARTING:
                    self.metrics.restarts.labels(r.name).inc()
            self.on_change(r)
        for action in d.actions:
            self._spawn(self._execute(r, action))
        self._schedule(r)
        self.wake.set()

    def _schedule(self, r: Resource) -> None:
        w = r.machine.next_wakeup()
        if w is not None:
            heapq.heappush(self._due, (w, next(self._due_seq), r.name))
        if len(self._due) > 4 * len(self.resources) + 1024:  # too many stale entries
            self._due = [
                (w, next(self._due_seq), n)
                for n, x in self.resources.items()
                if (w := x.machine.next_wakeup()) is not None
            ]
            heapq.heapify(self._due)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        e = task.exception()
        if e is not None:
            self.fatal("entry point task", e)

    async def run(self) -> None:
        while not self.stopping:
            now = self.last_pass = self.clock()
            delay = max(0.0, self._due[0][0] - now) if self._due else self.max_sleep
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=min(delay, self.max_sleep))
            self.wake.clear()
            now = self.last_pass = self.clock()
            due: dict[str, None] = {}  # each resource ticked at most once per pass
            while self._due and self._due[0][0] <= now:
                due[heapq.heappop(self._due)[2]] = None
            for name in due:
                r = self.resources[name]
                w = r.machine.next_wakeup()
                if w is not None and w <= now:
                    self.apply(r, r.machine.tick(now))

    async def _execute(self, r: Resource, action: Action) -> None:
        started = self.clock()
        if r.event_at is not None and self.metrics:
            self.metrics.event_to_action.labels(r.name).observe(started - r.event_at)
        r.event_at = None
        h = r.handle
        if isinstance(action, RunMonitor):
            try:
                result = await self._run(h.monitor, states.unknown, action.timeout)
            except TimedOut as e:
                alive = self._alive(r)
                pid = self.process.watched_pid(r.name)
                evidence = f"; {h.process_name} {pid} alive" if alive else ""
                self.store.record(r.name, "monitor", f"timed out: {e}{evidence}")
                log.warning("%s: monitor timed out: %s%s", r.name, e, evidence)
                if self.metrics:
                    self.metrics.monitor_timeouts.labels(r.name).inc()
                d = r.machine.monitor_timed_out(action.id, self.clock(), alive, str(e))
                self.apply(r, d)
                return
            assert isinstance(result, MonitorResult)
            result = self._watch_process(r, result)
            r.last_monitor = time.time()
            if self.metrics:
                self.metrics.monitor_seconds.labels(r.name).observe(self.clock() - started)
                self.metrics.confidence.labels(r.name).set(result.confidence)
            self.apply(r, r.machine.monitor_done(action.id, result, self.clock()))
            return
        call: Callable[[], Outcome]
        if isinstance(action, RunOnline):
            call = h.online
        elif isinstance(action, RunOffline):
            call = h.offline
        elif isinstance(action, RunClean):
            call = lambda: h.clean(int(action.reason))  # noqa: E731
        elif isinstance(action, RunMigrate):
            call = lambda: h.migrate(action.target)  # noqa: E731
        else:  # pragma: no cover - the Action union is closed
            raise TypeError(action)
        try:
            outcome = await self._run(call, lambda msg: Outcome(False, msg), action.timeout)
        except TimedOut as e:
            outcome = Outcome(False, str(e), ended=Ended.TIMED_OUT)
        assert isinstance(outcome, Outcome)
        said = f"{outcome.ended.value}: {outcome.message}"
        self.store.record(r.name, action.kind, said)
        if not outcome.ok:
            log.warning("%s: %s %s", r.name, action.kind, said)
        elif isinstance(action, RunClean):
            log.warning("%s: clean (reason %d) %s", r.name, int(action.reason), said)
        r.last_failure = None if outcome.ok else f"{action.kind} failed: {outcome.message}"
        for w in outcome.warnings:
            self.store.record(r.name, "warning", w)
            log.warning("%s: %s", r.name, w)
        self.apply(
            r, r.machine.entry_point_done(action.id, _ENDED[outcome.ended], self.clock(),
                                          outcome.message)
        )  # fmt: skip

    def _alive(self, r: Resource) -> bool:
        """The resource's main process verifiably lives: the handle finds the same pid
        (checked against /proc) that the daemon's pidfd watches, and it has not exited."""
        watched = self.process.watched_pid(r.name)
        return watched is not None and r.exited is None and r.handle.main_process() == watched

    async def _run(
        self, fn: Callable[[], Any], on_error: Callable[[str], Any], timeout: float | None = None
    ) -> Any:
        """``fn`` on a worker, bounded by ``timeout`` (the action's own) plus a little slack
        for the entry point to report its own timeout first; TimedOut past it."""
        try:
            job = self._loop.run_in_executor(self.pool, fn)
            if timeout is None:
                return await job
            try:
                return await asyncio.wait_for(job, timeout + RUN_SLACK)
            except TimeoutError:
                raise TimedOut(f"no answer within {timeout:g} s") from None
        except TimedOut:
            raise
        except (DeadlineExceeded, Unreachable) as e:
            return on_error(str(e))
        except Exception as e:  # an entry point must never take the daemon down
            log.error("entry point failed: %s: %s", type(e).__name__, e)
            log.debug("entry point failure", exc_info=True)
            return on_error(f"internal error: {type(e).__name__}: {e}")

    # --- operator requests -------------------------------------------------------------

    def resource(self, name: str) -> Resource:
        try:
            return self.resources[name]
        except KeyError:
            block = self.loaded.cfg.resources.get(name)
            if block is not None and block.group in self.not_run:
                why = self.not_run[block.group]
                raise KeyError(f"{name}: group {block.group} is not run: {why}") from None
            raise KeyError(f"no resource {name!r} runs on {self.env.system}") from None

    def request(self, r: Resource, what: str, target: str = "") -> Decision:
        now = self.clock()
        m = r.machine
        d = {
            "online": lambda: m.online(now),
            "offline": lambda: m.offline(now),
            "probe": lambda: m.probe(now),
            "clear": lambda: m.clear_admin_wait(now) if m.state.admin_wait else m.clear(now),
            "freeze": lambda: m.set_frozen(True, now),
            "unfreeze": lambda: m.set_frozen(False, now),
            "migrate": lambda: m.migrate(target, now),
        }[what]()
        # Accepted only once apply() has saved the machine's new intent: the "request" row
        # promises that a restart resumes it.
        self.apply(r, d)
        self.store.record(r.name, "request", f"{what}{' ' + target if target else ''}")
        return d

    async def wait_for(self, r: Resource, done: Callable[[State], bool], timeout: float) -> State:
        """Wait until the resource's state satisfies ``done`` (or the timeout passes)."""
        deadline = self.clock() + timeout
        while not done(r.machine.state) and self.clock() < deadline:
            r.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(r.changed.wait(), timeout=max(0.0, deadline - self.clock()))
        return r.machine.state

    async def probe_now(self, r: Resource) -> MonitorResult:
        """A monitor for an operator (``kvmguest monitor``), outside the framework's own:
        its answer feeds no decision."""
        timeout = float(r.handle.timeout("Monitor"))
        try:
            result = await self._run(r.handle.monitor, states.unknown, timeout)
        except TimedOut as e:
            return states.unknown(f"monitor: {e}")
        assert isinstance(result, MonitorResult)
        return result

    async def run_action(self, r: Resource, token: str, args: list[str]) -> Outcome:
        h = r.handle
        timeout = float(h.timeout("Action"))
        try:
            out = await self._run(lambda: h.action(token, args), lambda m: Outcome(False, m),
                                  timeout)  # fmt: skip
        except TimedOut as e:
            out = Outcome(False, f"action {token}: {e}", ended=Ended.TIMED_OUT)
        assert isinstance(out, Outcome)
        self.store.record(r.name, "action", f"{token}: {out.message}")
        return out

    async def stop(self, grace: float = 30.0) -> None:
        """SIGTERM: stop deciding; let running entry points finish, bounded; leave the
        resources as they are."""
        self.stopping = True
        self.wake.set()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        self.process.close()
        for source in self.sources:
            await source.stop()

        def close() -> None:
            for runtime in self.runtimes.values():
                runtime.close()

        # Closing may be an RPC to a managed system that hangs: bounded, and off the loop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loop.run_in_executor(self.pool, close), 5.0)
        self.pool.shutdown(wait=False, cancel_futures=True)
