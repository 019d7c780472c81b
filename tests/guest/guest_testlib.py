"""Helpers of the guest tests: a network namespace standing in for a guest, ip monitor.

Everything network happens inside namespaces the ``guest`` fixture (conftest.py) creates: a
"guest" namespace and a "peer" one holding the other ends of its veth NICs, with
documentation addresses only; the fixture deletes the namespaces, and the NICs with them.
"""

from __future__ import annotations

import io
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycdlib
import pytest

from kvmguest.guest.payload import VOLUME_LABEL

SITE_A = {
    "ConfigureNetwork": "1",
    "IPAddress": "198.51.100.10",
    "Netmask": "255.255.255.0",
    "Gateway": "198.51.100.1",
    "DNSServers": "198.51.100.53",
    "DNSSearchPath": "site-a.example",
    "Device": "eth0",
}
SITE_B = {
    "ConfigureNetwork": "1",
    "IPAddress": "203.0.113.20",
    "Netmask": "24",
    "Gateway": "203.0.113.1",
    "DNSServers": "203.0.113.53 203.0.113.54",
    "DNSSearchPath": "site-b.example",
    "Device": "eth0",
}


def payload_iso(path: Path, content: bytes, label: str = VOLUME_LABEL) -> Path:
    """An image holding ``content`` as the payload file, whatever it is (as oVirt writes)."""
    writer = pycdlib.PyCdlib()
    writer.new(interchange_level=3, vol_ident=label, rock_ridge="1.09")
    writer.add_fp(io.BytesIO(content), len(content), "/KVMGUEST.JSO;1", rr_name="kvmguest-dr.json")
    writer.write(str(path))
    writer.close()
    return path


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if shutil.which("ip") is None:
        return "iproute2's ip command is not installed"
    probe = f"kgprobe{os.getpid()}"
    if run("ip", "netns", "add", probe, check=False).returncode != 0:
        return "ip netns add does not work here"
    run("ip", "netns", "del", probe, check=False)
    return None


NETNS_SKIP = _netns_unavailable()
needs_netns = pytest.mark.skipif(NETNS_SKIP is not None, reason=str(NETNS_SKIP))


@dataclass
class GuestNet:
    """A namespace playing the guest, with the guest's files under ``root``."""

    ns: str
    peer: str
    root: Path
    netlink: str = "auto"
    nics: list[str] = field(default_factory=list)

    def ip(self, *args: str) -> str:
        return run("ip", "-n", self.ns, *args).stdout

    def add_nic(self, name: str) -> None:
        other = f"p{len(self.nics)}{name}"[:15]
        run("ip", "link", "add", name, "netns", self.ns, "type", "veth", "peer", "name", other)
        run("ip", "link", "set", other, "netns", self.peer)
        # The peer end up gives the guest end a carrier, as a plugged NIC has.
        run("ip", "-n", self.peer, "link", "set", other, "up")
        self.nics.append(name)

    def addresses(self, device: str = "eth0") -> list[str]:
        data = json.loads(self.ip("-j", "address", "show", "dev", device))
        return sorted(
            f"{a['local']}/{a['prefixlen']}"
            for link in data
            for a in link.get("addr_info", [])
            if a.get("scope") == "global"
        )

    def default_routes(self) -> list[tuple[str | None, str | None]]:
        routes = []
        for family in ("-4", "-6"):
            data = json.loads(self.ip("-j", family, "route", "show", "default") or "[]")
            routes += [(r.get("gateway"), r.get("dev")) for r in data]
        return sorted(routes, key=str)

    def link_up(self, device: str) -> bool:
        data = json.loads(self.ip("-j", "link", "show", "dev", device))
        return "UP" in data[0]["flags"]

    def network_state(self) -> Any:
        return {n: self.addresses(n) for n in self.nics}, self.default_routes()

    def reconfig(self, *args: str, root: bool = True) -> subprocess.CompletedProcess[str]:
        """Run kvmguest-net-reconfig as the guest would, inside the namespace."""
        argv = ["ip", "netns", "exec", self.ns, sys.executable, "-m"]
        argv += ["kvmguest.guest.netreconfig", "--netlink", self.netlink]
        if root:
            argv += ["--root", str(self.root)]
        return run(*argv, *args, check=False)

    def files(self) -> dict[str, tuple[int, int, int, str]]:
        """Every entry under root: (inode, mtime, mode, content or link target)."""
        out = {}
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                path = os.path.join(dirpath, name)
                info = os.lstat(path)
                if os.path.islink(path):
                    content = "-> " + os.readlink(path)
                else:
                    content = Path(path).read_text(errors="replace")
                rel = "/" + os.path.relpath(path, self.root)
                out[rel] = (info.st_ino, info.st_mtime_ns, info.st_mode, content)
        return out


class NetlinkWatch:
    """``ip monitor`` in a namespace: which netlink events happen between two markers."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            ["ip", "-o", "-n", ns, "monitor", "link", "address", "route"],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def _until(self, *tokens: str, timeout: float = 10.0) -> list[str]:
        """Events up to the first one holding all ``tokens``; TimeoutError if none comes."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {tokens} event within {timeout}s; saw {seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if all(token in line for token in tokens):
                return seen
            seen.append(line)

    def start(self, timeout: float = 10.0) -> None:
        """Return once the monitor certainly listens: its marker link's events show up.

        ``ip monitor`` subscribes some time after it starts; until a change of the marker
        is seen, a change may go unseen, so the marker is poked until one is.
        """
        run("ip", "-n", self.ns, "link", "add", "kgmark0", "type", "veth", "peer", "kgmark1")
        deadline = time.monotonic() + timeout
        mtu = 1280
        while True:
            run("ip", "-n", self.ns, "link", "set", "kgmark0", "mtu", str(mtu))
            mtu += 1
            try:
                self._until("kgmark", timeout=min(0.5, max(0.01, deadline - time.monotonic())))
                return
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise

    def stop(self) -> list[str]:
        """The events since :meth:`start` (those of the marker left out)."""
        run("ip", "-n", self.ns, "link", "del", "kgmark0")
        before = self._until("Deleted", "kgmark")
        return [line for line in before if "kgmark" not in line]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
