"""Persistent network configuration for each backend a guest may use (pure rendering).

Each backend gets a file that makes the site address survive a restart of the network
service, and takes precedence over the guest's own configuration of the device:

- networkmanager: ``/etc/NetworkManager/system-connections/kvmguest-dr-DEV.nmconnection``
  (0600), wins by ``autoconnect-priority=100``;
- networkd: ``/etc/systemd/network/05-kvmguest-dr-DEV.network``, wins as the first match in
  name order;
- ifupdown: ``/etc/network/interfaces.d/kvmguest-dr-DEV``, with the main
  ``/etc/network/interfaces`` edited: its stanzas for DEV in the payload's family commented
  out, and a ``source`` line added if it does not read interfaces.d;
- ifcfg (RHEL network-scripts): ``/etc/sysconfig/network-scripts/ifcfg-DEV``, replaced.

Files we replace or edit keep their original in the state file and get it back when a
later payload no longer needs them (see :func:`kvmguest.guest.plan.plan_files`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from kvmguest.guest.payload import DrPayload
from kvmguest.guest.plan import DesiredFile

BACKENDS = ("networkmanager", "networkd", "ifupdown", "ifcfg", "none")
RESOLV_CONF = "/etc/resolv.conf"
IFUPDOWN_MAIN = "/etc/network/interfaces"
_NM_DIR = "/etc/NetworkManager/system-connections"
_MARK = "#kvmguest-dr# "
# Stable across runs and guests: NetworkManager must see the same connection every boot.
_NM_NAMESPACE = uuid.UUID("5f0d7d0e-3c55-4d1b-9a1e-6b4b1f0c9a27")
_IFUPDOWN_STANZAS = (
    "iface",
    "mapping",
    "auto",
    "allow-",
    "source",
    "source-directory",
    "rename",
    "no-auto-down",
    "no-scripts",
)


def _header(payload: DrPayload, comment: str = "#") -> str:
    # No timestamp: the agent regenerates the payload at every start of the VM, and an
    # unchanged site must not rewrite the guest's files.
    site = f" of site {payload.site}" if payload.site else ""
    return (
        f"{comment} Written by kvmguest-net-reconfig from the DR payload{site}.\n"
        f"{comment} Do not edit: it is rewritten at boot while the DR CD-ROM is attached.\n"
    )


def connection_id(device: str) -> str:
    return f"kvmguest-dr-{device}"


def _dns_of(payload: DrPayload, family: int) -> list[str]:
    return [s for s in payload.dns_servers if (":" in s) == (family == 6)]


def render_networkd(payload: DrPayload, device: str) -> dict[str, DesiredFile]:
    lines = [_header(payload), "[Match]", f"Name={device}", "", "[Network]"]
    lines.append(f"Address={payload.cidr}")
    if payload.gateway:
        lines.append(f"Gateway={payload.gateway}")
    lines.extend(f"DNS={server}" for server in payload.dns_servers)
    if payload.dns_search:
        lines.append(f"Domains={' '.join(payload.dns_search)}")
    path = f"/etc/systemd/network/05-{connection_id(device)}.network"
    return {path: DesiredFile("\n".join(lines) + "\n")}


def _nm_section(payload: DrPayload, family: int) -> list[str]:
    section = ["", f"[ipv{family}]"]
    dns = _dns_of(payload, family)
    if payload.family == family:
        section += ["method=manual", f"address1={payload.cidr}"]
        if payload.gateway:
            section.append(f"gateway={payload.gateway}")
        if payload.dns_search:
            section.append(f"dns-search={';'.join(payload.dns_search)};")
    elif dns:
        # NetworkManager only uses a family's DNS servers when that family is configured.
        section.append("method=auto")
    else:
        section.append("method=disabled" if family == 4 else "method=ignore")
    if dns:
        section.append(f"dns={';'.join(dns)};")
    return section


def render_networkmanager(payload: DrPayload, device: str) -> dict[str, DesiredFile]:
    name = connection_id(device)
    lines = [
        _header(payload),
        "[connection]",
        f"id={name}",
        f"uuid={uuid.uuid5(_NM_NAMESPACE, name)}",
        "type=ethernet",
        f"interface-name={device}",
        "autoconnect=true",
        # Above any profile the guest already has for this NIC (default priority 0).
        "autoconnect-priority=100",
        "",
        "[ethernet]",
    ]
    lines += _nm_section(payload, 4) + _nm_section(payload, 6)
    # NetworkManager ignores keyfiles that others can read.
    return {f"{_NM_DIR}/{name}.nmconnection": DesiredFile("\n".join(lines) + "\n", 0o600)}


def render_ifcfg(payload: DrPayload, device: str) -> dict[str, DesiredFile]:
    lines = [
        _header(payload),
        f"DEVICE={device}",
        "TYPE=Ethernet",
        "ONBOOT=yes",
        "BOOTPROTO=none",
    ]
    if payload.family == 4:
        lines += [f"IPADDR={payload.ip_address}", f"PREFIX={payload.prefix_length}"]
        if payload.gateway:
            lines += [f"GATEWAY={payload.gateway}", "DEFROUTE=yes"]
    else:
        lines += ["IPV6INIT=yes", "IPV6_AUTOCONF=no", f"IPV6ADDR={payload.cidr}"]
        if payload.gateway:
            # A link-local router is only meaningful with its interface.
            scope = f"%{device}" if payload.gateway.lower().startswith("fe80:") else ""
            lines += [f"IPV6_DEFAULTGW={payload.gateway}{scope}", "IPV6_DEFROUTE=yes"]
    lines += [f"DNS{i}={server}" for i, server in enumerate(payload.dns_servers, 1)]
    if payload.dns_search:
        lines.append(f'DOMAIN="{" ".join(payload.dns_search)}"')
    path = f"/etc/sysconfig/network-scripts/ifcfg-{device}"
    return {path: DesiredFile("\n".join(lines) + "\n")}


def _ifupdown_name(device: str) -> str:
    # source-directory reads only run-parts names (no dots): eth0.100 -> eth0_100.
    return connection_id(device).replace(".", "_")


def _is_stanza(words: Sequence[str]) -> bool:
    return bool(words) and any(
        words[0] == s or (s.endswith("-") and words[0].startswith(s)) for s in _IFUPDOWN_STANZAS
    )


def edit_ifupdown_main(original: str, device: str, family: int) -> tuple[str, bool]:
    """Comment out the main file's stanzas for ``device`` in the payload's family.

    Returns the new text and whether ``device`` is still brought up by an ``auto`` or
    ``allow-*`` line there. Commented lines carry a marker, and the text always derives from
    the original, so the edit is the same at every run.
    """
    if not original:
        return original, False
    keyword = "inet6" if family == 6 else "inet"
    out: list[str] = []
    in_ours = False
    auto_kept = False
    for line in original.splitlines():
        words = line.split("#", 1)[0].split()
        if _is_stanza(words):
            in_ours = words[0] == "iface" and words[1:3] == [device, keyword]
            if (words[0] == "auto" or words[0].startswith("allow-")) and device in words[1:]:
                auto_kept = True
        out.append(_MARK + line if in_ours else line)
    text = "\n".join(out) + ("\n" if original.endswith("\n") else "")
    return text, auto_kept


def _sources_interfaces_d(text: str, name: str) -> bool:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) != 2:
            continue
        if words[0] == "source" and words[1] in (
            "/etc/network/interfaces.d/*",
            "interfaces.d/*",
            f"/etc/network/interfaces.d/{name}",
        ):
            return True
        if words[0] == "source-directory" and words[1].rstrip("/") in (
            "/etc/network/interfaces.d",
            "interfaces.d",
        ):
            return True
    return False


def render_ifupdown(
    payload: DrPayload, device: str, main_original: str | None
) -> dict[str, DesiredFile]:
    """The interfaces.d file, and the main file if it needs an edit to let ours apply."""
    name = _ifupdown_name(device)
    main = main_original or ""
    edited, auto_kept = edit_ifupdown_main(main, device, payload.family)
    if not _sources_interfaces_d(edited, name):
        edited += ("" if not edited or edited.endswith("\n") else "\n") + (
            f"{_MARK.strip()} the DR site configuration of {device}:\n"
            f"source /etc/network/interfaces.d/{name}\n"
        )
    keyword = "inet6" if payload.family == 6 else "inet"
    lines = [_header(payload)]
    if not auto_kept:
        lines.append(f"auto {device}")
    lines += [
        f"iface {device} {keyword} static",
        f"    address {payload.ip_address}",
        f"    netmask {payload.netmask or payload.prefix_length}",
    ]
    if payload.gateway:
        lines.append(f"    gateway {payload.gateway}")
    # Used by the resolvconf package's hook; harmless without it.
    if payload.dns_servers:
        lines.append(f"    dns-nameservers {' '.join(payload.dns_servers)}")
    if payload.dns_search:
        lines.append(f"    dns-search {' '.join(payload.dns_search)}")
    files = {f"/etc/network/interfaces.d/{name}": DesiredFile("\n".join(lines) + "\n")}
    if edited != main:
        files[IFUPDOWN_MAIN] = DesiredFile(edited)
    return files


def render_backend(
    backend: str, payload: DrPayload, device: str, ifupdown_main: str | None = None
) -> dict[str, DesiredFile]:
    """The persistent files of ``backend`` (``none``: no file, runtime settings only)."""
    if backend == "networkd":
        return render_networkd(payload, device)
    if backend == "networkmanager":
        return render_networkmanager(payload, device)
    if backend == "ifupdown":
        return render_ifupdown(payload, device, ifupdown_main)
    if backend == "ifcfg":
        return render_ifcfg(payload, device)
    if backend == "none":
        return {}
    raise ValueError(f"unknown backend {backend!r}")


def render_resolv_conf(payload: DrPayload) -> DesiredFile | None:
    """``/etc/resolv.conf`` for the payload, None when it sets no DNS at all."""
    if not payload.dns_servers and not payload.dns_search:
        return None
    lines = [_header(payload).rstrip("\n")]
    if payload.dns_search:
        lines.append(f"search {' '.join(payload.dns_search)}")
    lines += [f"nameserver {server}" for server in payload.dns_servers]
    return DesiredFile("\n".join(lines) + "\n")


@dataclass(frozen=True)
class BackendFacts:
    """What the guest has installed and enabled, gathered by :mod:`kvmguest.guest.system`."""

    networkmanager: bool = False
    networkd: bool = False
    ifupdown: bool = False
    ifcfg: bool = False
    #: The device has a stanza in /etc/network/interfaces.
    ifupdown_has_device: bool = False


def detect_backend(facts: BackendFacts) -> str:
    """Pick the backend that will configure the device at the next boot.

    NetworkManager first, as it is the default of current RHEL, Fedora, SUSE and desktop
    Debian/Ubuntu; except that NetworkManager leaves alone a NIC that ifupdown configures
    (Debian's ``managed=false``), so such a NIC stays with ifupdown. Then systemd-networkd,
    ifupdown, and the legacy RHEL network-scripts.
    """
    if facts.networkmanager and not (facts.ifupdown and facts.ifupdown_has_device):
        return "networkmanager"
    if facts.networkd:
        return "networkd"
    if facts.ifupdown:
        return "ifupdown"
    if facts.ifcfg:
        return "ifcfg"
    return "none"
