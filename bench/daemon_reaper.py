"""Run libvirtd under a child subreaper that reaps at once, as systemd (PID 1) does.

The sandbox this project is developed in has a PID 1 that reaps orphaned processes only
about every 1.7 s. libvirt, after a QEMU dies, waits (polling every 200 ms) until the
process is gone from the process table before it reports the domain shut off or starts it
again, so every crash costs that delay there. Under this reaper, QEMU (libvirtd's
daemonized grandchild) is reparented here and reaped the moment it exits.

    bench/daemon_reaper.py        # started by bench/daemon_crash.py --reaper; exits when
                                  # it has no children left, or on SIGTERM
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def main() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    os.makedirs("/var/log/libvirt", exist_ok=True)
    env = {**os.environ, "LIBVIRT_LOG_OUTPUTS": "3:file:/var/log/libvirt/libvirtd.log"}
    subprocess.Popen(["libvirtd", "-d"], env=env)  # daemonizes: its daemon is ours to reap
    idle_since: float | None = None
    while True:
        try:
            os.waitpid(-1, 0)
            idle_since = None
        except ChildProcessError:
            # libvirtd -d forks before its parent exits: give the daemon time to appear.
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 10:
                return
            time.sleep(0.1)


if __name__ == "__main__":
    main()
