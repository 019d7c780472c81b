"""Main-process exits into the daemon's asyncio loop: a pidfd on each watched process.

An agent's managed system notices a crash only once it has finished its own cleanup
(libvirt: ~1.4 s here); the process's pidfd becomes readable within milliseconds. The
engine watches the pid each running resource's handle names, so detection does not wait
for the managed system.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable


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
