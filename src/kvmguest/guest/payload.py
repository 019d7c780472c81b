"""The DR payload: the site network parameters the agent hands to a guest after a failover.

This module is the single definition of the format. The agent builds the payload from the
resource's ``DROpts`` attribute (:func:`validate_dropts`, :func:`payload_from_dropts`) and
writes it onto an ISO 9660 image (:func:`build_iso`); ``kvmguest-net-reconfig`` reads it back
inside the guest (:func:`read_iso`, :func:`from_json`). Writer and reader share this code, so
they cannot drift apart.

Format, version 1: a UTF-8 JSON object in the file :data:`PAYLOAD_FILENAME` at the root of a
CD-ROM whose volume label is :data:`VOLUME_LABEL`::

    {
      "format": "kvmguest-dr",          always this string
      "version": 1,                      integer; any change to the format bumps it
      "site": "siteB" | null,            the site that generated it (informational)
      "generated": "2024-05-01T12:00:00Z",
      "device": "eth0" | null,           null: the guest picks its first NIC
      "ip_address": "192.0.2.10",        canonical (compressed) form
      "prefix_length": 24,
      "netmask": "255.255.255.0" | null, IPv4 only, always consistent with prefix_length
      "gateway": "192.0.2.1" | null,
      "dns_servers": ["192.0.2.53"],     at most 3 (the resolver's limit)
      "dns_search": ["example.com"]
    }

Readers are strict: an unknown ``format``, another ``version``, a missing or unknown key, or
a value that would not pass :func:`validate_dropts` is a :class:`PayloadError`, and the guest
then changes nothing. A new field therefore means a new version.

Everything here is pure; the image itself is :mod:`kvmguest.guest.iso`'s (``build_iso``,
``read_iso``), which imports this module, never the other way round.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

FORMAT_NAME = "kvmguest-dr"
FORMAT_VERSION = 1
#: File name of the payload at the root of the CD-ROM (Rock Ridge / Joliet name).
PAYLOAD_FILENAME = "kvmguest-dr.json"
#: The plain ISO 9660 (8.3) name of the same file, for readers without Rock Ridge or Joliet.
PAYLOAD_ISO9660_NAME = "KVMGUEST.JSO"
#: Volume label of the CD-ROM; the guest service looks for a medium with this label.
VOLUME_LABEL = "KVMGUEST_DR"
#: Larger files are refused unread: a real payload is a few hundred bytes.
MAX_PAYLOAD_BYTES = 64 * 1024

DROPTS_KEYS = (
    "ConfigureNetwork",
    "IPAddress",
    "Netmask",
    "Gateway",
    "DNSServers",
    "DNSSearchPath",
    "Device",
)
#: glibc reads at most three ``nameserver`` lines (MAXNS); more would be silently ignored.
MAX_DNS_SERVERS = 3

_JSON_KEYS = (
    "format",
    "version",
    "site",
    "generated",
    "device",
    "ip_address",
    "prefix_length",
    "netmask",
    "gateway",
    "dns_servers",
    "dns_search",
)
# Interface names end up in file names (ifcfg-DEV) and config files: allow only what is safe
# there, which covers every name the kernel, udev and systemd generate.
_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_MAX_SITE_LEN = 255

if TYPE_CHECKING:
    IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
    IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class PayloadError(ValueError):
    """The payload is absent, corrupt or not acceptable; the guest must change nothing."""


class PayloadMissingError(PayloadError):
    """The medium or file holding the payload is not there."""


class UnsupportedVersionError(PayloadError):
    """The payload is a kvmguest DR payload of a version this code does not understand."""

    def __init__(self, version: object) -> None:
        super().__init__(
            f"unsupported payload version {version!r} (this reader understands version "
            f"{FORMAT_VERSION}); update kvmguest-net-reconfig in the guest"
        )
        self.version = version


@dataclass(frozen=True)
class DrPayload:
    """One site's network parameters, validated and in canonical form."""

    ip_address: str
    prefix_length: int
    device: str | None = None
    gateway: str | None = None
    dns_servers: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    site: str | None = None
    generated: str = "1970-01-01T00:00:00Z"

    @property
    def family(self) -> int:
        """4 or 6."""
        return ipaddress.ip_address(self.ip_address).version

    @property
    def netmask(self) -> str | None:
        """Dotted netmask for IPv4; None for IPv6, which only has prefix lengths."""
        if self.family != 4:
            return None
        return str(ipaddress.IPv4Network(f"0.0.0.0/{self.prefix_length}").netmask)

    @property
    def cidr(self) -> str:
        """The address with its prefix length, e.g. ``192.0.2.10/24``."""
        return f"{self.ip_address}/{self.prefix_length}"


# --------------------------------------------------------------------------- value checks
# Each checker takes the name to put in its messages, so that DROpts errors name the DROpts
# key and payload errors name the JSON key.


def is_unset(value: str | None) -> bool:
    """DROpts convention: ``NONE`` (the type's default) or an empty value mean "not set"."""
    return value is None or value.strip() == "" or value.strip().upper() == "NONE"


def _parse_ip(name: str, text: str, errors: list[str]) -> IPAddress | None:
    if "%" in text:
        errors.append(f"{name}: '{text}' has a zone index; give the address alone")
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        errors.append(f"{name}: '{text}' is not an IPv4 or IPv6 address")
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
    if value.isdigit():
        prefix = int(value)
        limit = 32 if family == 4 else 128
        if not 1 <= prefix <= limit:
            errors.append(f"{name}: prefix length {prefix} is out of range 1..{limit}")
            return None
        return prefix
    if "." in value:
        if family == 6:
            errors.append(f"{name}: an IPv6 address takes a prefix length (e.g. 64), not '{text}'")
            return None
        try:
            mask = int(ipaddress.IPv4Address(value))
        except ValueError:
            errors.append(f"{name}: '{text}' is not a dotted netmask or a prefix length")
            return None
        ones = bin(mask).count("1")
        # A netmask is a run of ones followed by zeros; anything else (0.0.0.255, 255.0.255.0)
        # is a typo that ipaddress would quietly accept as a host mask.
        if mask != ((1 << 32) - 1) ^ ((1 << (32 - ones)) - 1) or ones == 0:
            errors.append(f"{name}: '{text}' is not a contiguous netmask")
            return None
        return ones
    errors.append(f"{name}: '{text}' is not a dotted netmask or a prefix length")
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
    if not _DEVICE_RE.match(text):
        errors.append(
            f"{name}: '{text}' is not a valid interface name (1-15 letters, digits, "
            "'_', '.' or '-', starting with a letter or digit)"
        )
        return None
    if text == "lo":
        errors.append(f"{name}: the loopback interface cannot carry the site address")
        return None
    return text


def _check_dns_servers(name: str, items: Sequence[str], errors: list[str]) -> tuple[str, ...]:
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
    if len(servers) > MAX_DNS_SERVERS:
        errors.append(
            f"{name}: {len(servers)} servers given, at most {MAX_DNS_SERVERS} are used by "
            "the resolver"
        )
    return tuple(servers)


def is_domain_name(text: str) -> bool:
    """A DNS domain name as a search path entry: LDH labels, 253 characters at most."""
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    return all(_LABEL_RE.match(label) for label in name.split("."))


def _check_dns_search(name: str, items: Sequence[str], errors: list[str]) -> tuple[str, ...]:
    domains: list[str] = []
    for item in items:
        if not is_domain_name(item):
            hint = " (separate entries with spaces)" if "," in item or ";" in item else ""
            errors.append(f"{name}: '{item}' is not a valid domain name{hint}")
            continue
        domain = item.rstrip(".").lower()
        if domain in domains:
            errors.append(f"{name}: '{item}' is listed twice")
            continue
        domains.append(domain)
    return tuple(domains)


def _check_site(name: str, site: str, errors: list[str]) -> None:
    # The site name is copied into comments of generated config files: a newline there
    # would inject configuration.
    if not site or len(site) > _MAX_SITE_LEN or not site.isprintable():
        errors.append(f"{name}: must be 1-{_MAX_SITE_LEN} printable characters, not {site!r}")


@dataclass
class _Fields:
    """Raw field values, named for messages, checked together by :func:`_check_fields`."""

    names: Mapping[str, str]
    ip_address: str | None
    prefix: str | None
    gateway: str | None
    dns_servers: Sequence[str]
    dns_search: Sequence[str]
    device: str | None


def _check_fields(f: _Fields, errors: list[str]) -> DrPayload | None:
    """Check the network fields together; return the canonical payload if all are valid."""
    n = f.names
    addr: IPAddress | None = None
    prefix: int | None = None
    if f.ip_address is None:
        errors.append(f"{n['ip']}: required when ConfigureNetwork=1")
    else:
        text = f.ip_address.strip()
        inline_prefix: str | None = None
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
    net = None
    if addr is not None and prefix is not None:
        net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
        _check_host_in_net(n["ip"], addr, net, "a host address", errors)

    gateway: IPAddress | None = None
    if f.gateway is not None:
        gateway = _parse_ip(n["gw"], f.gateway.strip(), errors)
        if gateway is not None and _special_kind(gateway) is not None:
            errors.append(f"{n['gw']}: {gateway} is {_special_kind(gateway)}, not a gateway")
            gateway = None
        if gateway is not None and addr is not None:
            if gateway.version != addr.version:
                errors.append(f"{n['gw']}: {gateway} is not of the same family as {addr}")
            elif gateway == addr:
                errors.append(f"{n['gw']}: {gateway} is the site address itself")
            # An IPv6 router is usually reached at its link-local address, which is on-link
            # by definition whatever the site prefix is.
            elif net is not None and not (gateway.version == 6 and gateway.is_link_local):
                if gateway not in net:
                    errors.append(f"{n['gw']}: {gateway} is not inside the subnet {net}")
                else:
                    _check_host_in_net(n["gw"], gateway, net, "a gateway", errors)

    servers = _check_dns_servers(n["dns"], f.dns_servers, errors)
    search = _check_dns_search(n["search"], f.dns_search, errors)
    device = _check_device(n["dev"], f.device, errors) if f.device is not None else None
    if errors or addr is None or prefix is None:
        return None
    return DrPayload(
        ip_address=str(addr),
        prefix_length=prefix,
        device=device,
        gateway=str(gateway) if gateway is not None else None,
        dns_servers=servers,
        dns_search=search,
    )


# --------------------------------------------------------------------------- DROpts


def configure_network_enabled(opts: Mapping[str, str]) -> bool:
    """True when DROpts asks for the guest network to be configured (``ConfigureNetwork=1``)."""
    return (opts.get("ConfigureNetwork") or "").strip() == "1"


_DROPTS_NAMES = {
    "ip": "DROpts.IPAddress",
    "prefix": "DROpts.Netmask",
    "gw": "DROpts.Gateway",
    "dns": "DROpts.DNSServers",
    "search": "DROpts.DNSSearchPath",
    "dev": "DROpts.Device",
}


def _dropts_payload(opts: Mapping[str, str], errors: list[str]) -> DrPayload | None:
    unknown = sorted(set(opts) - set(DROPTS_KEYS))
    for key in unknown:
        # A misspelt key (ConfigureNetwok=1) would otherwise silently disable DR.
        errors.append(f"DROpts: unknown key '{key}' (known keys: {', '.join(DROPTS_KEYS)})")
    flag = opts.get("ConfigureNetwork")
    if is_unset(flag) or (flag or "").strip() == "0":
        return None
    if not configure_network_enabled(opts):
        errors.append(f"DROpts.ConfigureNetwork: must be 0 or 1, not '{flag}'")
        return None

    def get(key: str) -> str | None:
        value = opts.get(key)
        return None if is_unset(value) else (value or "").strip()

    return _check_fields(
        _Fields(
            names=_DROPTS_NAMES,
            ip_address=get("IPAddress"),
            prefix=get("Netmask"),
            gateway=get("Gateway"),
            dns_servers=(get("DNSServers") or "").split(),
            dns_search=(get("DNSSearchPath") or "").split(),
            device=get("Device"),
        ),
        errors,
    )


def validate_dropts(opts: Mapping[str, str]) -> list[str]:
    """Return one message per problem in a DROpts association (empty list: valid).

    The network keys are only checked when ``ConfigureNetwork=1``; unknown keys and a
    ConfigureNetwork other than 0/1 are always reported. With ConfigureNetwork=1, IPAddress
    and Netmask are required (Netmask may be dotted for IPv4, or a prefix length; IPAddress
    may also carry ``/prefix``); Gateway must lie inside the resulting subnet; DNSServers and
    DNSSearchPath are space-separated lists; Device, if set, is an interface name.
    """
    errors: list[str] = []
    _dropts_payload(opts, errors)
    return errors


def utc_now_iso() -> str:
    # timezone.utc, not datetime.UTC: the guest side also runs on Python < 3.11.
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: UP017


def payload_from_dropts(
    opts: Mapping[str, str], site: str | None, *, generated: str | None = None
) -> DrPayload:
    """Build the payload for ``site`` from a DROpts association.

    Raises :class:`PayloadError` with every validation message when DROpts is invalid, or
    when ConfigureNetwork is not 1 (there is nothing to deliver then).
    """
    errors: list[str] = []
    payload = _dropts_payload(opts, errors)
    if site is not None:
        _check_site("site", site, errors)
    if errors:
        raise PayloadError("; ".join(errors))
    if payload is None:
        raise PayloadError("DROpts.ConfigureNetwork is not 1: no network to configure")
    stamp = generated if generated is not None else utc_now_iso()
    _check_generated("generated", stamp, errors)
    if errors:
        raise PayloadError("; ".join(errors))
    return DrPayload(
        ip_address=payload.ip_address,
        prefix_length=payload.prefix_length,
        device=payload.device,
        gateway=payload.gateway,
        dns_servers=payload.dns_servers,
        dns_search=payload.dns_search,
        site=site,
        generated=stamp,
    )


# --------------------------------------------------------------------------- JSON


def _check_generated(name: str, text: str, errors: list[str]) -> None:
    try:
        # fromisoformat only accepts a trailing Z from Python 3.11 on.
        stamp = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        errors.append(f"{name}: '{text}' is not an ISO 8601 timestamp")
        return
    if stamp.tzinfo is None:
        errors.append(f"{name}: '{text}' has no time zone")


def to_dict(payload: DrPayload) -> dict[str, Any]:
    """The JSON object of ``payload``, keys in documented order."""
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "site": payload.site,
        "generated": payload.generated,
        "device": payload.device,
        "ip_address": payload.ip_address,
        "prefix_length": payload.prefix_length,
        "netmask": payload.netmask,
        "gateway": payload.gateway,
        "dns_servers": list(payload.dns_servers),
        "dns_search": list(payload.dns_search),
    }


def to_json(payload: DrPayload) -> str:
    """Serialize to the payload file's text (UTF-8 JSON, newline-terminated)."""
    return json.dumps(to_dict(payload), indent=2) + "\n"


def _typed(obj: Mapping[str, Any], key: str, kind: type, nullable: bool, errors: list[str]) -> Any:
    value = obj.get(key)
    if value is None and nullable:
        return None
    # bool is an int subclass: "prefix_length": true must not pass as 1.
    if not isinstance(value, kind) or isinstance(value, bool):
        errors.append(f"{key}: expected {kind.__name__}{' or null' if nullable else ''}")
        return None
    return value


def _str_list(obj: Mapping[str, Any], key: str, errors: list[str]) -> list[str]:
    value = obj.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.append(f"{key}: expected a list of strings")
        return []
    return value


def from_dict(obj: object) -> DrPayload:
    """Check a decoded JSON object strictly and return the payload."""
    if not isinstance(obj, dict):
        raise PayloadError("corrupt payload: the JSON document is not an object")
    if obj.get("format") != FORMAT_NAME:
        raise PayloadError(f"not a kvmguest DR payload: format is {obj.get('format')!r}")
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise PayloadError(f"corrupt payload: version is {version!r}, not an integer")
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(version)
    errors: list[str] = []
    missing = [k for k in _JSON_KEYS if k not in obj]
    unknown = sorted(set(obj) - set(_JSON_KEYS))
    if missing:
        errors.append(f"missing keys: {', '.join(missing)}")
    if unknown:
        errors.append(f"unknown keys for version {FORMAT_VERSION}: {', '.join(unknown)}")
    site = _typed(obj, "site", str, True, errors)
    generated = _typed(obj, "generated", str, False, errors)
    device = _typed(obj, "device", str, True, errors)
    ip = _typed(obj, "ip_address", str, False, errors)
    prefix = _typed(obj, "prefix_length", int, False, errors)
    netmask = _typed(obj, "netmask", str, True, errors)
    gateway = _typed(obj, "gateway", str, True, errors)
    servers = _str_list(obj, "dns_servers", errors)
    search = _str_list(obj, "dns_search", errors)
    if site is not None:
        _check_site("site", site, errors)
    if generated is not None:
        _check_generated("generated", generated, errors)
    names = {
        "ip": "ip_address",
        "prefix": "prefix_length",
        "gw": "gateway",
        "dns": "dns_servers",
        "search": "dns_search",
        "dev": "device",
    }
    checked = None
    if not errors:
        checked = _check_fields(
            _Fields(names, ip, str(prefix), gateway, servers, search, device), errors
        )
    if checked is not None and netmask != checked.netmask:
        errors.append(f"netmask: {netmask!r} does not match prefix_length {prefix}")
    if errors or checked is None:
        raise PayloadError("corrupt payload: " + "; ".join(errors))
    return DrPayload(
        ip_address=checked.ip_address,
        prefix_length=checked.prefix_length,
        device=checked.device,
        gateway=checked.gateway,
        dns_servers=checked.dns_servers,
        dns_search=checked.dns_search,
        site=site,
        generated=generated,
    )


def from_json(data: str | bytes) -> DrPayload:
    """Parse and check a payload file's content; any problem raises :class:`PayloadError`."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"corrupt payload: {len(data)} bytes, more than {MAX_PAYLOAD_BYTES}")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(f"corrupt payload: not UTF-8 ({exc})") from None
    try:
        obj = json.loads(data)
    except ValueError as exc:  # JSONDecodeError, and RecursionError-free for our size
        raise PayloadError(f"corrupt payload: not JSON ({exc})") from None
    return from_dict(obj)
