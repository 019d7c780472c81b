"""The agent daemon's own cost while it monitors many guests: CPU (% of one core, from
/proc/PID/stat utime+stime over a window) and memory (RSS now and peak).

1. N guests (default 500) on libvirt's test driver served by the host's libvirtd
   (``test+unix:///default``: every monitor is a real RPC to libvirtd), with the default
   MonitorInterval 60, then with MonitorInterval 10;
2. 10 real TCG guests on ``qemu:///system`` (events and QEMU pidfds watched, default
   MonitorInterval 60).

    .venv/bin/python bench/daemon_scale.py [--guests 500] [--window 120] [--window10 60]
        [--real 10] [--real-window 120] [--json FILE]

Targets: CPU < 2 % of one core and RSS < 150 MiB at 500 guests (MonitorInterval 60).
Needs the host's libvirtd (with its test driver) and, for 2, the test guest images.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
from daemon_common import (
    GUEST_UP,
    Daemon,
    cpu_and_rss,
    domain_xml,
    poll,
    remove_domain,
    scratch_dir,
    wait_for_console,
)

TEST_URI = "test+unix:///default"


def log(msg: str) -> None:
    print(msg, flush=True)


def config(guests: list[tuple[str, str]], interval: int | None, autostart: bool) -> str:
    """main.cf: groups of 10; ``guests`` is (GuestName, extra attribute lines)."""
    lines = ["cluster c ( )", "system host1 ( )"]
    for g in range(0, len(guests), 10):
        auto = "\n    AutoStartList = { host1 }" if autostart else ""
        lines.append(f"group sg{g // 10} (\n    SystemList = {{ host1 = 0 }}{auto}\n    )")
        for i, (name, extra) in enumerate(guests[g : g + 10], start=g):
            mi = f"\n        MonitorInterval = {interval}" if interval else ""
            body = f"GuestName = {name}{mi}{extra}"
            lines.append(f"    KVMGuest r{i:04d} (\n        {body}\n        )")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def test_driver_domains(n: int) -> Iterator[list[str]]:
    """N running domains on the test driver, held by our connection: the driver's default
    state lives only while some connection is open."""
    conn = libvirt.open(TEST_URI)
    names = [f"kvmgs-{i:04d}-{os.getpid()}" for i in range(n)]
    for name in names:
        dom = conn.defineXML(
            f"<domain type='test'><name>{name}</name><memory>1024</memory>"
            "<os><type>hvm</type></os></domain>"
        )
        dom.create()
    try:
        yield names
    finally:
        for name in names:
            with contextlib.suppress(libvirt.libvirtError):
                dom = conn.lookupByName(name)
                dom.destroy()
                dom.undefine()
        conn.close()


def all_online(d: Daemon, n: int) -> bool:
    states = d.states()
    return len(states) == n and all(s == "ONLINE" for s in states.values())


def measure(d: Daemon, n: int, window: float, label: str) -> dict[str, Any]:
    t0 = time.monotonic()
    d.start()
    poll(lambda: all_online(d, n), 600, f"{n} resources ONLINE", step=0.5)
    log(f"  {label}: {n} resources ONLINE {time.monotonic() - t0:.1f} s after start; "
        f"measuring {window:g} s")  # fmt: skip
    m = cpu_and_rss(d.pid, window)
    log(f"  {label}: CPU {m['cpu_percent']:.2f} % of one core, RSS {m['rss_mib']:.1f} MiB "
        f"(peak {m['rss_peak_mib']:.1f}), {m['threads']} threads, {m['fds']} fds")  # fmt: skip
    return m


def bench_test_driver(n: int, window: float, window10: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = scratch_dir("dscale-")
    try:
        with test_driver_domains(n) as names:
            for interval, win in ((None, window), (10, window10)):
                label = f"{n} test-driver guests, MonitorInterval {interval or 60}"
                cfg = config([(x, "") for x in names], interval, autostart=False)
                d = Daemon(base / f"mi{interval or 60}", cfg, uri=TEST_URI)
                try:
                    out[f"test{n}_mi{interval or 60}"] = measure(d, n, win, label)
                finally:
                    d.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


def bench_real(n: int, window: float) -> dict[str, Any]:
    base = scratch_dir("dscale-real-")
    names = [f"kvmgs-real{i}-{os.getpid()}" for i in range(n)]
    guests = []
    for name in names:
        xml, serial = base / f"{name}.xml", base / f"{name}.serial.log"
        xml.write_text(domain_xml(name, "cooperative", serial_log=serial))
        guests.append((name, f'\n        GuestConfigFilePath = "{xml}"'))
    d = Daemon(base / "agent", config(guests, None, autostart=True))
    try:
        label = f"{n} real TCG guests, MonitorInterval 60"
        t0 = time.monotonic()
        d.start()
        poll(lambda: all_online(d, n), 600, f"{n} guests ONLINE", step=0.5)
        for name in names:
            wait_for_console(base / f"{name}.serial.log", GUEST_UP, 300)
        log(f"  {label}: all up {time.monotonic() - t0:.1f} s after start; measuring {window:g} s")
        m = cpu_and_rss(d.pid, window)
        log(f"  {label}: CPU {m['cpu_percent']:.2f} % of one core, RSS {m['rss_mib']:.1f} MiB "
            f"(peak {m['rss_peak_mib']:.1f}), {m['threads']} threads, {m['fds']} fds")  # fmt: skip
        return {f"real{n}_mi60": m}
    finally:
        d.stop()
        for name in names:
            remove_domain(name)
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--guests", type=int, default=500)
    ap.add_argument("--window", type=float, default=120, help="s, MonitorInterval 60")
    ap.add_argument("--window10", type=float, default=60, help="s, MonitorInterval 10")
    ap.add_argument("--real", type=int, default=10, help="real TCG guests (0: skip)")
    ap.add_argument("--real-window", type=float, default=120)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results: dict[str, Any] = {}
    log(f"== {args.guests} guests on {TEST_URI}")
    results.update(bench_test_driver(args.guests, args.window, args.window10))
    if args.real:
        log(f"== {args.real} real guests on qemu:///system")
        results.update(bench_real(args.real, args.real_window))
    log("\n== results")
    for key, m in results.items():
        log(f"  {key:16s} CPU {m['cpu_percent']:5.2f} %  RSS {m['rss_mib']:6.1f} MiB "
            f"(peak {m['rss_peak_mib']:6.1f})  window {m['window_s']:.0f} s")  # fmt: skip
    key = f"test{args.guests}_mi60"
    if key in results:
        m = results[key]
        log(f"  targets at {args.guests} guests, MonitorInterval 60: CPU < 2 %: "
            f"{'met' if m['cpu_percent'] < 2 else 'MISSED'}; RSS < 150 MiB: "
            f"{'met' if m['rss_peak_mib'] < 150 else 'MISSED'}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
