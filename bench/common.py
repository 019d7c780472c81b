"""Shared bench helpers: a real guest on the host's libvirtd, timing, and reporting."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.system.guests import (  # noqa: E402
    GUEST_UP,
    domain_xml,
    scratch_dir,
    wait_for_console,
)

VIRTUAL_DOMAIN = "/usr/lib/ocf/resource.d/heartbeat/VirtualDomain"


@contextmanager
def running_guest(name: str, uri: str = "qemu:///system") -> Iterator[tuple[Path, Path]]:
    """A cooperative guest, defined from an XML file and running; (xml, dir). Removed after."""
    d = scratch_dir("bench-")
    xml = d / f"{name}.xml"
    serial = d / "serial.log"
    xml.write_text(domain_xml(name, "cooperative", serial_log=serial))
    conn = libvirt.open(uri)
    dom = conn.defineXML(xml.read_text())
    dom.create()
    try:
        wait_for_console(serial, GUEST_UP, 120)
        yield xml, d
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def p(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def time_calls(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def time_process(cmd: list[str], n: int, env: dict[str, str] | None = None,
                 ok: tuple[int, ...] = (0,)) -> tuple[list[float], list[float]]:  # fmt: skip
    """Wall time and CPU time (user+sys of the child tree) of ``cmd``, ``n`` times."""
    walls, cpus = [], []
    full_env = {**os.environ, **(env or {})}
    for _ in range(n):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=120)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if r.returncode not in ok:
            raise SystemExit(f"{cmd[0]} exited {r.returncode}: {r.stdout}{r.stderr}")
    return walls, cpus
