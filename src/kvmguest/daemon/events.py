"""Events into the daemon's asyncio loop: libvirt lifecycle events and QEMU process exits.

libvirt's events come through ``libvirtaio``. libvirt calls the event-implementation hooks
(add/update/remove a handle or timeout) from whatever thread is talking to libvirtd — and
the daemon talks to it from worker threads, so that a hung call cannot stall the loop.
asyncio's loop is not thread-safe, so :class:`ThreadSafeAsyncIOImpl` runs each hook on the
loop's thread, in order, without making the calling thread wait (waiting deadlocks).

libvirt notices a QEMU crash only when it has finished its own cleanup (~1.4 s here); the
QEMU process's pidfd becomes readable within milliseconds. :class:`QemuWatch` watches it,
so detection does not wait for libvirt.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirtaio

from kvmguest.hypervisors.libvirt_conn import mark_event_impl

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


class QemuWatch:
    """Calls ``on_exit(pid)`` on the loop as soon as a watched QEMU process exits."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._fds: dict[str, tuple[int, int]] = {}  # key -> (pid, pidfd)

    def watched_pid(self, key: str) -> int | None:
        entry = self._fds.get(key)
        return entry[0] if entry else None

    def watch(self, key: str, pid: int, on_exit: Callable[[int], None]) -> bool:
        if self.watched_pid(key) == pid:
            return True
        self.unwatch(key)
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return False  # already gone, or not ours to see: the next monitor tells

        def readable() -> None:
            self.unwatch(key)
            on_exit(pid)

        self.loop.add_reader(fd, readable)
        self._fds[key] = (pid, fd)
        return True

    def unwatch(self, key: str) -> None:
        entry = self._fds.pop(key, None)
        if entry is None:
            return
        _pid, fd = entry
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(fd)
        with contextlib.suppress(OSError):
            os.close(fd)

    def close(self) -> None:
        for key in list(self._fds):
            self.unwatch(key)
