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
      "dns_search": ["example.com"]      at most 32, lower case, no trailing dot
    }

Readers are strict: an unknown ``format``, another ``version``, a missing, unknown or
repeated key, a value that would not pass :func:`validate_dropts` (the checks are
:mod:`kvmguest.guest.payload_checks`) or that is not in the canonical form the agent writes,
JSON nested deeper than :data:`MAX_JSON_DEPTH` or a file larger than
:data:`MAX_PAYLOAD_BYTES` is a :class:`PayloadError`, and the guest then changes nothing. A
new field therefore means a new version.

Everything here is pure; the image itself is :mod:`kvmguest.guest.iso`'s (``build_iso``,
``read_iso``), which imports this module, never the other way round.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kvmguest.guest.payload_checks import (
    Network,
    RawFields,
    check_generated,
    check_network,
    check_site,
    is_unset,
    netmask_of,
)

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
#: The payload nests two levels (the object, its lists); deeper JSON is refused unparsed.
MAX_JSON_DEPTH = 4

DROPTS_KEYS = (
    "ConfigureNetwork",
    "IPAddress",
    "Netmask",
    "Gateway",
    "DNSServers",
    "DNSSearchPath",
    "Device",
)

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
        return netmask_of(self.ip_address, self.prefix_length)

    @property
    def cidr(self) -> str:
        """The address with its prefix length, e.g. ``192.0.2.10/24``."""
        return f"{self.ip_address}/{self.prefix_length}"


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


def _dropts_payload(opts: Mapping[str, str], errors: list[str]) -> Network | None:
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

    return check_network(
        RawFields(
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


def _payload_of(net: Network, site: str | None, generated: str) -> DrPayload:
    # Network's fields are DrPayload's network fields, by name.
    return DrPayload(**dataclasses.asdict(net), site=site, generated=generated)


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
        check_site("site", site, errors)
    if errors:
        raise PayloadError("; ".join(errors))
    if payload is None:
        raise PayloadError("DROpts.ConfigureNetwork is not 1: no network to configure")
    stamp = generated if generated is not None else utc_now_iso()
    check_generated("generated", stamp, errors)
    if errors:
        raise PayloadError("; ".join(errors))
    return _payload_of(payload, site, stamp)


# --------------------------------------------------------------------------- JSON


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
    _typed(obj, "netmask", str, True, errors)  # its value: _check_canonical
    gateway = _typed(obj, "gateway", str, True, errors)
    servers = _str_list(obj, "dns_servers", errors)
    search = _str_list(obj, "dns_search", errors)
    if site is not None:
        check_site("site", site, errors)
    if generated is not None:
        check_generated("generated", generated, errors)
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
        checked = check_network(
            RawFields(names, ip, str(prefix), gateway, servers, search, device), errors
        )
    if checked is not None:
        _check_canonical(obj, checked, errors)
    if errors or checked is None:
        raise PayloadError("corrupt payload: " + "; ".join(errors))
    return _payload_of(checked, site, generated)


def _check_canonical(obj: Mapping[str, Any], net: Network, errors: list[str]) -> None:
    """The agent writes every value in canonical form: another spelling is not its payload.

    The checks accept some latitude (an upper-case domain, a trailing dot) that DROpts
    needs; a payload has none, so the guest writes exactly the values it checked.
    """
    expected = {
        "ip_address": net.ip_address,
        "netmask": netmask_of(net.ip_address, net.prefix_length),
        "gateway": net.gateway,
        "dns_servers": list(net.dns_servers),
        "dns_search": list(net.dns_search),
    }
    for key, value in expected.items():
        if obj.get(key) != value:
            if key == "netmask":
                prefix = obj.get("prefix_length")
                errors.append(f"netmask: {obj.get(key)!r} does not match prefix_length {prefix}")
            else:
                errors.append(f"{key}: not in canonical form (expected {value!r})")


def _nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in a JSON text (brackets in strings not counted).

    json.loads recurses once a level: a 64 KiB text of ``[`` is a RecursionError, which
    is no ValueError and would escape as an unexpected error.
    """
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # With duplicate keys, json keeps the last one; another reader may keep the first.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise PayloadError(f"corrupt payload: key {key[:40]!r} appears twice")
        obj[key] = value
    return obj


def from_json(data: str | bytes) -> DrPayload:
    """Parse and check a payload file's content; any problem raises :class:`PayloadError`."""
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"corrupt payload: {size} bytes, more than {MAX_PAYLOAD_BYTES}")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(f"corrupt payload: not UTF-8 ({exc})") from None
    if _nesting_depth(data) > MAX_JSON_DEPTH:
        raise PayloadError(f"corrupt payload: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        obj = json.loads(data, object_pairs_hook=_unique_keys)
    except RecursionError:
        # Not reachable past the depth check; kept so no parser recursion ever means exit 1.
        raise PayloadError("corrupt payload: JSON nested too deeply") from None
    except PayloadError:
        raise
    except ValueError as exc:  # JSONDecodeError, and ints of more than 4300 digits
        raise PayloadError(f"corrupt payload: not JSON ({exc})") from None
    return from_dict(obj)
