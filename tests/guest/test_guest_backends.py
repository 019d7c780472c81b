"""Persistent files of each backend, the resolver file, and backend detection (pure)."""

from __future__ import annotations

import configparser

import pytest

from kvmguest.guest.backends import (
    IFUPDOWN_MAIN,
    BackendFacts,
    detect_backend,
    edit_ifupdown_main,
    render_backend,
    render_resolv_conf,
)
from kvmguest.guest.payload import DrPayload

V4 = DrPayload(
    "198.51.100.10",
    24,
    "eth0",
    "198.51.100.1",
    ("198.51.100.53", "2001:db8::53"),
    ("b.example", "example.com"),
    site="siteB",
)
V6 = DrPayload("2001:db8::10", 64, "eth0", "fe80::1", ("2001:db8::53",), (), site="siteB")
HEADER = (
    "# Written by kvmguest-net-reconfig from the DR payload of site siteB.\n"
    "# Do not edit: it is rewritten at boot while the DR CD-ROM is attached.\n"
)


def test_networkd() -> None:
    files = render_backend("networkd", V4, "eth0")
    assert files.keys() == {"/etc/systemd/network/05-kvmguest-dr-eth0.network"}
    (file,) = files.values()
    assert file.mode == 0o644
    assert file.content == HEADER + (
        "\n[Match]\nName=eth0\n\n[Network]\nAddress=198.51.100.10/24\nGateway=198.51.100.1\n"
        "DNS=198.51.100.53\nDNS=2001:db8::53\nDomains=b.example example.com\n"
    )


def _keyfile(payload: DrPayload) -> configparser.ConfigParser:
    files = render_backend("networkmanager", payload, "eth0")
    path = "/etc/NetworkManager/system-connections/kvmguest-dr-eth0.nmconnection"
    assert files.keys() == {path}
    assert files[path].mode == 0o600  # NetworkManager ignores keyfiles others can read
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(files[path].content)
    return parser


def test_networkmanager_keyfile_ipv4() -> None:
    kf = _keyfile(V4)
    assert dict(kf["connection"]) == {
        "id": "kvmguest-dr-eth0",
        "uuid": kf["connection"]["uuid"],
        "type": "ethernet",
        "interface-name": "eth0",
        "autoconnect": "true",
        "autoconnect-priority": "100",
    }
    assert dict(kf["ipv4"]) == {
        "method": "manual",
        "address1": "198.51.100.10/24",
        "gateway": "198.51.100.1",
        "dns-search": "b.example;example.com;",
        "dns": "198.51.100.53;",
    }
    # The IPv6 server is only used if IPv6 is configured: by autoconf then.
    assert dict(kf["ipv6"]) == {"method": "auto", "dns": "2001:db8::53;"}


def test_networkmanager_keyfile_ipv6_and_stable_uuid() -> None:
    kf = _keyfile(V6)
    assert dict(kf["ipv4"]) == {"method": "disabled"}
    assert dict(kf["ipv6"]) == {
        "method": "manual",
        "address1": "2001:db8::10/64",
        "gateway": "fe80::1",
        "dns": "2001:db8::53;",
    }
    assert kf["connection"]["uuid"] == _keyfile(V4)["connection"]["uuid"]
    other = render_backend("networkmanager", V4, "eth1")
    assert kf["connection"]["uuid"] not in next(iter(other.values())).content


def test_ifcfg() -> None:
    files = render_backend("ifcfg", V4, "eth0")
    assert files["/etc/sysconfig/network-scripts/ifcfg-eth0"].content == HEADER + (
        "\nDEVICE=eth0\nTYPE=Ethernet\nONBOOT=yes\nBOOTPROTO=none\nIPADDR=198.51.100.10\n"
        "PREFIX=24\nGATEWAY=198.51.100.1\nDEFROUTE=yes\nDNS1=198.51.100.53\n"
        'DNS2=2001:db8::53\nDOMAIN="b.example example.com"\n'
    )
    v6 = render_backend("ifcfg", V6, "eth0")["/etc/sysconfig/network-scripts/ifcfg-eth0"]
    assert "IPV6ADDR=2001:db8::10/64\n" in v6.content
    assert "IPV6_DEFAULTGW=fe80::1%eth0\n" in v6.content
    assert "IPADDR=" not in v6.content


DEBIAN_MAIN = """\
# The loopback network interface
auto lo
iface lo inet loopback

source /etc/network/interfaces.d/*

# The primary network interface
allow-hotplug eth0
iface eth0 inet static
    address 192.0.2.5/24
    gateway 192.0.2.1
iface eth0 inet6 auto
"""


def test_ifupdown_with_debian_main_file() -> None:
    files = render_backend("ifupdown", V4, "eth0", DEBIAN_MAIN)
    assert files["/etc/network/interfaces.d/kvmguest-dr-eth0"].content == HEADER + (
        "\niface eth0 inet static\n    address 198.51.100.10\n    netmask 255.255.255.0\n"
        "    gateway 198.51.100.1\n    dns-nameservers 198.51.100.53 2001:db8::53\n"
        "    dns-search b.example example.com\n"
    )
    # Only the IPv4 stanza of eth0 is taken out; allow-hotplug still brings it up.
    assert files[IFUPDOWN_MAIN].content == DEBIAN_MAIN.replace(
        "iface eth0 inet static\n    address 192.0.2.5/24\n    gateway 192.0.2.1\n",
        "#kvmguest-dr# iface eth0 inet static\n#kvmguest-dr#     address 192.0.2.5/24\n"
        "#kvmguest-dr#     gateway 192.0.2.1\n",
    )


def test_ifupdown_main_without_source_line_gets_one_and_auto() -> None:
    main = "auto lo\niface lo inet loopback\n"
    files = render_backend("ifupdown", V6, "eth0.100", main)
    ours = files["/etc/network/interfaces.d/kvmguest-dr-eth0_100"].content
    assert "auto eth0.100\niface eth0.100 inet6 static\n" in ours
    assert "    netmask 64\n" in ours
    assert files[IFUPDOWN_MAIN].content == main + (
        "#kvmguest-dr# the DR site configuration of eth0.100:\n"
        "source /etc/network/interfaces.d/kvmguest-dr-eth0_100\n"
    )


def test_ifupdown_main_left_alone_when_it_needs_nothing() -> None:
    main = "auto lo\niface lo inet loopback\nsource-directory /etc/network/interfaces.d\n"
    assert IFUPDOWN_MAIN not in render_backend("ifupdown", V4, "eth0", main)


def test_ifupdown_edit_is_stable() -> None:
    once, auto = edit_ifupdown_main(DEBIAN_MAIN, "eth0", 4)
    assert auto
    assert edit_ifupdown_main(once, "eth0", 4)[0] == once
    assert edit_ifupdown_main("", "eth0", 4) == ("", False)


def test_none_backend_writes_nothing() -> None:
    assert render_backend("none", V4, "eth0") == {}
    with pytest.raises(ValueError, match="wicked"):
        render_backend("wicked", V4, "eth0")


def test_resolv_conf() -> None:
    resolv = render_resolv_conf(V4)
    assert resolv is not None
    assert resolv.content == HEADER + (
        "search b.example example.com\nnameserver 198.51.100.53\nnameserver 2001:db8::53\n"
    )
    assert render_resolv_conf(DrPayload("198.51.100.10", 24)) is None


@pytest.mark.parametrize(
    ("facts", "backend"),
    [
        (BackendFacts(), "none"),
        (BackendFacts(networkmanager=True, networkd=True, ifupdown=True), "networkmanager"),
        (BackendFacts(networkmanager=True, ifupdown=True, ifupdown_has_device=True), "ifupdown"),
        (BackendFacts(networkd=True, ifupdown=True, ifcfg=True), "networkd"),
        (BackendFacts(ifupdown=True, ifcfg=True), "ifupdown"),
        (BackendFacts(ifcfg=True), "ifcfg"),
    ],
)
def test_detect_backend(facts: BackendFacts, backend: str) -> None:
    assert detect_backend(facts) == backend
