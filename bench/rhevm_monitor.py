"""How long the RHEV monitor takes, against the oVirt simulator (HTTPS, SSO, ovirtsdk4).

    .venv/bin/python bench/rhevm_monitor.py [--inproc 200] [--cold 50] [--process 20] [--json]

Three ways to run the same monitor of a VM that is up (exit 110):

* in-process (the agent daemon's case): one context, its RHV-M connection and SSO token
  kept between monitors; one HTTPS request per monitor (the VM search);
* in-process, cold: a new context each time (new connection, SSO login, host lookup);
* one-shot process: ``python -m kvmguest monitor`` (VCS script / Pacemaker style):
  interpreter start, imports, SSO login, host lookup, VM search.

The simulator runs in this process on 127.0.0.1 (in-process figures share its GIL); a
real RHV-M adds its network round trips and its own processing time.

The simulator's HTTP handler sends headers and body in two writes without TCP_NODELAY, so
each response waits ~40 ms for the client's delayed ACK (Nagle): that is the simulator,
not the agent. ``--sim-nodelay`` sets TCP_NODELAY on its sockets (the standard
``disable_nagle_algorithm`` of socketserver's stream handlers) to measure the agent alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kvmguest.agents.kvmguest import entrypoints as ep
from kvmguest.agents.kvmguest.runner import Env, context
from kvmguest.secrets import encrypt
from kvmguest.testing.ovirt_sim import OvirtSimulator

PASSWORD = "bench-Pa55word"

MAIN_CF = """\
cluster bench ( RHEVMCAFile = "{ca}"
    SecretKeyFile = "{key}" )
system host1 ( )
system host2 ( )
group g ( SystemList = {{ host1 = 0, host2 = 1 }} )
    KVMGuest res1 (
        GuestName = vm1
        RHEVMInfo = {{ Enabled = 1, URL = "{url}", User = "{user}", Password = "{ct}",
                      Cluster = cluster1 }}
        )
"""


def stats(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 2),
        "p90_ms": round(p90, 2),
        "min_ms": round(ms[0], 2),
        "max_ms": round(ms[-1], 2),
    }


def timed(n: int, fn: Callable[[], None]) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inproc", type=int, default=200, help="in-process monitors (warm)")
    ap.add_argument("--cold", type=int, default=50, help="in-process monitors, new context each")
    ap.add_argument("--process", type=int, default=20, help="one-shot `kvmguest monitor` runs")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument(
        "--sim-nodelay",
        action="store_true",
        help="TCP_NODELAY on the simulator's sockets (removes its ~40 ms Nagle delay)",
    )
    args = ap.parse_args()
    if args.sim_nodelay:
        from kvmguest.testing.ovirt_sim import server

        server._Handler.disable_nagle_algorithm = True

    work = Path(tempfile.mkdtemp(prefix="kvmguest-bench-rhevm-"))
    sim = OvirtSimulator(password=PASSWORD, workdir=work / "sim")
    sim.seed_demo()
    sim.start()
    try:
        ca = work / "ca.pem"
        shutil.copyfile(sim.ca_file, ca)
        key = work / "secret.key"
        cfg = work / "main.cf"
        cfg.write_text(
            MAIN_CF.format(
                ca=ca, key=key, url=sim.base_url, user=sim.user, ct=encrypt(PASSWORD, key)
            )
        )
        env = Env(str(cfg), "host1", uri=None)

        def check(result_code: int) -> None:
            if result_code != 110:
                raise SystemExit(f"monitor exit code {result_code}, expected 110")

        warm = context(env, "res1")
        for _ in range(5):
            check(ep.monitor(warm).exit_code)
        inproc = timed(args.inproc, lambda: check(ep.monitor(warm).exit_code))
        warm.hv.close()

        def cold_once() -> None:
            ctx = context(env, "res1")
            try:
                check(ep.monitor(ctx).exit_code)
            finally:
                ctx.hv.close()

        cold = timed(args.cold, cold_once)

        child_env = {k: v for k, v in os.environ.items() if not k.startswith("KVMGUEST_")}
        cmd = [sys.executable, "-m", "kvmguest", "--system", "host1", "monitor", "res1"]
        cmd += ["-c", str(cfg)]

        def process_once() -> None:
            proc = subprocess.run(cmd, capture_output=True, env=child_env, timeout=60)
            check(proc.returncode)

        process_once()  # warm the page cache for the imports
        process = timed(args.process, process_once)
        requests = len(sim.requests())
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)

    figures = {
        "in-process (warm connection)": stats(inproc),
        "in-process, cold (new connection + SSO login)": stats(cold),
        "one-shot `python -m kvmguest monitor`": stats(process),
    }
    if args.json:
        doc = {"figures": figures, "simulator_requests": requests, "sim_nodelay": args.sim_nodelay}
        print(json.dumps(doc, indent=2))
        return 0
    nodelay = ", simulator with TCP_NODELAY" if args.sim_nodelay else ""
    print(f"RHEV monitor of vm1 (up, exit 110) against the oVirt simulator{nodelay}")
    print(f"{'':48} {'n':>4} {'median':>9} {'p90':>9} {'min':>9} {'max':>9}")
    for name, s in figures.items():
        print(
            f"{name:48} {s['n']:>4} {s['median_ms']:>7.2f}ms {s['p90_ms']:>7.2f}ms "
            f"{s['min_ms']:>7.2f}ms {s['max_ms']:>7.2f}ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
