"""ocf:kvmguest:KVMGuest vs Pacemaker's ocf:heartbeat:VirtualDomain, on the same running guest.

1. ``monitor`` cost: the installed agents run as Pacemaker runs them (a new process each
   time, parameters in OCF_RESKEY_*), interleaved, N times each: wall time and CPU time
   (user+sys of the child, getrusage), medians, and the ratio. Also what the lean monitor
   path imports (``python -X importtime``): never click, lark or the config model.
2. Recovery after ``kill -9`` of the guest's QEMU, under Pacemaker (the one-node cluster,
   scripts/pcmk/one-node.sh), the same monitor interval for both agents: time from the
   kill until libvirt runs the guest again (a new QEMU), a few repetitions, medians.

    .venv/bin/python bench/pacemaker_monitor.py [--monitors 40] [--kills 5] [--interval 10]
        [--no-recovery]

Needs root, the host's libvirtd and the test guest images (scripts/ci-env.sh), the agent
installed (``kvmguest ocf install``; done here), Pacemaker for part 2.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import importlib
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, NamedTuple, TypeVar

import libvirt
from common import REPO, VIRTUAL_DOMAIN, median_ms, running_guest

# common put the repository on sys.path: the test guest's helpers.
guests = importlib.import_module("tests.system.guests")
GUEST_UP: str = guests.GUEST_UP
console_offset = guests.console_offset
wait_for_console = guests.wait_for_console

AGENT = "/usr/lib/ocf/resource.d/kvmguest/KVMGuest"
ONE_NODE = REPO / "scripts" / "pcmk" / "one-node.sh"
LOCK = Path(os.environ.get("KVMGUEST_PCMK_STATE", "/var/tmp/kvmguest-pcmk")) / ".one-node.lock"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
T = TypeVar("T")


def poll(fn: Callable[[], T | None], timeout: float, what: str, step: float = 0.05) -> T:
    """Call ``fn`` until it returns something truthy; SystemExit at the deadline."""
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() >= end:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def measure(cmd: list[str], env: dict[str, str], ok: int = 0) -> tuple[float, float]:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != ok:
        raise SystemExit(f"{cmd[0]} {cmd[-1]} exited {proc.returncode}: {proc.stderr}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def bench_monitor(name: str, xml: Path, rsctmp: Path, n: int) -> None:
    ours_env = {
        **os.environ,
        "OCF_ROOT": "/usr/lib/ocf",
        "OCF_RESOURCE_INSTANCE": "bench-ours",
        "OCF_RESKEY_guest_name": name,
        "OCF_RESKEY_guest_config_file_path": str(xml),
        "OCF_RESKEY_CRM_meta_interval": "10000",
        "OCF_RESKEY_CRM_meta_timeout": "60000",
    }
    vd_env = {
        **os.environ,
        "OCF_ROOT": "/usr/lib/ocf",
        "OCF_RESOURCE_INSTANCE": "bench-vd",
        "OCF_RESKEY_config": str(xml),
        "OCF_RESKEY_hypervisor": "qemu:///system",
        "OCF_RESKEY_CRM_meta_interval": "10000",
        "OCF_RESKEY_CRM_meta_timeout": "60000",
        "HA_RSCTMP": str(rsctmp),
    }
    for _ in range(3):  # warm both (page cache, libvirtd)
        measure([AGENT, "monitor"], ours_env)
        measure([VIRTUAL_DOMAIN, "monitor"], vd_env)
    ours: list[tuple[float, float]] = []
    vd: list[tuple[float, float]] = []
    for _ in range(n):  # interleaved: both see the same machine load
        ours.append(measure([AGENT, "monitor"], ours_env))
        vd.append(measure([VIRTUAL_DOMAIN, "monitor"], vd_env))
    ow, oc = [w for w, _ in ours], [c for _, c in ours]
    vw, vc = [w for w, _ in vd], [c for _, c in vd]
    print(f"\n== OCF monitor of a running TCG guest ({n} runs each, interleaved)")
    for label, w, c in (("kvmguest KVMGuest", ow, oc), ("VirtualDomain", vw, vc)):
        print(f"  {label:18s} monitor  wall {median_ms(w):7.1f} ms   CPU {median_ms(c):7.1f} ms")
    wall_ratio = median_ms(vw) / median_ms(ow)
    cpu_ratio = median_ms(vc) / median_ms(oc)
    print(f"  ratio VirtualDomain / kvmguest: wall {wall_ratio:.2f}x, CPU {cpu_ratio:.2f}x "
          f"(target >= 3x: {'met' if min(wall_ratio, cpu_ratio) >= 3 else 'NOT met'})")  # fmt: skip

    # The installed agent itself, as Pacemaker runs it (the wrapper's interpreter flags).
    proc = subprocess.run(
        [AGENT, "monitor"], capture_output=True, text=True, timeout=60,
        env={**ours_env, "PYTHONPROFILEIMPORTTIME": "1"},
    )  # fmt: skip
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), len(m.group(3)), m.group(4)))
    top = [r for r in rows if r[1] == 1]
    total = sum(r[0] for r in top)
    forbidden = sorted({r[2] for r in rows if r[2].split(".")[0] in ("click", "lark")})
    print(f"  lean path imports: {total / 1000:.1f} ms cumulative; top level:")
    for us, _, mod in sorted(top, reverse=True)[:6]:
        print(f"    {us / 1000:6.1f} ms  {mod}")
    print(f"  click/lark imported: {forbidden or 'none'}")


# --- recovery under Pacemaker -----------------------------------------------------------


def crm(*argv: str, check: bool = True, xml: str | None = None) -> str:
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=120, input=xml,
        env={**os.environ, "PATH": PATH + ":" + os.environ.get("PATH", "")},
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


@contextmanager
def one_node_cluster() -> Iterator[None]:
    """The one-node cluster (scripts/pcmk/one-node.sh), under the fixtures' lock."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("a+") as fh:
        poll(lambda: _try_lock(fh), 300, "the one-node cluster lock", step=1.0)
        started = False
        if subprocess.run([ONE_NODE, "status"], capture_output=True).returncode != 0:
            subprocess.run([ONE_NODE, "stop"], capture_output=True, check=False)
            env = {**os.environ, "PCMK_DC_DEADTIME": "2s"}
            subprocess.run([ONE_NODE, "start"], capture_output=True, check=True, env=env)
            started = True
        try:
            yield
        finally:
            if started:
                subprocess.run([ONE_NODE, "stop"], capture_output=True, check=False)


def _try_lock(fh: IO[str]) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def primitive(rid: str, agent: str, params: dict[str, str], interval: int) -> str:
    cls, provider, kind = agent.split(":")
    nv = "".join(f'<nvpair id="{rid}-p-{k}" name="{k}" value="{v}"/>' for k, v in params.items())
    return (
        f'<primitive id="{rid}" class="{cls}" provider="{provider}" type="{kind}">'
        f'<instance_attributes id="{rid}-p">{nv}</instance_attributes>'
        f'<meta_attributes id="{rid}-m"><nvpair id="{rid}-m-mt" name="migration-threshold" '
        'value="1000"/></meta_attributes>'
        f'<operations><op id="{rid}-start" name="start" interval="0s" timeout="60s"/>'
        f'<op id="{rid}-stop" name="stop" interval="0s" timeout="60s"/>'
        f'<op id="{rid}-monitor" name="monitor" interval="{interval}s" timeout="30s"/>'
        "</operations></primitive>"
    )


def running_on_cluster(rid: str) -> bool:
    out = crm("crm_mon", "-1", "--output-as=xml")
    return bool(re.search(rf'<resource id="{rid}"[^>]*role="Started"[^>]*active="true"', out))


def qemu_pid(name: str) -> int | None:
    try:
        return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text())
    except (OSError, ValueError):
        return None


def dom_running(name: str) -> bool:
    # A new connection each time: the host's libvirtd may restart under a long bench (other
    # test sessions stop and start it), and an old connection would never see the guest.
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError:
        return False
    try:
        return bool(conn.lookupByName(name).state()[0] == libvirt.VIR_DOMAIN_RUNNING)
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def restarted(name: str, old_pid: int) -> bool:
    """The guest runs again, in a new QEMU."""
    return dom_running(name) and qemu_pid(name) not in (None, old_pid)


def fail_count(rid: str) -> int:
    out = crm("crm_mon", "-1", "--output-as=xml")
    m = re.search(rf'<resource_history id="{re.escape(rid)}"[^>]*fail-count="(\d+)"', out)
    return int(m.group(1)) if m else 0


class Recovery(NamedTuple):
    detected: float  # kill -> Pacemaker has recorded the failed monitor
    total: float  # kill -> libvirt runs the guest again, in a new QEMU

    @property
    def restart(self) -> float:
        return self.total - self.detected


def bench_recovery(label: str, agent: str, params: dict[str, str], name: str, serial: Path,
                   kills: int, interval: int, phase: float | None = None,
                   ) -> list[Recovery]:  # fmt: skip
    """Kill at a random phase in [0, ``phase``) (default: the monitor interval)."""
    rid = f"bench-{label}"
    crm("cibadmin", "--create", "--scope", "resources", "--xml-text",
        primitive(rid, agent, params, interval))  # fmt: skip
    rng = random.Random(4711)  # the same kill phases for both agents
    out: list[Recovery] = []
    try:
        poll(lambda: running_on_cluster(rid), 120, f"{rid} started", step=0.2)
        poll(lambda: dom_running(name), 60, f"{name} running")
        wait_for_console(serial, GUEST_UP, 120)
        for _ in range(kills):
            # A random phase against the monitor interval: detection waits for the next
            # monitor, and a loop in step with it would measure the same phase every time.
            pause(rng.uniform(0, interval) if phase is None else rng.uniform(1.0, phase))
            pid = poll(lambda: qemu_pid(name), 30, "the QEMU pid")
            mark = console_offset(serial)
            t0 = time.monotonic()
            os.kill(pid, 9)
            poll(lambda: fail_count(rid) > 0, 3 * interval + 60, "the failure recorded",
                 step=0.05)  # fmt: skip
            detected = time.monotonic() - t0
            poll(functools.partial(restarted, name, pid), 180, f"{name} running again",
                 step=0.02)  # fmt: skip
            out.append(Recovery(detected, time.monotonic() - t0))
            wait_for_console(serial, GUEST_UP, 120, offset=mark)  # fully up before the next
            crm("crm_resource", "--cleanup", "--resource", rid)
            poll(lambda: fail_count(rid) == 0, 60, "the failure cleaned up", step=0.2)
    finally:
        crm("crm_resource", "--resource", rid, "--meta", "--set-parameter", "target-role",
            "--parameter-value", "Stopped", check=False)  # fmt: skip
        poll(lambda: not running_on_cluster(rid), 120, f"{rid} stopped", step=0.2)
        crm("cibadmin", "--delete", "--xml-text", f'<primitive id="{rid}"/>', check=False)
        crm("crm_resource", "--cleanup", "--resource", rid, check=False)
    return out


def pause(seconds: float) -> None:
    """A deliberate wait (the kill's phase), not a poll."""
    time.sleep(seconds)


@contextmanager
def guest_files(name: str) -> Iterator[tuple[Path, Path]]:
    """The guest's XML and console log, not defined anywhere: the agents start it.

    VirtualDomain runs guests as transient domains (it undefines a persistent one), so the
    domain comes and goes with it; whatever is left at the end is removed.
    """
    d = guests.scratch_dir("pcbench-")
    xml, serial = d / f"{name}.xml", d / "serial.log"
    xml.write_text(guests.domain_xml(name, "cooperative", serial_log=serial))
    try:
        yield xml, serial
    finally:
        conn = libvirt.open("qemu:///system")
        try:
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
        except libvirt.libvirtError:
            pass  # already gone
        conn.close()
        shutil.rmtree(d, ignore_errors=True)


def report_recovery(label: str, runs: list[Recovery]) -> None:
    def med(values: list[float]) -> str:
        return f"{statistics.median(values):5.2f} s"

    print(
        f"  {label:14s} kill->running median {med([r.total for r in runs])} "
        f"(min {min(r.total for r in runs):5.2f}, max {max(r.total for r in runs):5.2f});  "
        f"kill->detected {med([r.detected for r in runs])};  "
        f"detected->running {med([r.restart for r in runs])}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--monitors", type=int, default=40)
    ap.add_argument("--kills", type=int, default=6)
    ap.add_argument("--interval", type=int, default=10, help="monitor interval (s)")
    ap.add_argument("--no-recovery", action="store_true")
    ap.add_argument("--no-monitor", action="store_true")
    args = ap.parse_args()
    # The bench polls domains that come and go: libvirt must not print each lookup error.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    subprocess.run([sys.executable, "-m", "kvmguest", "ocf", "install", "--no-units"], check=True,
                   capture_output=True)  # fmt: skip
    name = f"kvmg-pcbench-{os.getpid()}"
    if not args.no_monitor:
        with running_guest(name) as (xml, d):
            rsctmp = d / "rsctmp"
            rsctmp.mkdir()
            bench_monitor(name, xml, rsctmp, args.monitors)
        shutil.rmtree(d, ignore_errors=True)
    if args.no_recovery:
        return
    print(
        "\n== kill -9 of the guest's QEMU until it runs again under Pacemaker (one-node "
        f"cluster, monitor interval {args.interval} s, {args.kills} kills each)",
        flush=True,
    )
    with guest_files(name) as (xml, serial), one_node_cluster():
        ours = bench_recovery(
            "kvmguest", "ocf:kvmguest:KVMGuest",
            {"guest_name": name, "guest_config_file_path": str(xml),
             "delay_after_guest_offline": "10"}, name, serial, args.kills, args.interval,
        )  # fmt: skip
        report_recovery("kvmguest", ours)
        vd = bench_recovery(
            "vd", "ocf:heartbeat:VirtualDomain",
            {"config": str(xml), "hypervisor": "qemu:///system"}, name, serial, args.kills,
            args.interval,
        )  # fmt: skip
        report_recovery("VirtualDomain", vd)


if __name__ == "__main__":
    main()
