"""The checks of the DR payload's network fields, shared by DROpts (agent) and JSON (guest).

Every value here ends up in a line of a configuration file inside the guest (resolv.conf,
NetworkManager, networkd, ifupdown, ifcfg), or in a file name. A check therefore matches the
whole value (``re.fullmatch``: ``$`` would accept a trailing newline, i.e. an extra line in
those files), takes ASCII digits only (``str.isdigit`` and ``int`` also take "²" or "١٢"),
and bounds every length and count, so that a hostile payload is refused rather than written.

Each checker takes the name to put in its messages, so that DROpts errors name the DROpts
key and payload errors name the JSON key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

#: glibc reads at most three ``nameserver`` lines (MAXNS); more would be silently ignored.
MAX_DNS_SERVERS = 3
#: Search domains: glibc before 2.26 used 6, later ones any number; 32 is plenty for a site.
MAX_DNS_SEARCH = 32
#: IFNAMSIZ (16) less the terminating NUL.
MAX_DEVICE_LEN = 15
#: RFC 1035: 63 octets a label, 253 characters a name in text form.
MAX_LABEL_LEN = 63
MAX_DOMAIN_LEN = 253
MAX_SITE_LEN = 255
#: The longest ISO 8601 stamp with microseconds and a zone offset is 32 characters.
MAX_GENERATED_LEN = 40
#: An IPv6 address with an embedded IPv4 one is at most 45 characters.
MAX_ADDRESS_LEN = 45

# Interface names end up in file names (ifcfg-DEV) and config files: allow only what is safe
# there, which covers every name the kernel, udev and systemd generate.
_DEVICE_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_DEVICE_LEN - 1}}}")
_LABEL_RE = re.compile(rf"[A-Za-z0-9](?:[A-Za-z0-9-]{{0,{MAX_LABEL_LEN - 2}}}[A-Za-z0-9])?")
_PREFIX_RE = re.compile(r"[0-9]{1,3}")
# Checked before ipaddress: Python before 3.9.5 (guests run 3.8) accepts leading zeros and
# would be the only line of defence otherwise.
_ADDRESS_RE = re.compile(rf"[0-9A-Fa-f:.]{{2,{MAX_ADDRESS_LEN}}}")
_GENERATED_RE = re.compile(rf"[0-9TZ:.+ -]{{10,{MAX_GENERATED_LEN}}}")

if TYPE_CHECKING:
    IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
    IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_unset(value: str | None) -> bool:
    """DROpts convention: ``NONE`` (the type's default) or an empty value mean "not set"."""
    return value is None or value.strip() == "" or value.strip().upper() == "NONE"


def netmask_of(ip_address: str, prefix_length: int) -> str | None:
    """Dotted netmask for IPv4; None for IPv6, which only has prefix lengths."""
    if ipaddress.ip_address(ip_address).version != 4:
        return None
    return str(ipaddress.IPv4Network(f"0.0.0.0/{prefix_length}").netmask)


def _parse_ip(name: str, text: str, errors: list[str]) -> IPAddress | None:
    if "%" in text:
        shown = text[:MAX_ADDRESS_LEN]
        errors.append(f"{name}: '{shown}' has a zone index; give the address alone")
        return None
    if _ADDRESS_RE.fullmatch(text):
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            pass
    errors.append(f"{name}: {text[:MAX_ADDRESS_LEN]!r} is not an IPv4 or IPv6 address")
    return None


def _special_kind(addr: IPAddress) -> str | None:
    """Why an address can never be assigned to or reached on a NIC, if it cannot."""
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_multicast:
        return "a multicast address"
    if isinstance(addr, ipaddress.IPv4Address) and (
        addr.is_reserved or addr == ipaddress.IPv4Address("255.255.255.255")
    ):
        return "a reserved address"
    return None


def _parse_prefix(name: str, text: str, family: int | None, errors: list[str]) -> int | None:
    """A prefix length (``24`` or ``/24``) or, for IPv4, a dotted netmask."""
    value = text.strip()
    if value.startswith("/"):
        value = value[1:]
    if _PREFIX_RE.fullmatch(value):
        prefix = int(value)
        limit = 32 if family == 4 else 128
        if not 1 <= prefix <= limit:
            errors.append(f"{name}: prefix length {prefix} is out of range 1..{limit}")
            return None
        return prefix
    if "." in value and family == 6:
        errors.append(f"{name}: an IPv6 address takes a prefix length (e.g. 64), not {text!r}")
        return None
    mask = _parse_ip(name, value, []) if "." in value else None
    if isinstance(mask, ipaddress.IPv4Address):
        bits = int(mask)
        ones = bin(bits).count("1")
        # A netmask is a run of ones followed by zeros; anything else (0.0.0.255, 255.0.255.0)
        # is a typo that ipaddress would quietly accept as a host mask.
        if ones == 0 or bits != ((1 << 32) - 1) ^ ((1 << (32 - ones)) - 1):
            errors.append(f"{name}: {text!r} is not a contiguous netmask")
            return None
        return ones
    errors.append(f"{name}: {text[:MAX_ADDRESS_LEN]!r} is not a dotted netmask or a prefix length")
    return None


def _check_host_in_net(
    name: str, addr: IPAddress, net: IPNetwork, what: str, errors: list[str]
) -> None:
    """Reject the network (and, for IPv4, broadcast) address of subnets that have them."""
    if net.prefixlen >= net.max_prefixlen - 1:
        return  # /31, /32, /127, /128: every address is a host address
    if addr == net.network_address:
        errors.append(f"{name}: {addr} is the network address of {net}, not {what}")
    elif addr.version == 4 and addr == net.broadcast_address:
        errors.append(f"{name}: {addr} is the broadcast address of {net}, not {what}")


def _check_device(name: str, text: str, errors: list[str]) -> str | None:
    if not _DEVICE_RE.fullmatch(text):
        errors.append(
            f"{name}: {text[: MAX_DEVICE_LEN + 1]!r} is not a valid interface name (1-"
            f"{MAX_DEVICE_LEN} letters, digits, '_', '.' or '-', starting with a letter or digit)"
        )
        return None
    if text == "lo":
        errors.append(f"{name}: the loopback interface cannot carry the site address")
        return None
    return text


def _too_many(name: str, items: Sequence[str], limit: int, what: str, errors: list[str]) -> bool:
    if len(items) <= limit:
        return False
    errors.append(f"{name}: {len(items)} {what} given, at most {limit} are used by the resolver")
    return True


def _check_dns_servers(name: str, items: Sequence[str], errors: list[str]) -> tuple[str, ...]:
    if _too_many(name, items, MAX_DNS_SERVERS, "servers", errors):
        return ()
    servers: list[str] = []
    for item in items:
        addr = _parse_ip(name, item, errors)
        if addr is None:
            if "," in item or ";" in item:
                errors[-1] += " (separate entries with spaces)"
            continue
        if addr.is_unspecified or addr.is_multicast:
            errors.append(f"{name}: {addr} cannot be a DNS server")
            continue
        if str(addr) in servers:
            errors.append(f"{name}: {addr} is listed twice")
            continue
        servers.append(str(addr))
    return tuple(servers)


def is_domain_name(text: str) -> bool:
    """A DNS domain name as a search path entry: LDH labels, 253 characters at most."""
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > MAX_DOMAIN_LEN:
        return False
    return all(_LABEL_RE.fullmatch(label) for label in name.split("."))


def _check_dns_search(name: str, items: Sequence[str], errors: list[str]) -> tuple[str, ...]:
    if _too_many(name, items, MAX_DNS_SEARCH, "domains", errors):
        return ()
    domains: list[str] = []
    for item in items:
        if not is_domain_name(item):
            hint = " (separate entries with spaces)" if "," in item or ";" in item else ""
            shown = item[: MAX_DOMAIN_LEN + 1]
            errors.append(f"{name}: {shown!r} is not a valid domain name{hint}")
            continue
        domain = item.rstrip(".").lower()
        if domain in domains:
            errors.append(f"{name}: '{item}' is listed twice")
            continue
        domains.append(domain)
    return tuple(domains)


def check_site(name: str, site: str, errors: list[str]) -> None:
    # The site name is copied into comments of generated config files: a line break there
    # (isprintable refuses every one str.splitlines knows) would inject configuration.
    if not site or len(site) > MAX_SITE_LEN or not site.isprintable():
        shown = site[: MAX_SITE_LEN + 1]
        errors.append(f"{name}: must be 1-{MAX_SITE_LEN} printable characters, not {shown!r}")


def check_generated(name: str, text: str, errors: list[str]) -> None:
    stamp = None
    if _GENERATED_RE.fullmatch(text):
        try:
            # fromisoformat only accepts a trailing Z from Python 3.11 on.
            stamp = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            stamp = None
    if stamp is None:
        errors.append(f"{name}: {text[:MAX_GENERATED_LEN]!r} is not an ISO 8601 timestamp")
    elif stamp.tzinfo is None:
        errors.append(f"{name}: '{text}' has no time zone")


@dataclass(frozen=True)
class Network:
    """The network fields of a payload, checked and in canonical form."""

    ip_address: str
    prefix_length: int
    device: str | None
    gateway: str | None
    dns_servers: tuple[str, ...]
    dns_search: tuple[str, ...]


@dataclass
class RawFields:
    """Raw field values, named for messages, checked together by :func:`check_network`."""

    names: Mapping[str, str]
    ip_address: str | None
    prefix: str | None
    gateway: str | None
    dns_servers: Sequence[str]
    dns_search: Sequence[str]
    device: str | None


def _check_address(f: RawFields, errors: list[str]) -> tuple[IPAddress | None, int | None]:
    n = f.names
    if f.ip_address is None:
        errors.append(f"{n['ip']}: required when ConfigureNetwork=1")
        return None, None
    text = f.ip_address.strip()
    inline_prefix: str | None = None
    prefix: int | None = None
    if "/" in text:
        text, inline_prefix = text.split("/", 1)
    addr = _parse_ip(n["ip"], text, errors)
    if addr is not None and _special_kind(addr) is not None:
        errors.append(f"{n['ip']}: {addr} is {_special_kind(addr)}, not a site address")
        addr = None
    elif addr is not None and addr.is_link_local:
        errors.append(f"{n['ip']}: {addr} is link-local, not a site address")
        addr = None
    family = addr.version if addr is not None else None
    if inline_prefix is not None:
        prefix = _parse_prefix(n["ip"], inline_prefix, family, errors)
    if f.prefix is not None:
        mask_prefix = _parse_prefix(n["prefix"], f.prefix, family, errors)
        if prefix is not None and mask_prefix is not None and prefix != mask_prefix:
            errors.append(
                f"{n['prefix']}: '{f.prefix}' contradicts the prefix length /{prefix} "
                f"given in {n['ip']}"
            )
        prefix = mask_prefix if prefix is None else prefix
    elif inline_prefix is None:
        errors.append(f"{n['prefix']}: required when ConfigureNetwork=1")
    return addr, prefix


def _check_gateway(
    f: RawFields, addr: IPAddress | None, net: IPNetwork | None, errors: list[str]
) -> IPAddress | None:
    name = f.names["gw"]
    if f.gateway is None:
        return None
    gateway = _parse_ip(name, f.gateway.strip(), errors)
    if gateway is not None and _special_kind(gateway) is not None:
        errors.append(f"{name}: {gateway} is {_special_kind(gateway)}, not a gateway")
        gateway = None
    if gateway is not None and addr is not None:
        if gateway.version != addr.version:
            errors.append(f"{name}: {gateway} is not of the same family as {addr}")
        elif gateway == addr:
            errors.append(f"{name}: {gateway} is the site address itself")
        # An IPv6 router is usually reached at its link-local address, which is on-link
        # by definition whatever the site prefix is.
        elif net is not None and not (gateway.version == 6 and gateway.is_link_local):
            if gateway not in net:
                errors.append(f"{name}: {gateway} is not inside the subnet {net}")
            else:
                _check_host_in_net(name, gateway, net, "a gateway", errors)
    return gateway


def check_network(f: RawFields, errors: list[str]) -> Network | None:
    """Check the network fields together; return them canonical if all are valid."""
    n = f.names
    addr, prefix = _check_address(f, errors)
    net = None
    if addr is not None and prefix is not None:
        net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
        _check_host_in_net(n["ip"], addr, net, "a host address", errors)
    gateway = _check_gateway(f, addr, net, errors)
    servers = _check_dns_servers(n["dns"], f.dns_servers, errors)
    search = _check_dns_search(n["search"], f.dns_search, errors)
    device = _check_device(n["dev"], f.device, errors) if f.device is not None else None
    if errors or addr is None or prefix is None:
        return None
    return Network(
        ip_address=str(addr),
        prefix_length=prefix,
        device=device,
        gateway=str(gateway) if gateway is not None else None,
        dns_servers=servers,
        dns_search=search,
    )
