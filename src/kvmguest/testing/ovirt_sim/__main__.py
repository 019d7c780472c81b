"""Run the oVirt simulator by hand: ``python -m kvmguest.testing.ovirt_sim --dir DIR``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from .model import Durations
from .simulator import DEFAULT_USER, OvirtSimulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kvmguest.testing.ovirt_sim",
        description="A simulated RHV-M (oVirt Engine API v4) on https://127.0.0.1:PORT, "
        "seeded with cluster1, host1, host2, vm1 (up) and vm2 (down).",
    )
    parser.add_argument("--port", type=int, default=8443, help="TCP port (default 8443)")
    parser.add_argument(
        "--dir", required=True, help="directory for ca.pem and the server's key material"
    )
    parser.add_argument("--user", default=DEFAULT_USER, help=f"user (default {DEFAULT_USER})")
    parser.add_argument("--password", help="password (default: a random one, printed at start-up)")
    parser.add_argument(
        "--boot-seconds",
        type=float,
        default=3.0,
        help="time from start to up, and from shutdown to down (default 3)",
    )
    parser.add_argument("--no-demo", action="store_true", help="start with no objects")
    args = parser.parse_args(argv)

    half = args.boot_seconds / 2
    durations = Durations(
        launch=half, power_up=half, power_down=args.boot_seconds, migrate=args.boot_seconds
    )
    sim = OvirtSimulator(
        user=args.user,
        password=args.password,
        port=args.port,
        workdir=args.dir,
        durations=durations,
    )
    if not args.no_demo:
        sim.seed_demo()
    sim.start()
    print(f"URL:      {sim.base_url}   (API: {sim.url})")
    print(f"CA file:  {sim.ca_file}")
    print(f"User:     {sim.user}")
    print(f"Password: {sim.password}")
    print("Serving until interrupted (Ctrl-C).", flush=True)

    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    done.wait()
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
