"""Runtime network state and changes: through pyroute2 when it is importable, else ``ip``.

Both implementations read the same :class:`~kvmguest.guest.plan.NetSnapshot` and carry
out the same :data:`~kvmguest.guest.plan.NetAction` values, so the decisions are identical
whichever is used. Deleting what is already gone is not an error: the kernel removes the
routes of an address along with it, and a plan made just before may name them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Sequence
from typing import Any, Protocol

from kvmguest.guest import command
from kvmguest.guest.plan import (
    AddressAdd,
    AddressDel,
    IfAddress,
    Link,
    LinkUp,
    NetAction,
    NetSnapshot,
    Route,
    RouteDel,
    RouteReplace,
)

_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_IFA_F_PERMANENT = 0x80
_RT_SCOPE_UNIVERSE = 0
_RT_TABLE_MAIN = 254
_RTPROT_STATIC = 4
_PROTOCOLS = {2: "kernel", 3: "boot", 4: "static", 9: "ra", 16: "dhcp"}
_FOREVER = 4294967295
_ESRCH = 3
_EADDRNOTAVAIL = 99


class NetOps(Protocol):
    name: str

    def snapshot(self) -> NetSnapshot: ...

    def apply(self, action: NetAction) -> None: ...

    def close(self) -> None: ...


def _physical(name: str) -> bool:
    # A NIC on a bus has a "device" link in sysfs; bridges, veths and tunnels have none.
    return os.path.exists(f"/sys/class/net/{name}/device")


def _family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _default_dst(family: int) -> str:
    return "::/0" if family == 6 else "0.0.0.0/0"


class PyRoute2Ops:
    """Netlink through pyroute2, in this process's network namespace."""

    name = "pyroute2"

    def __init__(self) -> None:
        from pyroute2 import IPRoute

        self._ipr: Any = IPRoute()

    def close(self) -> None:
        self._ipr.close()

    def snapshot(self) -> NetSnapshot:
        addresses: dict[int, list[IfAddress]] = {}
        for msg in self._ipr.get_addr():
            if msg["scope"] != _RT_SCOPE_UNIVERSE:
                continue
            flags = msg.get_attr("IFA_FLAGS")
            flags = msg["flags"] if flags is None else flags
            address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            addresses.setdefault(msg["index"], []).append(
                IfAddress(str(address), int(msg["prefixlen"]), bool(flags & _IFA_F_PERMANENT))
            )
        links = []
        names: dict[int, str] = {}
        for msg in self._ipr.get_links():
            name = str(msg.get_attr("IFLA_IFNAME"))
            names[msg["index"]] = name
            links.append(
                Link(
                    name=name,
                    index=int(msg["index"]),
                    up=bool(msg["flags"] & _IFF_UP),
                    loopback=bool(msg["flags"] & _IFF_LOOPBACK),
                    physical=_physical(name),
                    addresses=tuple(addresses.get(msg["index"], ())),
                )
            )
        routes = []
        for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
            for msg in self._ipr.get_routes(family=family, table=_RT_TABLE_MAIN):
                if msg["dst_len"] != 0 or msg.get_attr("RTA_DST") is not None:
                    continue
                if msg["type"] != 1:  # RTN_UNICAST: skip unreachable/prohibit defaults
                    continue
                oif = msg.get_attr("RTA_OIF")
                gateway = msg.get_attr("RTA_GATEWAY")
                routes.append(
                    Route(
                        family=version,
                        gateway=None if gateway is None else str(gateway),
                        device=names.get(oif) if oif is not None else None,
                        metric=int(msg.get_attr("RTA_PRIORITY") or 0),
                        protocol=_PROTOCOLS.get(msg["proto"], str(msg["proto"])),
                    )
                )
        return NetSnapshot(tuple(links), tuple(routes))

    def _index(self, device: str) -> int:
        found = self._ipr.link_lookup(ifname=device)
        if not found:
            raise OSError(f"no such device {device}")
        return int(found[0])

    def apply(self, action: NetAction) -> None:
        from pyroute2 import NetlinkError

        try:
            self._apply(action)
        except NetlinkError as exc:
            if isinstance(action, RouteDel) and exc.code == _ESRCH:
                return
            if isinstance(action, AddressDel) and exc.code == _EADDRNOTAVAIL:
                return
            raise OSError(f"{action.describe()}: {exc}") from None

    def _apply(self, action: NetAction) -> None:
        if isinstance(action, (AddressAdd, AddressDel)):
            kwargs: dict[str, Any] = {
                "index": self._index(action.device),
                "address": action.address,
                "prefixlen": action.prefix,
                "family": _family_of(action.address),
            }
            if isinstance(action, AddressAdd):
                self._ipr.addr("replace", **kwargs, **_broadcast(action))
            else:
                self._ipr.addr("del", **kwargs)
        elif isinstance(action, LinkUp):
            self._ipr.link("set", index=self._index(action.device), state="up")
        elif isinstance(action, RouteReplace):
            self._ipr.route(
                "replace",
                dst=_default_dst(action.family),
                gateway=action.gateway,
                oif=self._index(action.device),
                priority=action.metric,
                proto=_RTPROT_STATIC,
                family=_family_of(action.gateway),
                table=_RT_TABLE_MAIN,
            )
        else:
            route: dict[str, Any] = {
                "dst": _default_dst(action.family),
                "priority": action.metric,
                "family": socket.AF_INET6 if action.family == 6 else socket.AF_INET,
                "table": _RT_TABLE_MAIN,
            }
            if action.gateway is not None:
                route["gateway"] = action.gateway
            if action.device is not None:
                try:
                    route["oif"] = self._index(action.device)
                except OSError:
                    return  # the device is gone, and its routes with it
            self._ipr.route("del", **route)


def _broadcast(action: AddressAdd) -> dict[str, Any]:
    """IPv4 subnets with a broadcast address get it set, as ``ip addr add ... brd +`` does."""
    if ":" in action.address or action.prefix >= 31:
        return {}
    import ipaddress

    net = ipaddress.ip_network(f"{action.address}/{action.prefix}", strict=False)
    return {"broadcast": str(net.broadcast_address)}


class IpCommandOps:
    """The same through the ``ip`` command (iproute2 with JSON output, 4.14 and later)."""

    name = "ip"

    def __init__(self, ip: str | None = None) -> None:
        self._ip = ip or shutil.which("ip") or "/sbin/ip"

    def close(self) -> None:
        pass

    def _run(self, args: Sequence[str]) -> str:
        done = command.run([self._ip, *args], merge_stderr=False)
        if done.status != 0:
            raise OSError(f"ip {' '.join(args)}: {done.message}")
        return done.stdout

    def _json(self, args: Sequence[str]) -> list[dict[str, Any]]:
        out = self._run(["-j", *args]).strip()
        data = json.loads(out) if out else []
        return [item for item in data if isinstance(item, dict) and item]

    def snapshot(self) -> NetSnapshot:
        links = []
        for item in self._json(["address", "show"]):
            name = str(item["ifname"])
            addresses = tuple(
                IfAddress(
                    str(info["local"]),
                    int(info["prefixlen"]),
                    info.get("valid_life_time", _FOREVER) == _FOREVER
                    and not info.get("dynamic", False),
                )
                for info in item.get("addr_info", [])
                if info.get("scope") == "global" and "local" in info
            )
            flags = item.get("flags", [])
            links.append(
                Link(
                    name=name,
                    index=int(item["ifindex"]),
                    up="UP" in flags,
                    loopback="LOOPBACK" in flags,
                    physical=_physical(name),
                    addresses=addresses,
                )
            )
        routes = []
        for version in (4, 6):
            for item in self._json([f"-{version}", "route", "show", "default", "table", "main"]):
                if item.get("type", "unicast") != "unicast":
                    continue
                routes.append(
                    Route(
                        family=version,
                        gateway=item.get("gateway"),
                        device=item.get("dev"),
                        metric=int(item.get("metric", 0)),
                        # iproute2 leaves out the protocol when it is "boot".
                        protocol=str(item.get("protocol", "boot")),
                    )
                )
        return NetSnapshot(tuple(links), tuple(routes))

    def apply(self, action: NetAction) -> None:
        try:
            self._run(_ip_args(action))
        except OSError as exc:
            text = str(exc)
            if isinstance(action, RouteDel) and (
                "No such process" in text or "Cannot find device" in text
            ):
                return
            if isinstance(action, AddressDel) and "Cannot assign requested address" in text:
                return
            raise


def _ip_args(action: NetAction) -> list[str]:
    if isinstance(action, AddressAdd):
        brd = [] if ":" in action.address or action.prefix >= 31 else ["broadcast", "+"]
        return [
            "address",
            "replace",
            f"{action.address}/{action.prefix}",
            *brd,
            "dev",
            action.device,
        ]
    if isinstance(action, AddressDel):
        return ["address", "del", f"{action.address}/{action.prefix}", "dev", action.device]
    if isinstance(action, LinkUp):
        return ["link", "set", "dev", action.device, "up"]
    family = f"-{action.family}"
    if isinstance(action, RouteReplace):
        return [
            family, "route", "replace", "default", "via", action.gateway,
            "dev", action.device, "metric", str(action.metric), "proto", "static",
        ]  # fmt: skip
    args = [family, "route", "del", "default"]
    if action.gateway is not None:
        args += ["via", action.gateway]
    if action.device is not None:
        args += ["dev", action.device]
    return [*args, "metric", str(action.metric), "table", "main"]


def open_netops(prefer: str = "auto") -> NetOps:
    """``auto``: pyroute2 if it is installed, else the ``ip`` command."""
    if prefer in ("auto", "pyroute2"):
        try:
            return PyRoute2Ops()
        except ImportError:
            if prefer == "pyroute2":
                raise
    return IpCommandOps()
