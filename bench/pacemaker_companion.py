"""The Pacemaker companion (``kvmguest agent --pacemaker``), side by side in one run:

1. the OCF monitor through the companion against VirtualDomain's monitor, on the same
   running guest, interleaved (wall and CPU of the whole process; target: >= 10x cheaper);
2. the one-shot ``kvmguest monitor`` on its cached path against the OCF monitor's direct
   path (the companion not running), interleaved (target: within 1.2x);
3. recovery under Pacemaker (the one-node cluster): ``kill -9`` of the guest's QEMU until the
   guest runs again in a new QEMU — ours with the companion at monitor intervals 10 s and
   60 s, VirtualDomain at 10 s (target: our median <= 1.5 s on a host whose PID 1 reaps
   promptly); with ``--reaper``, ours again with libvirtd under a prompt subreaper.

    .venv/bin/python bench/pacemaker_companion.py [--monitors 40] [--kills 20] [--reaper]
        [--no-recovery]

Needs root, the host's libvirtd and the test guest images (scripts/ci-env.sh); installs the
agent (``kvmguest ocf install``). Uses the default companion socket
/run/kvmguest/pacemaker.sock (Pacemaker runs the agent with its own environment).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt
import pacemaker_monitor as pm
from common import VIRTUAL_DOMAIN, median_ms, running_guest
from daemon_crash import libvirtd_under_reaper

SOCKET = "/run/kvmguest/pacemaker.sock"
PYTHON = sys.executable


@contextmanager
def companion(node: str) -> Iterator[subprocess.Popen[bytes]]:
    log = Path(tempfile.mkstemp(prefix="kvmguest-companion-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "kvmguest", "--system", node, "agent", "--pacemaker",
             "--agent-socket", "/nonexistent"], stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        pm.poll(lambda: os.path.exists(SOCKET), 60, "the companion's socket", step=0.05)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        reports = log.read_text().count("reporting it to Pacemaker")
        print(f"  (companion: {reports} failure report(s); log {log})", flush=True)


def notify_started(env: dict[str, str]) -> None:
    sys.path.insert(0, str(Path(pm.REPO, "src", "kvmguest", "ocf")))
    import companion_client

    companion_client.notify({**env, "OCF_RESOURCE_TYPE": "KVMGuest"}, "start", "post", 0)


def interleaved(a: list[str], a_env: dict[str, str], b: list[str], b_env: dict[str, str],
                n: int, a_ok: int = 0, b_ok: int = 0) -> tuple[list[float], ...]:  # fmt: skip
    for _ in range(3):
        pm.measure(a, a_env, a_ok)
        pm.measure(b, b_env, b_ok)
    aw: list[float] = []
    ac: list[float] = []
    bw: list[float] = []
    bc: list[float] = []
    for _ in range(n):
        w, c = pm.measure(a, a_env, a_ok)
        aw.append(w)
        ac.append(c)
        w, c = pm.measure(b, b_env, b_ok)
        bw.append(w)
        bc.append(c)
    return aw, ac, bw, bc


def line(label: str, w: list[float], c: list[float]) -> None:
    print(f"  {label:34s} wall {median_ms(w):7.1f} ms   CPU {median_ms(c):7.1f} ms", flush=True)


def bench_monitors(name: str, xml: Path, d: Path, n: int) -> None:
    ours_env = {
        **os.environ, "OCF_ROOT": "/usr/lib/ocf", "OCF_RESOURCE_INSTANCE": "bench-ours",
        "OCF_RESKEY_guest_name": name, "OCF_RESKEY_guest_config_file_path": str(xml),
        "OCF_RESKEY_CRM_meta_interval": "10000", "OCF_RESKEY_CRM_meta_timeout": "60000",
    }  # fmt: skip
    rsctmp = d / "rsctmp"
    rsctmp.mkdir(exist_ok=True)
    vd_env = {
        **os.environ, "OCF_ROOT": "/usr/lib/ocf", "OCF_RESOURCE_INSTANCE": "bench-vd",
        "OCF_RESKEY_config": str(xml), "OCF_RESKEY_hypervisor": "qemu:///system",
        "OCF_RESKEY_CRM_meta_interval": "10000", "OCF_RESKEY_CRM_meta_timeout": "60000",
        "HA_RSCTMP": str(rsctmp),
    }  # fmt: skip
    with companion("benchnode"):
        notify_started(ours_env)
        aw, ac, bw, bc = interleaved([pm.AGENT, "monitor"], ours_env,
                                     [VIRTUAL_DOMAIN, "monitor"], vd_env, n)  # fmt: skip
    print(f"\n== OCF monitor, running TCG guest ({n} runs each, interleaved)")
    line("kvmguest through the companion", aw, ac)
    line("VirtualDomain", bw, bc)
    wall, cpu = median_ms(bw) / median_ms(aw), median_ms(bc) / median_ms(ac)
    print(
        f"  VirtualDomain / ours: wall {wall:.1f}x, CPU {cpu:.1f}x "
        f"(target >= 10x: {'met' if min(wall, cpu) >= 10 else 'NOT met'})",
        flush=True,
    )

    # 2. The one-shot on its cached path vs the OCF monitor's direct path (no companion).
    cfg = d / "main.cf"
    cfg.write_text(f'group g ( )\nKVMGuest vm ( GuestName = {name}\n'
                   f'  GuestConfigFilePath = "{xml}" )\n')  # fmt: skip
    kvmguest = str(Path(PYTHON).with_name("kvmguest"))
    oneshot = [kvmguest, "monitor", "vm", "-c", str(cfg)]
    one_env = {**os.environ, "KVMGUEST_SYSTEM": "benchnode"}
    subprocess.run(oneshot, env=one_env, capture_output=True, check=False)  # fills the cache
    aw, ac, bw, bc = interleaved(oneshot, one_env, [pm.AGENT, "monitor"], ours_env, n,
                                 a_ok=110)  # fmt: skip
    print(f"\n== one-shot `kvmguest monitor` (cached) vs the OCF direct path ({n} each)")
    line("kvmguest monitor (cached config)", aw, ac)
    line("OCF monitor, direct path", bw, bc)
    wall, cpu = median_ms(aw) / median_ms(bw), median_ms(ac) / median_ms(bc)
    print(
        f"  one-shot / OCF: wall {wall:.2f}x, CPU {cpu:.2f}x "
        f"(target <= 1.2x: {'met' if max(wall, cpu) <= 1.2 else 'NOT met'})",
        flush=True,
    )


def recovery(label: str, agent: str, params: dict[str, str], name: str, serial: Path,
             kills: int, interval: int, phase: float) -> list[pm.Recovery]:  # fmt: skip
    """The kill's phase drawn from [1, phase): the companion does not wait for the monitor,
    so its phase does not matter (and 60 s phases would cost 20 minutes)."""
    return pm.bench_recovery(label, agent, params, name, serial, kills, interval, phase)


def bench_recovery(name: str, kills: int, reaper: bool, vd: bool = True,
                   ours: bool = True) -> None:  # fmt: skip
    print(f"\n== kill -9 of the guest's QEMU until it runs again under Pacemaker (one-node "
          f"cluster, {kills} kills each)", flush=True)  # fmt: skip
    with pm.guest_files(name) as (xml, serial), pm.one_node_cluster():
        node = pm.crm("crm_node", "-n").strip()
        params = {"guest_name": name, "guest_config_file_path": str(xml),
                  "delay_after_guest_offline": "10"}  # fmt: skip
        if ours:
            with companion(node):
                for interval in (10, 60):
                    runs = recovery(f"ours{interval}", "ocf:kvmguest:KVMGuest", params, name,
                                    serial, kills, interval, 3.0)  # fmt: skip
                    pm.report_recovery(f"ours+comp {interval}s", runs)
        if vd:
            runs = recovery("vd", "ocf:heartbeat:VirtualDomain",
                            {"config": str(xml), "hypervisor": "qemu:///system"}, name, serial,
                            kills, 10, 10.0)  # fmt: skip
            pm.report_recovery("VirtualDomain 10s", runs)
        if reaper:
            with libvirtd_under_reaper(), companion(node):
                for interval in (10, 60):
                    runs = recovery(f"oursr{interval}", "ocf:kvmguest:KVMGuest", params, name,
                                    serial, kills, interval, 3.0)  # fmt: skip
                    pm.report_recovery(f"ours+comp {interval}s, prompt reaper", runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--monitors", type=int, default=40)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument(
        "--reaper",
        action="store_true",
        help="also: ours with libvirtd under a prompt subreaper (as under systemd)",
    )
    ap.add_argument("--no-recovery", action="store_true")
    ap.add_argument("--no-vd", action="store_true", help="recovery: not VirtualDomain")
    ap.add_argument("--no-ours", action="store_true", help="recovery: not ours (slow reaper)")
    ap.add_argument("--no-monitor", action="store_true")
    args = ap.parse_args()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    if os.path.exists(SOCKET):
        raise SystemExit(f"{SOCKET} exists: a companion already runs here")
    subprocess.run([PYTHON, "-m", "kvmguest", "ocf", "install"], check=True,
                   capture_output=True)  # fmt: skip
    name = f"kvmg-cmpbench-{os.getpid()}"
    if not args.no_monitor:
        with running_guest(name) as (xml, d):
            bench_monitors(name, xml, d, args.monitors)
        shutil.rmtree(d, ignore_errors=True)
    if not args.no_recovery:
        bench_recovery(name, args.kills, args.reaper, vd=not args.no_vd, ours=not args.no_ours)


if __name__ == "__main__":
    main()
