"""The agent daemon's engine: the framework's state machines, driven by time, libvirt
events, QEMU exits and operator requests, running entry points on worker threads.

Everything here runs on one asyncio loop. The state machines (:mod:`kvmguest.framework`)
decide; this module only feeds them and carries out what they say. Entry points run on a
thread pool, each bounded by its own deadline, so a hung guest or libvirtd never stalls
the loop or the other guests.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import libvirt
from kvmguest.agent import entrypoints as ep
from kvmguest.agent.params import Loaded
from kvmguest.agent.runner import Env, context
from kvmguest.daemon.events import QemuWatch, qemu_pid
from kvmguest.daemon.metrics import Metrics
from kvmguest.daemon.store import Store
from kvmguest.deadline import Deadline, DeadlineExceeded
from kvmguest.errors import Unreachable
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
from kvmguest.framework.machine import ResourceMachine
from kvmguest.framework.policy import ResourcePolicy
from kvmguest.hypervisors.libvirt_conn import open_connection
from kvmguest.hypervisors.libvirt_kvm import LibvirtKVM
from kvmguest.model import states
from kvmguest.model.states import MonitorResult, ResourceState

log = logging.getLogger("kvmguest.daemon")

LOCAL_QEMU_URIS = ("qemu:///system",)
RECONNECT_BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
EVENTS_TIMEOUT = 30.0  # opening the events connection and registering for events
_LIFECYCLE = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}


@dataclass
class Resource:
    name: str
    group: str
    machine: ResourceMachine
    ctx: ep.Context
    since: float = field(default_factory=time.time)
    last_monitor: float | None = None
    # The QEMU pid whose exit we saw before libvirt did (monitor reports OFFLINE for it).
    qemu_exited: int | None = None
    event_at: float | None = None
    saved: dict[str, Any] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def guest(self) -> str:
        return self.ctx.params.guest_name

    def status(self) -> dict[str, Any]:
        last = self.machine.last_result
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
            "frozen": self.machine.frozen,
            "counters": self.machine.counters(),
        }


def _persisted(snap: dict[str, Any] | None) -> dict[str, Any] | None:
    """The snapshot without the action counter, which every routine monitor bumps: writing
    it each time cost a database write per monitor. After a restart nothing from before can
    report back, so a counter a little behind is harmless."""
    if snap is None:
        return None
    return {k: v for k, v in snap.items() if k != "seq"}


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def policy_of(params: Any) -> ResourcePolicy:
    return ResourcePolicy.from_attrs(params.statics)


class Engine:
    def __init__(
        self,
        loaded: Loaded,
        env: Env,
        store: Store,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loaded = loaded
        self.env = env
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.hv = LibvirtKVM(env.uri or "qemu:///system", events=False)
        self.resources: dict[str, Resource] = {}
        self.by_guest: dict[str, Resource] = {}
        self.wake = asyncio.Event()
        # (wake-up time, tie-break, resource): pushed at every decision, stale entries are
        # skipped when popped. A scan of every machine at every wake-up cost O(n) per
        # monitor: the daemon's top CPU consumer at 500 guests.
        self._due: list[tuple[float, int, str]] = []
        self._due_seq = itertools.count()
        self.stopping = False
        self.connected = False
        self._events_conn: Any = None
        self._callback_ids: list[int] = []
        self._reconnect_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.qemu = QemuWatch(self._loop)
        threads = 10
        self._build()
        if self.resources:
            first = next(iter(self.resources.values()))
            threads = max(4, first.ctx.params.static_int("NumThreads"))
        # Twice NumThreads: an abandoned (hung) call keeps a worker only until its deadline.
        self.pool = ThreadPoolExecutor(max_workers=threads * 2, thread_name_prefix="ep")

    # --- set-up ------------------------------------------------------------------------

    def _build(self) -> None:
        system = self.env.system
        saved = self.store.load_snapshots()
        for group_name, group in self.loaded.cfg.groups.items():
            sl = group.attrs.get("SystemList")
            if isinstance(sl, dict) and sl and system not in sl:
                continue  # this group never runs here
            for block in self.loaded.cfg.group_resources(group_name):
                if block.kind != "KVMGuest":
                    continue
                ctx = context(self.env, block.name, loaded=self.loaded, hv=self.hv)
                if ctx.params.rhev:
                    ctx = context(self.env, block.name, loaded=self.loaded)
                policy = policy_of(ctx.params)
                try:
                    snap = saved.get(block.name)
                    machine = (
                        ResourceMachine.restore(snap, policy)
                        if snap
                        else ResourceMachine(block.name, policy)
                    )
                except (ValueError, KeyError):
                    machine = ResourceMachine(block.name, policy)
                r = Resource(block.name, group_name, machine, ctx, saved=snap)
                self.resources[block.name] = r
                self.by_guest[ctx.params.guest_name] = r

    async def start(self) -> None:
        if not await self._connect_events():
            self._start_reconnect()
        now = self.clock()
        for r in self.resources.values():
            self.apply(r, r.machine.start(now))

    # --- libvirt events ----------------------------------------------------------------

    async def _connect_events(self) -> bool:
        """Open the events connection and register for lifecycle events, off the loop.

        Registering is an RPC: on the loop's thread a libvirtd that accepts but does not
        answer would stall every guest's monitoring, so it runs on a worker, bounded.
        """
        uri = self.env.uri or "qemu:///system"

        def connect() -> Any:
            conn = open_connection(uri, Deadline(EVENTS_TIMEOUT))
            with contextlib.suppress(libvirt.libvirtError):
                conn.registerCloseCallback(self._on_close, None)
            try:
                cid = conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
                )
            except libvirt.libvirtError as e:
                _close_quietly(conn)
                raise Unreachable(f"libvirt at {uri}: cannot register for events: {e}") from None
            return conn, cid

        try:
            fut = self._loop.run_in_executor(self.pool, connect)
            conn, cid = await asyncio.wait_for(fut, EVENTS_TIMEOUT + 5)
        except (Unreachable, TimeoutError) as e:
            self._set_connected(False, str(e) or f"libvirt at {uri}: no answer")
            return False
        try:
            alive = bool(conn.isAlive())
        except libvirt.libvirtError:
            alive = False
        if not alive:  # closed while registering: its close callback found us disconnected
            self.pool.submit(_close_quietly, conn)
            self._set_connected(False, f"libvirt at {uri}: the connection closed at once")
            return False
        self._events_conn = conn
        self._callback_ids = [cid]
        self._set_connected(True, f"connected to {uri}")
        return True

    def _set_connected(self, up: bool, why: str) -> None:
        if up != self.connected:
            (log.info if up else log.warning)("libvirt: %s", why)
            self.store.record("-", "libvirt", why)
        self.connected = up
        if self.metrics:
            self.metrics.libvirt_connected.set(1 if up else 0)

    def _on_close(self, _conn: Any, reason: int, _opaque: Any) -> None:
        # libvirt may call this on whichever thread noticed the close.
        self._on_loop(self._connection_lost, reason)

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            with contextlib.suppress(RuntimeError):  # loop closed: the daemon is exiting
                self._loop.call_soon_threadsafe(fn, *args)

    def _connection_lost(self, reason: int) -> None:
        if self.stopping or not self.connected:
            return
        dead, self._events_conn = self._events_conn, None
        self._callback_ids = []
        if dead is not None:
            self.pool.submit(_close_quietly, dead)  # close() may block: never on the loop
        self._set_connected(False, f"connection lost (reason {reason}); reconnecting")
        now = self.clock()
        for r in self.resources.values():  # monitor now: UNKNOWN while libvirtd is away
            self.apply(r, r.machine.event_hint(now, "libvirt connection lost"))
        self._start_reconnect()

    def _start_reconnect(self) -> None:
        # One reconnect loop at a time: each failed attempt used to start another one.
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        for attempt in itertools.count():
            if self.stopping:
                return
            await asyncio.sleep(RECONNECT_BACKOFF[min(attempt, len(RECONNECT_BACKOFF) - 1)])
            if self.stopping:
                return
            if await self._connect_events():
                now = self.clock()
                for r in self.resources.values():  # what changed while we were away?
                    self.apply(r, r.machine.event_hint(now, "libvirt reconnected"))
                return

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _op: Any) -> None:
        self._on_loop(self._lifecycle, dom.name(), event, detail)

    def _lifecycle(self, name: str, event: int, detail: int) -> None:
        r = self.by_guest.get(name)
        if r is None:
            return
        now = self.clock()
        r.event_at = now
        what = f"libvirt event: {_LIFECYCLE.get(event, str(event))} ({detail})"
        self.hv.notify_changed()
        self.apply(r, r.machine.event_hint(now, what))

    def _on_qemu_exit(self, r: Resource, pid: int) -> None:
        now = self.clock()
        r.qemu_exited = pid
        r.event_at = now
        self.store.record(r.name, "event", f"QEMU process {pid} exited")
        self.hv.notify_changed()
        self.apply(r, r.machine.event_hint(now, f"QEMU process {pid} exited"))

    def _watch_qemu(self, r: Resource, result: MonitorResult) -> MonitorResult:
        """Watch the running guest's QEMU; report OFFLINE once it exited, before libvirt does."""
        if (self.env.uri or "qemu:///system") not in LOCAL_QEMU_URIS or r.ctx.params.rhev:
            return result
        if result.state is not ResourceState.ONLINE:
            r.qemu_exited = None
            self.qemu.unwatch(r.name)
            return result
        pid = qemu_pid(r.guest)
        if r.qemu_exited is not None and pid in (None, r.qemu_exited):
            return states.offline(f"QEMU process {r.qemu_exited} exited (libvirt: {result.detail})")
        r.qemu_exited = None
        if pid is not None:
            self.qemu.watch(r.name, pid, lambda p: self._on_qemu_exit(r, p))
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
            log.info("%s", d.log)
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
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        while not self.stopping:
            now = self.clock()
            delay = max(0.0, self._due[0][0] - now) if self._due else 3600.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=min(delay, 3600.0))
            self.wake.clear()
            now = self.clock()
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
        ctx = r.ctx
        if isinstance(action, RunMonitor):
            result = await self._run(lambda: ep.monitor(ctx), states.unknown)
            assert isinstance(result, MonitorResult)
            result = self._watch_qemu(r, result)
            r.last_monitor = time.time()
            if self.metrics:
                self.metrics.monitor_seconds.labels(r.name).observe(self.clock() - started)
                self.metrics.confidence.labels(r.name).set(result.confidence)
            self.apply(r, r.machine.monitor_done(action.id, result, self.clock()))
            return
        call: Callable[[], ep.Outcome]
        if isinstance(action, RunOnline):
            call = lambda: ep.online(ctx)  # noqa: E731
        elif isinstance(action, RunOffline):
            call = lambda: ep.offline(ctx)  # noqa: E731
        elif isinstance(action, RunClean):
            call = lambda: ep.clean(ctx, int(action.reason))  # noqa: E731
        elif isinstance(action, RunMigrate):
            call = lambda: ep.migrate(ctx, action.target)  # noqa: E731
        else:  # pragma: no cover - the Action union is closed
            raise TypeError(action)
        outcome = await self._run(call, lambda msg: ep.Outcome(False, msg))
        assert isinstance(outcome, ep.Outcome)
        self.store.record(
            r.name, action.kind, ("succeeded: " if outcome.ok else "failed: ") + outcome.message
        )
        for w in outcome.warnings:
            self.store.record(r.name, "warning", w)
        result = Outcome.SUCCEEDED if outcome.ok else Outcome.FAILED
        self.apply(r, r.machine.entry_point_done(action.id, result, self.clock(), outcome.message))

    async def _run(self, fn: Callable[[], Any], on_error: Callable[[str], Any]) -> Any:
        try:
            return await self._loop.run_in_executor(self.pool, fn)
        except (DeadlineExceeded, Unreachable) as e:
            return on_error(str(e))
        except Exception as e:  # an entry point must never take the daemon down
            log.exception("entry point failed")
            return on_error(f"internal error: {type(e).__name__}: {e}")

    # --- operator requests -------------------------------------------------------------

    def resource(self, name: str) -> Resource:
        try:
            return self.resources[name]
        except KeyError:
            raise KeyError(f"no resource {name!r} runs on {self.env.system}") from None

    def request(self, r: Resource, what: str, target: str = "") -> Decision:
        now = self.clock()
        m = r.machine
        d = {
            "online": lambda: m.online(now),
            "offline": lambda: m.offline(now),
            "probe": lambda: m.probe(now),
            "clear": lambda: m.clear(now),
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

    async def run_action(self, r: Resource, token: str, args: list[str]) -> ep.Outcome:
        ctx = r.ctx
        out = await self._run(lambda: ep.action(ctx, token, args), lambda m: ep.Outcome(False, m))
        assert isinstance(out, ep.Outcome)
        self.store.record(r.name, "action", f"{token}: {out.message}")
        return out

    async def stop(self, grace: float = 30.0) -> None:
        """SIGTERM: stop deciding; let running entry points finish, bounded; leave guests."""
        self.stopping = True
        self.wake.set()
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()  # it may sleep for 30 s: nothing to wait for
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        self.qemu.close()
        conn, self._events_conn = self._events_conn, None
        ids = list(self._callback_ids)

        def close() -> None:
            if conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.unregisterCloseCallback()
                    for cid in ids:
                        conn.domainEventDeregisterAny(cid)
                _close_quietly(conn)
            self.hv.close()

        # RPCs to a libvirtd that may hang: bounded, and off the loop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loop.run_in_executor(self.pool, close), 5.0)
        self.pool.shutdown(wait=False, cancel_futures=True)
