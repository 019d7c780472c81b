"""Monitor cost on one running real guest: kvmguest in-process, kvmguest as a one-shot
process, and Pacemaker's VirtualDomain `monitor` (Debian's resource-agents).

    .venv/bin/python bench/monitor_kvm.py [--inproc N] [--oneshot N]

Needs the host's libvirtd and the test guest images (scripts/ci-env.sh).
"""

from __future__ import annotations

import argparse
import os
import sys

from common import (
    REPO,
    VIRTUAL_DOMAIN,
    median_ms,
    p,
    running_guest,
    time_calls,
    time_process,
)
from kvmguest.agents.kvmguest import entrypoints as ep
from kvmguest.agents.kvmguest.libvirt_kvm import LibvirtKVM
from kvmguest.agents.kvmguest.runner import Env, context
from kvmguest.agents.loader import Loaded


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inproc", type=int, default=2000)
    ap.add_argument("--oneshot", type=int, default=30)
    args = ap.parse_args()
    name = f"kvmg-bench-{os.getpid()}"
    with running_guest(name) as (xml, d):
        cfg = d / "main.cf"
        cfg.write_text(f'group g ( )\nKVMGuest vm ( GuestName = {name}\n'
                       f'  GuestConfigFilePath = "{xml}" )\n')  # fmt: skip
        loaded = Loaded.from_file(str(cfg))
        ctx = context(Env(str(cfg), None, "qemu:///system"), "vm", loaded=loaded,
                      hv=LibvirtKVM("qemu:///system", events=False))  # fmt: skip
        assert ep.monitor(ctx).exit_code == 110
        inproc = time_calls(lambda: ep.monitor(ctx), args.inproc)

        kvmguest = [str(REPO / ".venv/bin/kvmguest"), "--connect", "qemu:///system",
                    "monitor", "vm", "-c", str(cfg)]  # fmt: skip
        one_wall, one_cpu = time_process(kvmguest, args.oneshot, ok=(110,))

        vd_env = {
            "OCF_ROOT": "/usr/lib/ocf",
            "OCF_RESOURCE_INSTANCE": "bench",
            "OCF_RESKEY_config": str(xml),
            "OCF_RESKEY_hypervisor": "qemu:///system",
            "HA_RSCTMP": str(d),
        }
        vd_wall, vd_cpu = time_process([VIRTUAL_DOMAIN, "monitor"], args.oneshot, env=vd_env)

    inp, one, one_c = median_ms(inproc), median_ms(one_wall), median_ms(one_cpu)
    vd, vd_c = median_ms(vd_wall), median_ms(vd_cpu)
    print(f"monitor of a running TCG guest ({args.inproc} in-process, {args.oneshot} one-shot)")
    print(f"  kvmguest in-process      median {inp:8.3f} ms   p99 {p(inproc, 0.99):8.3f} ms")
    print(f"  kvmguest one-shot        median {one:8.1f} ms   CPU {one_c:6.1f} ms")
    print(f"  VirtualDomain monitor    median {vd:8.1f} ms   CPU {vd_c:6.1f} ms")
    print(f"  VirtualDomain / kvmguest one-shot: wall {vd / one:.1f}x, CPU {vd_c / one_c:.1f}x")
    print(f"  VirtualDomain / kvmguest in-process: {vd / inp:.0f}x")
    ok = median_ms(inproc) < 2.0 and median_ms(one_wall) < median_ms(vd_wall)
    print(
        "targets (in-process < 2 ms; one-shot faster than VirtualDomain):",
        "met" if ok else "NOT met",
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
