"""Where kvmguest runs: this host's system name and the defaults every command starts from.

Standard library only: the one-shot monitor's lean path imports this, not the agents'
protocols (dataclasses alone would cost it ~10 ms).
"""

from __future__ import annotations

import os

DEFAULT_URI = "qemu:///system"
DEFAULT_CONFIG = "/etc/kvmguest/main.cf"


def local_system(explicit: str | None = None) -> str:
    """This host's system name: --system, KVMGUEST_SYSTEM, or the short host name."""
    if explicit:
        return explicit
    env = os.environ.get("KVMGUEST_SYSTEM")
    if env:
        return env
    import socket  # only when the name must be asked of the host

    return socket.gethostname().split(".")[0]
