"""Events into the daemon's loop: the thread-safe libvirtaio implementation and the QEMU
process watch (pidfd)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import libvirt
from kvmguest.agents.kvmguest import events
from kvmguest.agents.kvmguest.events import ThreadSafeAsyncIOImpl, qemu_pid
from kvmguest.daemon.events import QemuWatch

READ = libvirt.VIR_EVENT_HANDLE_READABLE


@pytest.fixture(autouse=True)
def _no_free_callbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    # The opaque values of these tests are plain Python objects, not libvirt's.
    monkeypatch.setattr(libvirt, "virEventInvokeFreeCallback", lambda _opaque: None)


async def _until(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def test_hooks_from_a_thread_never_wait_for_the_loop() -> None:
    """The deadlock this guards against: libvirt calls a hook from a worker while holding a
    connection lock that the loop thread is waiting for. Here the loop thread itself waits
    for the worker: a hook that waited for the loop would never return."""

    async def main() -> None:
        impl = ThreadSafeAsyncIOImpl(asyncio.get_running_loop())
        fired: list[str] = []

        def worker() -> int:
            timer = impl._add_timeout(-1, lambda _t, op: fired.append(op), "tick")
            impl._update_timeout(timer, 1)  # ms
            return timer

        with ThreadPoolExecutor(1) as pool:
            t0 = time.monotonic()
            timer = pool.submit(worker).result(timeout=5)  # blocks the loop thread
            assert time.monotonic() - t0 < 4  # returned: the hook did not wait for the loop
            await _until(lambda: fired)
            assert fired[0] == "tick"
            pool.submit(impl._remove_timeout, timer).result(timeout=5)
            await _until(lambda: not impl.callbacks)

    asyncio.run(main())


def test_handles_added_updated_and_removed_from_threads_in_order() -> None:
    async def main() -> None:
        impl = ThreadSafeAsyncIOImpl(asyncio.get_running_loop())
        a, b = socket.socketpair()
        got: list[int] = []

        def on_read(_watch: int, fd: int, _event: int, _op: Any) -> None:
            got.append(fd)
            a.recv(100)

        with a, b, ThreadPoolExecutor(2) as pool:
            watch = pool.submit(impl._add_handle, a.fileno(), READ, on_read, None).result(5)
            b.send(b"x")
            await _until(lambda: got == [a.fileno()])
            pool.submit(impl._update_handle, watch, 0).result(5)  # stop watching
            await asyncio.sleep(0.05)
            b.send(b"y")
            await asyncio.sleep(0.1)
            assert got == [a.fileno()]
            a.recv(100)
            # add then remove at once, from another thread: applied in order, nothing left
            w2 = pool.submit(impl._add_handle, a.fileno(), READ, on_read, None).result(5)
            pool.submit(impl._remove_handle, w2).result(5)
            pool.submit(impl._remove_handle, watch).result(5)
            await _until(lambda: not impl.callbacks)
            assert not impl.descriptors

    asyncio.run(main())


def test_a_stale_id_from_libvirt_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        impl = ThreadSafeAsyncIOImpl(asyncio.get_running_loop())
        impl._update_timeout(12345, 10)  # on the loop thread: runs at once
        await asyncio.to_thread(impl._remove_handle, 999)
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert caplog.text.count("libvirt event hook failed") == 2


def test_qemu_watch_reports_the_exit_of_the_process() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        watch = QemuWatch(loop)
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        exited: list[tuple[int, float]] = []
        try:
            assert watch.watch("vm1", proc.pid, lambda pid: exited.append((pid, time.monotonic())))
            assert watch.watch("vm1", proc.pid, lambda pid: exited.append((-1, 0.0)))  # no-op
            assert watch.watched_pid("vm1") == proc.pid
            t0 = time.monotonic()
            proc.kill()
            await _until(lambda: exited)
            assert exited[0][0] == proc.pid
            assert exited[0][1] - t0 < 0.5  # the pidfd, not a poll
            assert watch.watched_pid("vm1") is None  # one report per process
        finally:
            proc.kill()
            proc.wait()
        assert not watch.watch("vm2", proc.pid, lambda _p: None)  # gone (reaped): False
        watch.close()

    asyncio.run(main())


def test_qemu_watch_unwatch_and_rewatch() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        watch = QemuWatch(loop)
        p1 = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        p2 = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            watch.watch("vm", p1.pid, lambda _p: None)
            fd1 = watch._fds["vm"][1]
            watch.watch("vm", p2.pid, lambda _p: None)  # a new QEMU replaces the old watch
            assert watch.watched_pid("vm") == p2.pid
            fd2 = watch._fds["vm"][1]
            readers = loop._selector.get_map()  # type: ignore[attr-defined]
            assert fd2 in readers and (fd1 == fd2 or fd1 not in readers)
            watch.unwatch("vm")
            assert watch.watched_pid("vm") is None and fd2 not in loop._selector.get_map()  # type: ignore[attr-defined]
            watch.unwatch("vm")  # twice is fine
        finally:
            for p in (p1, p2):
                p.kill()
                p.wait()
        watch.close()

    asyncio.run(main())


def test_qemu_pid_reads_libvirts_pid_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "QEMU_RUN_DIR", tmp_path)
    (tmp_path / "vm1.pid").write_text(f"{os.getpid()}\n")
    (tmp_path / "bad.pid").write_text("garbage")
    assert qemu_pid("vm1") == os.getpid()
    assert qemu_pid("bad") is None
    assert qemu_pid("missing") is None


def test_threads_hammering_hooks_while_the_loop_runs() -> None:
    """Many threads adding, updating and removing timers at once: every one is applied,
    nothing is left behind, the loop never blocks."""

    async def main() -> None:
        impl = ThreadSafeAsyncIOImpl(asyncio.get_running_loop())
        stop = threading.Event()

        def churn() -> None:
            for _ in range(200):
                t = impl._add_timeout(-1, lambda _t, _o: None, None)
                impl._update_timeout(t, 1000)
                impl._update_timeout(t, -1)
                impl._remove_timeout(t)
            stop.set()

        threads = [threading.Thread(target=churn) for _ in range(4)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        while any(t.is_alive() for t in threads):
            await asyncio.sleep(0.001)
            assert time.monotonic() - t0 < 20
        await _until(lambda: not impl.callbacks and not impl._ops)

    asyncio.run(main())
