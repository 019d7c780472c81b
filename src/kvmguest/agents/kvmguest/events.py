"""The KVMGuest agent's event source for the daemon: libvirt lifecycle events.

libvirt's events come through ``libvirtaio``. libvirt calls the event-implementation hooks
(add/update/remove a handle or timeout) from whatever thread is talking to libvirtd — and
the daemon talks to it from worker threads, so that a hung call cannot stall the loop.
asyncio's loop is not thread-safe, so :class:`ThreadSafeAsyncIOImpl` runs each hook on the
loop's thread, in order, without making the calling thread wait (waiting deadlocks).

libvirt notices a QEMU crash only when it has finished its own cleanup (~1.4 s here); the
QEMU process's pidfd becomes readable within milliseconds. The daemon watches the pid that
:func:`qemu_pid` reads (through the resource's handle), so detection does not wait for
libvirt.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import libvirtaio

import libvirt
from kvmguest.agents.base import EventSink
from kvmguest.agents.kvmguest.libvirt_conn import mark_event_impl, open_connection
from kvmguest.agents.kvmguest.libvirt_kvm import LibvirtKVM
from kvmguest.deadline import Deadline
from kvmguest.errors import Unreachable

QEMU_RUN_DIR = Path("/run/libvirt/qemu")
log = logging.getLogger("kvmguest.daemon")


class ThreadSafeAsyncIOImpl(libvirtaio.virEventAsyncIOImpl):  # type: ignore[misc]
    """libvirtaio, with every hook carried out on the loop's thread, in call order, and
    without ever blocking the thread that calls it.

    A hook must not wait for the loop: libvirt calls ``update_handle`` (and the others)
    with the connection's client lock held, e.g. when a worker thread starts an RPC, and the
    loop thread may at that moment be dispatching an event of the same connection, blocked
    on that very lock. Waiting there deadlocks the loop (seen with 500 guests: every hook
    then ran into its timeout and the daemon stopped answering). So a hook only queues the
    operation and returns; ids are handed out here, at once, and mapped to libvirtaio's own
    ids when the operation runs on the loop. A call made on the loop's thread first runs
    what other threads queued before it, so the order libvirt called the hooks in is kept.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._loop_thread = threading.get_ident()
        self._ids = itertools.count(1)
        self._real: dict[int, int] = {}  # our id -> libvirtaio's id (loop thread only)
        self._ops: collections.deque[Callable[[], None]] = collections.deque()
        self._ops_lock = threading.Lock()
        self._drain_scheduled = False

    def _submit(self, op: Callable[[], None]) -> None:
        if threading.get_ident() == self._loop_thread:
            self._drain()
            self._run(op)
            return
        with self._ops_lock:
            self._ops.append(op)
            # Every RPC from a worker updates the handle twice: wake the loop once per
            # batch, not once per hook (a wake-up costs a pipe write and a loop turn).
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        # A loop already closed (daemon exiting) has no one left to serve: drop it.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        while True:
            with self._ops_lock:
                if not self._ops:
                    self._drain_scheduled = False
                    return
                op = self._ops.popleft()
            self._run(op)

    @staticmethod
    def _run(op: Callable[[], None]) -> None:
        try:
            op()
        except Exception:  # a stale id from libvirt must not take the loop down
            log.exception("libvirt event hook failed")

    def _add_handle(self, fd: int, event: int, cb: Any, opaque: Any) -> int:
        ours = next(self._ids)
        add = super()._add_handle

        def op() -> None:
            self._real[ours] = add(fd, event, cb, opaque)

        self._submit(op)
        return ours

    def _update_handle(self, watch: int, event: int) -> None:
        update = super()._update_handle
        self._submit(lambda: update(self._real[watch], event))

    def _remove_handle(self, watch: int) -> int:
        remove = super()._remove_handle
        self._submit(lambda: remove(self._real.pop(watch)))
        return 0

    def _add_timeout(self, timeout: int, cb: Any, opaque: Any) -> int:
        ours = next(self._ids)
        add = super()._add_timeout

        def op() -> None:
            self._real[ours] = add(timeout, cb, opaque)

        self._submit(op)
        return ours

    def _update_timeout(self, timer: int, timeout: int) -> None:
        update = super()._update_timeout
        self._submit(lambda: update(self._real[timer], timeout))

    def _remove_timeout(self, timer: int) -> int:
        remove = super()._remove_timeout
        self._submit(lambda: remove(self._real.pop(timer)))
        return 0


def register_event_impl(loop: asyncio.AbstractEventLoop) -> ThreadSafeAsyncIOImpl:
    """Make libvirtaio (thread-safe) libvirt's event implementation. Before any open()."""
    impl = ThreadSafeAsyncIOImpl(loop).register()
    mark_event_impl("asyncio")
    return impl  # type: ignore[no-any-return]


def qemu_pid(guest_name: str) -> int | None:
    try:
        return int((QEMU_RUN_DIR / f"{guest_name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


# --- the daemon's event source: libvirt lifecycle events ----------------------------------

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


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


class LibvirtEvents:
    """libvirt's lifecycle events of one connection, into the daemon's sink.

    Connects off the loop (registering is an RPC: a libvirtd that accepts but does not
    answer must not stall every guest's monitoring), notices a lost connection through the
    close callback, and reconnects with backoff, one loop at a time.
    """

    name = "libvirt"

    def __init__(
        self,
        uri: str,
        sink: EventSink,
        loop: asyncio.AbstractEventLoop,
        pool: Executor,
        hv: LibvirtKVM,
    ) -> None:
        self.uri = uri
        self.sink = sink
        self.loop = loop
        self.pool = pool
        self.hv = hv  # the shared connection of the entry points: woken at each event
        self.connected = False
        self.stopping = False
        self._loop_thread = threading.get_ident()
        self._conn: Any = None
        self._callback_ids: list[int] = []
        self._reconnect_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not await self._connect():
            self._start_reconnect()

    async def _connect(self) -> bool:
        uri = self.uri

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
            fut = self.loop.run_in_executor(self.pool, connect)
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
        self._conn = conn
        self._callback_ids = [cid]
        self._set_connected(True, f"connected to {uri}")
        return True

    def _set_connected(self, up: bool, why: str) -> None:
        changed = up != self.connected
        self.connected = up
        self.sink.connection(self.name, up, why, changed)

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        # libvirt may call back on whichever thread noticed the event or the close.
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            with contextlib.suppress(RuntimeError):  # loop closed: the daemon is exiting
                self.loop.call_soon_threadsafe(fn, *args)

    def _on_close(self, _conn: Any, reason: int, _opaque: Any) -> None:
        self._on_loop(self._connection_lost, reason)

    def _connection_lost(self, reason: int) -> None:
        if self.stopping or not self.connected:
            return
        dead, self._conn = self._conn, None
        self._callback_ids = []
        if dead is not None:
            self.pool.submit(_close_quietly, dead)  # close() may block: never on the loop
        self._set_connected(False, f"connection lost (reason {reason}); reconnecting")
        # Monitor now: UNKNOWN while libvirtd is away.
        self.sink.all_changed("libvirt connection lost")
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
            if await self._connect():
                self.sink.all_changed("libvirt reconnected")  # what changed while away?
                return

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _op: Any) -> None:
        self._on_loop(self._lifecycle, dom.name(), event, detail)

    def _lifecycle(self, name: str, event: int, detail: int) -> None:
        self.hv.notify_changed()
        what = f"libvirt event: {_LIFECYCLE.get(event, str(event))} ({detail})"
        self.sink.resource_changed(name, what)

    async def stop(self) -> None:
        self.stopping = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()  # it may sleep for 30 s: nothing to wait for
        conn, self._conn = self._conn, None
        ids = list(self._callback_ids)

        def close() -> None:
            if conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.unregisterCloseCallback()
                    for cid in ids:
                        conn.domainEventDeregisterAny(cid)
                _close_quietly(conn)

        # RPCs to a libvirtd that may hang: bounded, and off the loop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.loop.run_in_executor(self.pool, close), 5.0)
