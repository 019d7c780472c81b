"""Deadlines for everything that can hang.

A libvirt call, an HTTP request or a subprocess can block forever (a hung libvirtd, a
QEMU stuck in D state, an RHV-M behind a dead load balancer). Every entry point owns a
:class:`Deadline`; every call it makes is bounded by what is left of it.

A call that overruns is abandoned in its worker thread (a blocked C call cannot be
interrupted from Python); the caller gets :class:`DeadlineExceeded` at once and goes on.
Worker threads are daemons, so an abandoned call never keeps the process alive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
Clock = Callable[[], float]


class DeadlineExceeded(Exception):
    """A bounded call or wait ran out of time."""


class Deadline:
    def __init__(self, seconds: float, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.seconds = seconds
        self.expires_at = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.expires_at - self._clock())

    def expired(self) -> bool:
        return self._clock() >= self.expires_at

    def sub(self, seconds: float) -> Deadline:
        """A deadline no later than this one and at most ``seconds`` away."""
        return Deadline(min(seconds, self.remaining()), self._clock)

    def check(self, what: str) -> None:
        if self.expired():
            raise DeadlineExceeded(f"{what}: deadline of {self.seconds:g} s exceeded")


def call_with_deadline(fn: Callable[[], T], deadline: Deadline, what: str) -> T:
    """Run ``fn`` in a worker thread and wait for it no longer than ``deadline``."""
    if deadline.expired():
        raise DeadlineExceeded(f"{what}: no time left (deadline of {deadline.seconds:g} s)")
    box: list[T] = []
    err: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as e:  # handed to the caller, whatever it is
            err.append(e)
        finally:
            done.set()

    threading.Thread(target=run, name=f"bounded:{what}", daemon=True).start()
    if not done.wait(deadline.remaining()):
        raise DeadlineExceeded(f"{what}: no answer within {deadline.seconds:g} s")
    if err:
        raise err[0]
    return box[0]
