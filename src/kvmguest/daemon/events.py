"""Events into the daemon's asyncio loop: libvirt lifecycle events and QEMU process exits.

libvirt's events come through ``libvirtaio``. libvirt calls the event-implementation hooks
(add/update/remove a handle or timeout) from whatever thread is talking to libvirtd — and
the daemon talks to it from worker threads, so that a hung call cannot stall the loop.
asyncio's loop is not thread-safe, so :class:`ThreadSafeAsyncIOImpl` runs each hook on the
loop's thread and waits for it.

libvirt notices a QEMU crash only when it has finished its own cleanup (~1.4 s here); the
QEMU process's pidfd becomes readable within milliseconds. :class:`QemuWatch` watches it,
so detection does not wait for libvirt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirtaio

from kvmguest.hypervisors.libvirt_conn import mark_event_impl

QEMU_RUN_DIR = Path("/run/libvirt/qemu")
HOOK_TIMEOUT = 30.0


class ThreadSafeAsyncIOImpl(libvirtaio.virEventAsyncIOImpl):  # type: ignore[misc]
    """libvirtaio, with every hook marshalled onto the loop's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._loop_thread = threading.get_ident()

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        if threading.get_ident() == self._loop_thread:
            return fn(*args)
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as e:
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        return fut.result(HOOK_TIMEOUT)

    def _add_handle(self, fd: int, event: int, cb: Any, opaque: Any) -> int:
        return int(self._on_loop(super()._add_handle, fd, event, cb, opaque))

    def _update_handle(self, watch: int, event: int) -> None:
        self._on_loop(super()._update_handle, watch, event)

    def _remove_handle(self, watch: int) -> int:
        return int(self._on_loop(super()._remove_handle, watch))

    def _add_timeout(self, timeout: int, cb: Any, opaque: Any) -> int:
        return int(self._on_loop(super()._add_timeout, timeout, cb, opaque))

    def _update_timeout(self, timer: int, timeout: int) -> None:
        self._on_loop(super()._update_timeout, timer, timeout)

    def _remove_timeout(self, timer: int) -> int:
        return int(self._on_loop(super()._remove_timeout, timer))


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
