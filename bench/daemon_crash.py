"""Crash detection and recovery: the kvmguest agent daemon vs Pacemaker's VirtualDomain.

``kill -9`` of a real guest's QEMU, again and again:

1. a bare ``virsh start`` of the same guest (the floor for any restart);
2. the agent daemon (``kvmguest agent``, default MonitorInterval 60, RestartLimit high
   enough): **detection** = kill until the daemon has the event (the history row "QEMU
   process N exited", timestamped by the daemon with the same clock), **recovery** = kill
   until libvirt runs the guest again in a new QEMU (polled every 2 ms); with the break-down
   from the daemon's history (libvirt's own clean-up, clean, online);
3. Pacemaker's ``ocf:heartbeat:VirtualDomain`` on the one-node cluster
   (``scripts/pcmk/one-node.sh``), ``op monitor interval=10s``, killed at a random phase of
   the monitor interval: kill until running again;
4. with ``--reaper``: 1 and 2 again with libvirtd run under a subreaper that reaps at once
   (``bench/daemon_reaper.py``), as on a host whose PID 1 is systemd (see below).

    .venv/bin/python bench/daemon_crash.py [--kills 20] [--vd-kills 20] [--starts 20]
        [--no-pacemaker] [--reaper | --reaper-only] [--json FILE]

Needs root, the host's libvirtd and the test guest images (scripts/ci-env.sh), and for 3
Pacemaker (the cluster is started if it is not running, and stopped again then).

Why --reaper: libvirt reports a dead QEMU (and can start the guest again) only once the
process has left the process table. In this sandbox PID 1 reaps orphans about every 1.7 s,
which every restart here pays; systemd reaps at once.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import libvirt
from daemon_common import (
    GUEST_UP,
    PYTHON,
    REPO,
    Daemon,
    GuestFiles,
    Libvirt,
    console_offset,
    guest_files,
    pct,
    poll,
    qemu_pid,
    remove_domain,
    summary,
    wait_for_console,
)

ONE_NODE = REPO / "scripts/pcmk/one-node.sh"
LIBVIRTD_SH = REPO / "scripts/libvirtd.sh"
# The lock the Pacemaker fixtures and benches take around the shared one-node cluster.
PCMK_STATE = Path(os.environ.get("KVMGUEST_PCMK_STATE", "/var/tmp/kvmguest-pcmk"))
PCMK_LOCK = PCMK_STATE / ".one-node.lock"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg: str) -> None:
    print(msg, flush=True)


# --- 1. bare virsh start ------------------------------------------------------------------


def bench_virsh_start(g: GuestFiles, n: int) -> dict[str, list[float]]:
    conn = libvirt.open("qemu:///system")
    dom = conn.defineXML(g.xml.read_text())
    virsh: list[float] = []
    create: list[float] = []
    try:
        for i in range(2 * n):
            t0 = time.monotonic()
            if i % 2 == 0:
                subprocess.run(["virsh", "-c", "qemu:///system", "start", g.name], check=True,
                               capture_output=True, timeout=120)  # fmt: skip
                virsh.append(time.monotonic() - t0)
            else:
                dom.create()  # the same, in-process: what the daemon's online calls
                create.append(time.monotonic() - t0)
            dom.destroy()
    finally:
        remove_domain(g.name)
    return {"virsh_start": virsh, "create_inprocess": create}


# --- 2. the agent daemon ------------------------------------------------------------------


def daemon_cfg(g: GuestFiles, kills: int) -> str:
    return f"""cluster c ( )
system host1 ( )
group g (
    SystemList = {{ host1 = 0 }}
    AutoStartList = {{ host1 }}
    )
    KVMGuest vm (
        GuestName = {g.name}
        GuestConfigFilePath = "{g.xml}"
        RestartLimit = {kills + 5}
        )
"""


def _ts(rows: list[tuple[int, float, str, str, str]], kind: str, pattern: str) -> float | None:
    for _id, ts, _res, k, detail in rows:
        if k == kind and re.search(pattern, detail):
            return ts
    return None


def bench_daemon(g: GuestFiles, kills: int) -> dict[str, list[float]]:
    lv = Libvirt()
    d = Daemon(g.dir / "agent", daemon_cfg(g, kills))
    out: dict[str, list[float]] = {k: [] for k in (
        "detection", "libvirt_cleanup", "clean_done", "online_done", "recovery")}  # fmt: skip
    d.start()
    try:
        poll(lambda: lv.running(g.name), 120, "AutoStart", step=0.05)
        wait_for_console(g.serial, GUEST_UP, 120)
        for i in range(kills):
            pid = poll(lambda: qemu_pid(g.name), 30, "the QEMU pid")
            since = d.last_id()
            mark = console_offset(g.serial)
            wall, t0 = time.time(), time.monotonic()
            os.kill(pid, signal.SIGKILL)
            poll(lambda: lv.running_with_new_pid(g.name, pid), 120, "running again")  # noqa: B023
            out["recovery"].append(time.monotonic() - t0)

            def restarted() -> list[tuple[int, float, str, str, str]] | None:
                rows = d.history(since)  # noqa: B023
                return rows if _ts(rows, "online", "^succeeded") else None

            rows = poll(restarted, 30, "the online in the history", step=0.01)
            marks = {
                "detection": _ts(rows, "event", rf"^QEMU process {pid} exited$"),
                "libvirt_cleanup": _ts(rows, "decision", r"libvirt event: stopped"),
                "clean_done": _ts(rows, "clean", "^succeeded"),
                "online_done": _ts(rows, "online", "^succeeded"),
            }
            for key, ts in marks.items():
                if ts is not None:
                    out[key].append(ts - wall)
            det = (marks["detection"] or float("nan")) - wall
            log(f"  kill {i + 1:2d}: detected after {det * 1000:6.1f} ms, "
                f"running again after {out['recovery'][-1]:6.3f} s")  # fmt: skip
            wait_for_console(g.serial, GUEST_UP, 120, offset=mark)
    finally:
        d.stop()
        remove_domain(g.name)
    return out


# --- 3. Pacemaker VirtualDomain ---------------------------------------------------------


def crm(*argv: str, check: bool = True) -> str:
    env = {**os.environ, "PATH": PATH + ":" + os.environ.get("PATH", "")}
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=120, env=env)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def _try_lock(fh: IO[str]) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def one_node_cluster() -> Iterator[None]:
    PCMK_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with PCMK_LOCK.open("a+") as fh:
        poll(lambda: _try_lock(fh), 1800, "the one-node cluster lock", step=1.0)
        started = False
        if subprocess.run([ONE_NODE, "status"], capture_output=True).returncode != 0:
            subprocess.run([ONE_NODE, "stop"], capture_output=True, check=False)
            subprocess.run([ONE_NODE, "start"], capture_output=True, check=True,
                           env={**os.environ, "PCMK_DC_DEADTIME": "2s"})  # fmt: skip
            started = True
        try:
            yield
        finally:
            if started:
                subprocess.run([ONE_NODE, "stop"], capture_output=True, check=False)


def _running_on_cluster(rid: str) -> bool:
    out = crm("crm_mon", "-1", "--output-as=xml")
    return bool(re.search(rf'<resource id="{rid}"[^>]*role="Started"[^>]*active="true"', out))


def _fail_count(rid: str) -> int:
    out = crm("crm_mon", "-1", "--output-as=xml")
    m = re.search(rf'<resource_history id="{re.escape(rid)}"[^>]*fail-count="(\d+)"', out)
    return int(m.group(1)) if m else 0


def bench_virtualdomain(g: GuestFiles, kills: int, interval: int) -> dict[str, list[float]]:
    rid = f"dbench-vd-{os.getpid()}"
    prim = (
        f'<primitive id="{rid}" class="ocf" provider="heartbeat" type="VirtualDomain">'
        f'<instance_attributes id="{rid}-p">'
        f'<nvpair id="{rid}-p-c" name="config" value="{g.xml}"/>'
        f'<nvpair id="{rid}-p-h" name="hypervisor" value="qemu:///system"/>'
        f"</instance_attributes>"
        f'<meta_attributes id="{rid}-m"><nvpair id="{rid}-m-mt" name="migration-threshold" '
        'value="1000"/></meta_attributes>'
        f'<operations><op id="{rid}-start" name="start" interval="0s" timeout="90s"/>'
        f'<op id="{rid}-stop" name="stop" interval="0s" timeout="90s"/>'
        f'<op id="{rid}-mon" name="monitor" interval="{interval}s" timeout="30s"/>'
        "</operations></primitive>"
    )
    lv = Libvirt()
    out: dict[str, list[float]] = {"recovery": []}
    rng = random.Random(4711)
    crm("cibadmin", "--create", "--scope", "resources", "--xml-text", prim)
    try:
        poll(lambda: _running_on_cluster(rid), 180, f"{rid} started", step=0.2)
        poll(lambda: lv.running(g.name), 60, "the guest running", step=0.05)
        wait_for_console(g.serial, GUEST_UP, 120)
        for i in range(kills):
            # A random phase against the monitor interval (detection waits for the next
            # monitor; a loop in step with it would measure one phase only).
            time.sleep(rng.uniform(0, interval))
            pid = poll(lambda: qemu_pid(g.name), 30, "the QEMU pid")
            mark = console_offset(g.serial)
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            poll(lambda: lv.running_with_new_pid(g.name, pid), 3 * interval + 180,  # noqa: B023
                 "running again")  # fmt: skip
            out["recovery"].append(time.monotonic() - t0)
            log(f"  kill {i + 1:2d}: running again {out['recovery'][-1]:6.3f} s")
            wait_for_console(g.serial, GUEST_UP, 120, offset=mark)
            crm("crm_resource", "--cleanup", "--resource", rid)
            poll(lambda: _fail_count(rid) == 0, 60, "the failure cleaned up", step=0.2)
    finally:
        crm("crm_resource", "--resource", rid, "--meta", "--set-parameter", "target-role",
            "--parameter-value", "Stopped", check=False)  # fmt: skip
        poll(lambda: not _running_on_cluster(rid), 180, f"{rid} stopped", step=0.2)
        crm("cibadmin", "--delete", "--xml-text", f'<primitive id="{rid}"/>', check=False)
        crm("crm_resource", "--cleanup", "--resource", rid, check=False)
        remove_domain(g.name)
    return out


# --- 4. libvirtd under a prompt reaper --------------------------------------------------


@contextmanager
def libvirtd_under_reaper() -> Iterator[None]:
    subprocess.run([LIBVIRTD_SH, "stop"], check=True, capture_output=True, timeout=120)
    reaper = subprocess.Popen([PYTHON, str(REPO / "bench/daemon_reaper.py")],
                              start_new_session=True)  # fmt: skip
    try:
        poll(lambda: subprocess.run(["virsh", "-c", "qemu:///system", "version"],
                                    capture_output=True).returncode == 0, 60,
             "libvirtd under the reaper", step=0.1)  # fmt: skip
        yield
    finally:
        subprocess.run([LIBVIRTD_SH, "stop"], check=False, capture_output=True, timeout=120)
        reaper.terminate()
        reaper.wait(30)
        subprocess.run([LIBVIRTD_SH, "start"], check=True, capture_output=True, timeout=120)


# --- report -------------------------------------------------------------------------------


def report(results: dict[str, dict[str, list[float]]]) -> None:
    log("\n== results (ms unless noted)")
    for phase, data in results.items():
        for key, samples in data.items():
            log(f"  {phase:22s} {key:17s} {summary(samples)}")
    for suffix in ("", "+reaper"):
        dm, vs = results.get("daemon" + suffix), results.get("virsh" + suffix)
        if not dm or not vs:
            continue
        det = pct(dm["detection"], 0.99) * 1000
        rec, start = pct(dm["recovery"], 0.5), pct(vs["virsh_start"], 0.5)
        log(f"\n  targets{suffix}: detection p99 {det:.1f} ms (< 100: "
            f"{'met' if det < 100 else 'MISSED'}); recovery median {rec:.3f} s vs bare virsh "
            f"start {start:.3f} s: {rec - start:+.3f} s (<= 1 s: "
            f"{'met' if rec - start <= 1 else 'MISSED'})")  # fmt: skip
    if "virtualdomain" in results and "daemon" in results:
        vd, dm = results["virtualdomain"]["recovery"], results["daemon"]["recovery"]
        log(
            f"  VirtualDomain (10 s monitor) recovery median {pct(vd, 0.5):.2f} s, p99 "
            f"{pct(vd, 0.99):.2f} s vs daemon {pct(dm, 0.5):.2f} s, {pct(dm, 0.99):.2f} s"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="kills of the daemon's guest")
    ap.add_argument("--vd-kills", type=int, default=20, help="kills under VirtualDomain")
    ap.add_argument("--starts", type=int, default=20, help="bare virsh starts")
    ap.add_argument("--interval", type=int, default=10, help="VirtualDomain monitor (s)")
    ap.add_argument("--no-pacemaker", action="store_true")
    ap.add_argument("--reaper", action="store_true",
                    help="also measure with libvirtd under a prompt subreaper")  # fmt: skip
    ap.add_argument("--reaper-only", action="store_true", help="only the --reaper part")
    ap.add_argument("--json", type=Path, help="write the raw samples here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    tag = os.getpid()
    results: dict[str, dict[str, list[float]]] = {}

    if not args.reaper_only:
        log(f"== bare virsh start ({args.starts}x), and dom.create() in-process")
        with guest_files(f"kvmg-dbench-s{tag}") as g:
            results["virsh"] = bench_virsh_start(g, args.starts)
        log(f"== agent daemon: kill -9 of QEMU ({args.kills}x)")
        with guest_files(f"kvmg-dbench-d{tag}") as g:
            results["daemon"] = bench_daemon(g, args.kills)
    if not args.no_pacemaker and not args.reaper_only:
        log(f"== Pacemaker VirtualDomain, monitor interval {args.interval} s "
            f"({args.vd_kills}x)")  # fmt: skip
        with guest_files(f"kvmg-dbench-v{tag}") as g, one_node_cluster():
            results["virtualdomain"] = bench_virtualdomain(g, args.vd_kills, args.interval)
    if args.reaper or args.reaper_only:
        log("== with libvirtd under a prompt subreaper (as under systemd)")
        with libvirtd_under_reaper():
            with guest_files(f"kvmg-dbench-rs{tag}") as g:
                results["virsh+reaper"] = bench_virsh_start(g, args.starts)
            with guest_files(f"kvmg-dbench-rd{tag}") as g:
                results["daemon+reaper"] = bench_daemon(g, args.kills)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
