"""DROpts validation and the JSON payload format (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmguest.guest.payload import (
    DROPTS_KEYS,
    FORMAT_VERSION,
    DrPayload,
    PayloadError,
    UnsupportedVersionError,
    configure_network_enabled,
    from_json,
    payload_from_dropts,
    to_dict,
    to_json,
    validate_dropts,
)

GOOD = {
    "ConfigureNetwork": "1",
    "IPAddress": "198.51.100.10",
    "Netmask": "255.255.255.0",
    "Gateway": "198.51.100.1",
    "DNSServers": "198.51.100.53 203.0.113.53",
    "DNSSearchPath": "site-b.example example.com",
    "Device": "eth0",
}


def opts(**changes: str) -> dict[str, str]:
    out = dict(GOOD)
    out.update(changes)
    return out


def test_the_seeds_keys_are_the_known_keys() -> None:
    assert set(DROPTS_KEYS) == set(GOOD)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"Netmask": "24"},
        {"Netmask": "/24"},
        {"IPAddress": "198.51.100.10/24", "Netmask": "NONE"},
        {"IPAddress": "198.51.100.10/24", "Netmask": "255.255.255.0"},
        {"Gateway": "NONE", "DNSServers": "", "DNSSearchPath": "none", "Device": "NONE"},
        {"IPAddress": "198.51.100.10", "Netmask": "255.255.255.254", "Gateway": "198.51.100.11"},
        {"IPAddress": "2001:db8::10", "Netmask": "64", "Gateway": "2001:db8::1"},
        {"IPAddress": "2001:db8::10", "Netmask": "64", "Gateway": "fe80::1"},
        {"DNSServers": "2001:db8::53 198.51.100.53"},
        {"DNSSearchPath": "corp example.com."},
        {"Device": "enp1s0"},
        {"Device": "eth0.100"},
    ],
)
def test_valid_dropts(changes: dict[str, str]) -> None:
    assert validate_dropts(opts(**changes)) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"IPAddress": "NONE"}, "DROpts.IPAddress: required when ConfigureNetwork=1"),
        ({"IPAddress": "198.51.100.300"}, "DROpts.IPAddress: '198.51.100.300' is not an IPv4"),
        ({"IPAddress": "127.0.0.5", "Gateway": "NONE"}, "is a loopback address"),
        ({"IPAddress": "224.0.0.5", "Gateway": "NONE"}, "is a multicast address"),
        ({"IPAddress": "0.0.0.0", "Gateway": "NONE"}, "is the unspecified address"),
        ({"IPAddress": "169.254.1.1", "Gateway": "NONE"}, "is link-local"),
        ({"IPAddress": "fe80::1%eth0", "Netmask": "64"}, "has a zone index"),
        ({"IPAddress": "198.51.100.0"}, "DROpts.IPAddress: 198.51.100.0 is the network address"),
        ({"IPAddress": "198.51.100.255"}, "is the broadcast address of 198.51.100.0/24"),
        ({"Netmask": "NONE"}, "DROpts.Netmask: required when ConfigureNetwork=1"),
        ({"Netmask": "255.0.255.0"}, "DROpts.Netmask: '255.0.255.0' is not a contiguous netmask"),
        ({"Netmask": "0.0.0.255"}, "is not a contiguous netmask"),
        ({"Netmask": "33"}, "DROpts.Netmask: prefix length 33 is out of range 1..32"),
        ({"Netmask": "0"}, "prefix length 0 is out of range"),
        ({"Netmask": "abc"}, "DROpts.Netmask: 'abc' is not a dotted netmask or a prefix"),
        (
            {"IPAddress": "2001:db8::10", "Netmask": "255.255.255.0", "Gateway": "NONE"},
            "DROpts.Netmask: an IPv6 address takes a prefix length",
        ),
        ({"IPAddress": "198.51.100.10/25"}, "contradicts the prefix length /25"),
        ({"Gateway": "203.0.113.1"}, "DROpts.Gateway: 203.0.113.1 is not inside the subnet"),
        ({"Gateway": "198.51.100.10"}, "DROpts.Gateway: 198.51.100.10 is the site address"),
        ({"Gateway": "198.51.100.255"}, "DROpts.Gateway: 198.51.100.255 is the broadcast"),
        ({"Gateway": "2001:db8::1"}, "DROpts.Gateway: 2001:db8::1 is not of the same family"),
        ({"Gateway": "gw.example"}, "DROpts.Gateway: 'gw.example' is not an IPv4"),
        (
            {"DNSServers": "198.51.100.53,203.0.113.53"},
            "DROpts.DNSServers: '198.51.100.53,203.0.113.53' is not an IPv4 or IPv6 address "
            "(separate entries with spaces)",
        ),
        ({"DNSServers": "198.51.100.53 198.51.100.53"}, "198.51.100.53 is listed twice"),
        ({"DNSServers": "0.0.0.0"}, "DROpts.DNSServers: 0.0.0.0 cannot be a DNS server"),
        (
            {"DNSServers": "192.0.2.1 192.0.2.2 192.0.2.3 192.0.2.4"},
            "DROpts.DNSServers: 4 servers given, at most 3",
        ),
        ({"DNSSearchPath": "bad_domain.example"}, "DROpts.DNSSearchPath: 'bad_domain.example'"),
        ({"DNSSearchPath": "-a.example"}, "is not a valid domain name"),
        ({"DNSSearchPath": "a..example"}, "is not a valid domain name"),
        ({"DNSSearchPath": "a.example,b.example"}, "(separate entries with spaces)"),
        ({"DNSSearchPath": "x" * 64 + ".example"}, "is not a valid domain name"),
        ({"DNSSearchPath": "a.example A.example"}, "'A.example' is listed twice"),
        ({"Device": "eth 0"}, "DROpts.Device: 'eth 0' is not a valid interface name"),
        ({"Device": "../etc/passwd"}, "is not a valid interface name"),
        ({"Device": "averyveryverylongname"}, "is not a valid interface name"),
        ({"Device": "lo"}, "DROpts.Device: the loopback interface cannot carry"),
        ({"ConfigureNetwork": "yes"}, "DROpts.ConfigureNetwork: must be 0 or 1, not 'yes'"),
        ({"ConfigureNetwok": "1"}, "DROpts: unknown key 'ConfigureNetwok'"),
    ],
)
def test_invalid_dropts_name_the_key(changes: dict[str, str], message: str) -> None:
    errors = validate_dropts(opts(**changes))
    assert any(message in e for e in errors), errors


def test_every_problem_is_reported_at_once() -> None:
    errors = validate_dropts(
        opts(IPAddress="300.1.1.1", DNSServers="x", DNSSearchPath="_", Device="a b")
    )
    assert [e.split(":")[0] for e in errors] == [
        "DROpts.IPAddress",
        "DROpts.DNSServers",
        "DROpts.DNSSearchPath",
        "DROpts.Device",
    ]


@pytest.mark.parametrize("flag", ["0", "NONE", "", " 0 "])
def test_network_keys_are_not_checked_unless_configure_network_is_1(flag: str) -> None:
    bad = opts(ConfigureNetwork=flag, IPAddress="garbage", Netmask="99")
    assert validate_dropts(bad) == []
    assert not configure_network_enabled(bad)


def test_default_dropts_of_the_type_are_valid() -> None:
    defaults = dict.fromkeys(DROPTS_KEYS, "NONE") | {"ConfigureNetwork": "0"}
    assert validate_dropts(defaults) == []


def test_payload_from_dropts_is_canonical() -> None:
    payload = payload_from_dropts(
        opts(
            IPAddress="2001:DB8:0:0::10",
            Netmask="/64",
            Gateway="FE80::1",
            DNSServers="2001:db8:0::53",
            DNSSearchPath="Site-B.Example.",
            Device="NONE",
        ),
        "siteB",
        generated="2024-05-01T12:00:00Z",
    )
    assert payload == DrPayload(
        ip_address="2001:db8::10",
        prefix_length=64,
        device=None,
        gateway="fe80::1",
        dns_servers=("2001:db8::53",),
        dns_search=("site-b.example",),
        site="siteB",
        generated="2024-05-01T12:00:00Z",
    )
    assert payload.netmask is None
    assert payload.family == 6


def test_payload_from_dropts_refuses_invalid_and_disabled() -> None:
    with pytest.raises(PayloadError, match=r"DROpts\.Gateway"):
        payload_from_dropts(opts(Gateway="203.0.113.1"), "siteB")
    with pytest.raises(PayloadError, match="ConfigureNetwork is not 1"):
        payload_from_dropts(opts(ConfigureNetwork="0"), "siteB")
    with pytest.raises(PayloadError, match="site"):
        payload_from_dropts(GOOD, "evil\n[Network]")


def test_generated_defaults_to_now_in_utc() -> None:
    payload = payload_from_dropts(GOOD, None)
    assert payload.generated.endswith("Z") and len(payload.generated) == 20


# --------------------------------------------------------------------------- JSON


def sample() -> DrPayload:
    return payload_from_dropts(GOOD, "siteB", generated="2024-05-01T12:00:00Z")


def test_json_document_is_the_documented_one() -> None:
    assert json.loads(to_json(sample())) == {
        "format": "kvmguest-dr",
        "version": 1,
        "site": "siteB",
        "generated": "2024-05-01T12:00:00Z",
        "device": "eth0",
        "ip_address": "198.51.100.10",
        "prefix_length": 24,
        "netmask": "255.255.255.0",
        "gateway": "198.51.100.1",
        "dns_servers": ["198.51.100.53", "203.0.113.53"],
        "dns_search": ["site-b.example", "example.com"],
    }


def test_json_round_trip() -> None:
    payload = sample()
    assert from_json(to_json(payload)) == payload
    assert from_json(to_json(payload).encode()) == payload


def _ipv4_hosts() -> st.SearchStrategy[tuple[str, int, str]]:
    """(address, prefix, gateway) with both in the same subnet, as a site would have."""

    def build(prefix: int, net: int, host: int, gw: int) -> tuple[str, int, str]:
        base = (198 << 24 | 51 << 16 | 100 << 8) & ~((1 << (32 - prefix)) - 1)
        size = 1 << (32 - prefix)
        addr, gate = base + 1 + host % (size - 2), base + 1 + gw % (size - 2)
        if addr == gate:
            gate = base + 1 + (gw + 1) % (size - 2)
        dotted = [".".join(str(v >> s & 255) for s in (24, 16, 8, 0)) for v in (addr, gate)]
        return dotted[0], prefix, dotted[1]

    return st.builds(
        build,
        st.integers(24, 30),
        st.just(0),
        st.integers(0, 10**6),
        st.integers(0, 10**6),
    )


@given(
    _ipv4_hosts(),
    st.lists(st.sampled_from(["a.example", "b.example", "corp", "x-y.example"]), unique=True),
    st.one_of(st.none(), st.text(min_size=1, max_size=255).filter(str.isprintable)),
)
def test_json_round_trip_any_valid_payload(
    host: tuple[str, int, str], search: list[str], site: str | None
) -> None:
    address, prefix, gateway = host
    dropts = opts(
        IPAddress=address, Netmask=str(prefix), Gateway=gateway, DNSSearchPath=" ".join(search)
    )
    payload = payload_from_dropts(dropts, site, generated="2024-05-01T12:00:00+00:00")
    assert from_json(to_json(payload)) == payload


def doc(**changes: Any) -> str:
    obj = to_dict(sample())
    for key, value in changes.items():
        if value is ...:
            del obj[key]
        else:
            obj[key] = value
    return json.dumps(obj)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not JSON"),
        ("{", "not JSON"),
        ("[]", "not an object"),
        (doc(format="other"), "not a kvmguest DR payload"),
        (doc(format=...), "not a kvmguest DR payload"),
        (doc(version="1"), "version is '1', not an integer"),
        (doc(version=True), "version is True"),
        (doc(version=...), "version is None"),
        (doc(gateway=...), "missing keys: gateway"),
        (doc(extra=1), "unknown keys for version 1: extra"),
        (doc(prefix_length="24"), "prefix_length: expected int"),
        (doc(prefix_length=True), "prefix_length: expected int"),
        (doc(dns_servers="198.51.100.53"), "dns_servers: expected a list"),
        (doc(ip_address=None), "ip_address: expected str"),
        (doc(netmask="255.255.0.0"), "netmask: '255.255.0.0' does not match prefix_length 24"),
        (doc(gateway="203.0.113.1"), "gateway: 203.0.113.1 is not inside the subnet"),
        (doc(device="x/y"), "device: 'x/y' is not a valid interface name"),
        (doc(generated="yesterday"), "generated: 'yesterday' is not an ISO 8601"),
        (doc(generated="2024-05-01T12:00:00"), "has no time zone"),
        (doc(site="a\nb"), "site: must be"),
        ('{"format": "kvmguest-dr", "version": 1, "a": ' + "1" * 70000 + "}", "more than"),
    ],
)
def test_from_json_is_strict(text: str, message: str) -> None:
    with pytest.raises(PayloadError) as info:
        from_json(text)
    assert message in str(info.value)
    assert not isinstance(info.value, UnsupportedVersionError)


def test_non_utf8_is_corrupt() -> None:
    with pytest.raises(PayloadError, match="not UTF-8"):
        from_json(b"\xff\xfe{}")


@pytest.mark.parametrize("version", [0, 2, FORMAT_VERSION + 100])
def test_other_versions_are_unsupported(version: int) -> None:
    with pytest.raises(UnsupportedVersionError, match=f"unsupported payload version {version}"):
        from_json(doc(version=version, new_field="from the future"))
