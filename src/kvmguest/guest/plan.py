"""Pure decisions of kvmguest-net-reconfig: from (payload, current state, what we applied
before) to the list of changes. No I/O here; :mod:`kvmguest.guest.netreconfig` gathers the
state, calls these functions and carries the changes out.

Every function compares with the current state, so a second run plans nothing: that is how
the service is idempotent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from kvmguest.guest.payload import DrPayload

#: The kernel's default metrics for a route added without one: using them keeps our default
#: route where ``ip route`` and the network managers put theirs.
DEFAULT_METRIC = {4: 0, 6: 1024}
#: Route protocols of statically configured routes (``boot``: ``ip route`` without proto).
STATIC_PROTOCOLS = frozenset({"boot", "static"})
STATE_VERSION = 1


# --------------------------------------------------------------------------- network state


@dataclass(frozen=True)
class IfAddress:
    address: str
    prefix: int
    #: False for addresses with a lifetime (DHCP lease, SLAAC): those belong to their daemon.
    permanent: bool = True

    @property
    def family(self) -> int:
        return 6 if ":" in self.address else 4

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefix}"


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    up: bool
    loopback: bool = False
    #: Backed by a bus device (a real or virtio NIC), not a bridge, veth, tunnel...
    physical: bool = False
    #: Global-scope addresses only.
    addresses: tuple[IfAddress, ...] = ()


@dataclass(frozen=True)
class Route:
    """A default route in the main table."""

    family: int
    gateway: str | None
    device: str | None
    metric: int = 0
    protocol: str = "static"


@dataclass(frozen=True)
class NetSnapshot:
    links: tuple[Link, ...]
    default_routes: tuple[Route, ...] = ()

    def link(self, name: str) -> Link | None:
        for link in self.links:
            if link.name == name:
                return link
        return None


def pick_device(wanted: str | None, snapshot: NetSnapshot) -> str | None:
    """The device to configure: the payload's, else the first NIC that is not loopback.

    "First" is by name, preferring NICs backed by a device (so a bridge or a container
    interface named ``docker0`` never wins over ``eth0``), which is deterministic across
    boots, unlike interface indexes.
    """
    if wanted is not None:
        return wanted if snapshot.link(wanted) is not None else None
    candidates = sorted((link for link in snapshot.links if not link.loopback), key=_nic_order)
    return candidates[0].name if candidates else None


def _nic_order(link: Link) -> tuple[bool, str]:
    return (not link.physical, link.name)


# --------------------------------------------------------------------------- network changes


@dataclass(frozen=True)
class AddressDel:
    device: str
    address: str
    prefix: int

    def describe(self) -> str:
        return f"address del {self.address}/{self.prefix} dev {self.device}"


@dataclass(frozen=True)
class AddressAdd:
    device: str
    address: str
    prefix: int

    def describe(self) -> str:
        return f"address add {self.address}/{self.prefix} dev {self.device}"


@dataclass(frozen=True)
class LinkUp:
    device: str

    def describe(self) -> str:
        return f"link set {self.device} up"


@dataclass(frozen=True)
class RouteReplace:
    family: int
    gateway: str
    device: str
    metric: int

    def describe(self) -> str:
        return (
            f"route replace default via {self.gateway} dev {self.device} "
            f"metric {self.metric} (IPv{self.family})"
        )


@dataclass(frozen=True)
class RouteDel:
    family: int
    gateway: str | None
    device: str | None
    metric: int

    def describe(self) -> str:
        via = f" via {self.gateway}" if self.gateway else ""
        dev = f" dev {self.device}" if self.device else ""
        return f"route del default{via}{dev} metric {self.metric} (IPv{self.family})"


# Union, not |: the guest side also runs on Python < 3.10.
NetAction = Union[AddressDel, AddressAdd, LinkUp, RouteReplace, RouteDel]  # noqa: UP007


@dataclass(frozen=True)
class Original:
    """What was at a path before we first wrote it, so that it can be put back."""

    kind: str  # "absent", "file" or "symlink"
    content: str = ""  # file content, or the symlink's target
    mode: int = 0o644


@dataclass(frozen=True)
class AppliedState:
    """What the last run applied: needed to take a previous site's settings away."""

    device: str
    ip_address: str
    prefix_length: int
    gateway: str | None
    dns_servers: tuple[str, ...]
    dns_search: tuple[str, ...]
    backend: str
    resolver: str
    site: str | None = None
    #: Guest paths we manage, with what was there before us.
    files: Mapping[str, Original] = field(default_factory=dict)

    @property
    def family(self) -> int:
        return 6 if ":" in self.ip_address else 4


def plan_network(
    payload: DrPayload, device: str, snapshot: NetSnapshot, previous: AppliedState | None
) -> list[NetAction]:
    """The netlink changes that make ``device`` carry exactly the payload's address and route.

    The payload's device is dedicated to the site address (the seed's words), so every other
    static global address of its family on it goes, as does the address a previous run set,
    wherever it is: after a second failover nothing of the first site is left. Addresses
    with a lifetime (DHCP, SLAAC) belong to their daemons and stay. Deletions come first, so
    that deleting an old primary address cannot take a new secondary one with it.
    """
    family = payload.family
    target = IfAddress(payload.ip_address, payload.prefix_length)
    link = snapshot.link(device)
    if link is None:
        raise ValueError(f"device {device} is not in the snapshot")
    actions: list[NetAction] = []

    if previous is not None and previous.device != device:
        old_link = snapshot.link(previous.device)
        for addr in old_link.addresses if old_link else ():
            if (addr.address, addr.prefix) == (previous.ip_address, previous.prefix_length):
                actions.append(AddressDel(previous.device, addr.address, addr.prefix))
    present = False
    for addr in link.addresses:
        if (addr.address, addr.prefix) == (target.address, target.prefix):
            present = True
        elif (addr.family == family and addr.permanent) or (
            previous is not None
            and previous.device == device
            and addr.address == previous.ip_address
        ):
            actions.append(AddressDel(device, addr.address, addr.prefix))
    if not present:
        actions.append(AddressAdd(device, target.address, target.prefix))
    if not link.up:
        actions.append(LinkUp(device))

    wanted: Route | None = None
    if payload.gateway is not None:
        wanted = Route(family, payload.gateway, device, DEFAULT_METRIC[family])
    for route in snapshot.default_routes:
        if wanted is not None and _same_route(route, wanted):
            continue
        ours_before = previous is not None and (
            (route.family, route.gateway, route.device)
            == (previous.family, previous.gateway, previous.device)
        )
        static_here = (
            route.device == device and route.family == family and route.protocol in STATIC_PROTOCOLS
        )
        # Routes of other daemons (dhcp, ra) and on other NICs are not ours to remove; a
        # replace below still takes the place of one in the same slot (family, metric).
        if ours_before or static_here:
            actions.append(RouteDel(route.family, route.gateway, route.device, route.metric))
    if wanted is not None and not any(_same_route(r, wanted) for r in snapshot.default_routes):
        actions.append(RouteReplace(family, wanted.gateway or "", device, wanted.metric))
    return actions


def _same_route(a: Route, b: Route) -> bool:
    return (a.family, a.gateway, a.device, a.metric) == (b.family, b.gateway, b.device, b.metric)


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class DesiredFile:
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class CurrentFile:
    kind: str  # "absent", "file" or "symlink"
    content: str = ""  # for a symlink: its target
    mode: int = 0o644


@dataclass(frozen=True)
class FileWrite:
    path: str
    content: str
    mode: int
    reason: str = "write"

    def describe(self) -> str:
        return f"file {self.reason} {self.path} (mode {self.mode:04o})"


@dataclass(frozen=True)
class FileRemove:
    path: str

    def describe(self) -> str:
        return f"file remove {self.path}"


@dataclass(frozen=True)
class FileSymlink:
    path: str
    target: str

    def describe(self) -> str:
        return f"file restore {self.path} -> {self.target} (symlink)"


FileAction = Union[FileWrite, FileRemove, FileSymlink]  # noqa: UP007


def plan_files(
    desired: Mapping[str, DesiredFile],
    managed: Mapping[str, Original],
    current: Mapping[str, CurrentFile],
) -> tuple[list[FileAction], dict[str, Original]]:
    """Changes that bring the files to ``desired``, and the new set of managed paths.

    ``managed`` is what an earlier run wrote, with what was there before it; a managed path
    no longer desired gets its original back (removed if there was none), so a site's files
    disappear with the site. ``current`` must cover every path of both mappings.
    """
    actions: list[FileAction] = []
    now_managed: dict[str, Original] = {}
    for path in sorted(desired):
        want = desired[path]
        have = current[path]
        if path in managed:
            now_managed[path] = managed[path]
        else:
            now_managed[path] = Original(have.kind, have.content, have.mode)
        if have.kind != "file" or have.content != want.content or have.mode != want.mode:
            actions.append(FileWrite(path, want.content, want.mode))
    for path in sorted(set(managed) - set(desired)):
        original = managed[path]
        have = current[path]
        if original.kind == "absent":
            if have.kind != "absent":
                actions.append(FileRemove(path))
        elif original.kind == "symlink":
            if have.kind != "symlink" or have.content != original.content:
                actions.append(FileSymlink(path, original.content))
        elif (have.kind, have.content, have.mode) != ("file", original.content, original.mode):
            actions.append(FileWrite(path, original.content, original.mode, reason="restore"))
    return actions, now_managed


# --------------------------------------------------------------------------- state file


def state_to_json(state: AppliedState) -> str:
    """Deterministic text: an unchanged state is byte-identical, so it is not rewritten."""
    obj: dict[str, Any] = {
        "version": STATE_VERSION,
        "device": state.device,
        "ip_address": state.ip_address,
        "prefix_length": state.prefix_length,
        "gateway": state.gateway,
        "dns_servers": list(state.dns_servers),
        "dns_search": list(state.dns_search),
        "backend": state.backend,
        "resolver": state.resolver,
        "site": state.site,
        "files": {
            path: {"kind": o.kind, "content": o.content, "mode": o.mode}
            for path, o in sorted(state.files.items())
        },
    }
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def state_from_json(text: str) -> AppliedState:
    """Parse the state file; ValueError (with the reason) if it is not one we wrote."""
    try:
        obj = json.loads(text)
        if obj.get("version") != STATE_VERSION:
            raise ValueError(f"state version {obj.get('version')!r} is not {STATE_VERSION}")
        files = {
            str(path): Original(str(o["kind"]), str(o["content"]), int(o["mode"]))
            for path, o in obj["files"].items()
        }
        for path, original in files.items():
            if not path.startswith("/") or original.kind not in ("absent", "file", "symlink"):
                raise ValueError(f"bad managed file entry {path!r}")
        return AppliedState(
            device=str(obj["device"]),
            ip_address=str(obj["ip_address"]),
            prefix_length=int(obj["prefix_length"]),
            gateway=None if obj["gateway"] is None else str(obj["gateway"]),
            dns_servers=tuple(str(s) for s in obj["dns_servers"]),
            dns_search=tuple(str(s) for s in obj["dns_search"]),
            backend=str(obj["backend"]),
            resolver=str(obj["resolver"]),
            site=None if obj["site"] is None else str(obj["site"]),
            files=files,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed state: {exc!r}") from None


def merged_files(*maps: Mapping[str, Original]) -> dict[str, Original]:
    """Union of managed-file maps, the first mapping's original winning for a path."""
    out: dict[str, Original] = {}
    for mapping in reversed(maps):
        out.update(mapping)
    return out


def describe_all(actions: Iterable[Any]) -> list[str]:
    return [action.describe() for action in actions]
