"""Pure decisions: network changes, file changes, the state file, resolved."""

from __future__ import annotations

import pytest

from kvmguest.guest.payload import DrPayload
from kvmguest.guest.plan import (
    AddressAdd,
    AddressDel,
    AppliedState,
    CurrentFile,
    DesiredFile,
    FileRemove,
    FileSymlink,
    FileWrite,
    IfAddress,
    Link,
    LinkUp,
    NetSnapshot,
    Original,
    Route,
    RouteDel,
    RouteReplace,
    merged_files,
    pick_device,
    plan_files,
    plan_network,
    state_from_json,
    state_to_json,
)
from kvmguest.guest.resolver import (
    LinkDns,
    ResolvedCtl,
    ResolvedRevert,
    ResolvedSet,
    plan_resolved,
)

SITE_A = DrPayload("198.51.100.10", 24, "eth0", "198.51.100.1", ("198.51.100.53",), ("a.example",))
SITE_B = DrPayload("203.0.113.10", 24, "eth0", "203.0.113.1", ("203.0.113.53",), ("b.example",))
LO = Link("lo", 1, True, loopback=True)


def applied(payload: DrPayload, device: str = "eth0", **kw: object) -> AppliedState:
    fields: dict[str, object] = {
        "device": device,
        "ip_address": payload.ip_address,
        "prefix_length": payload.prefix_length,
        "gateway": payload.gateway,
        "dns_servers": payload.dns_servers,
        "dns_search": payload.dns_search,
        "backend": "networkd",
        "resolver": "file",
    }
    fields.update(kw)
    return AppliedState(**fields)  # type: ignore[arg-type]


def eth(name: str = "eth0", *addrs: IfAddress, up: bool = True, physical: bool = True) -> Link:
    return Link(name, 2, up, physical=physical, addresses=addrs)


def test_pick_device_prefers_the_named_one() -> None:
    snap = NetSnapshot((LO, eth("eth0"), eth("eth1")))
    assert pick_device("eth1", snap) == "eth1"
    assert pick_device("eth9", snap) is None


def test_pick_device_first_nic_by_name_physical_first() -> None:
    snap = NetSnapshot(
        (eth("docker0", physical=False), eth("eth1"), eth("eth0"), LO, eth("br0", physical=False))
    )
    assert pick_device(None, snap) == "eth0"
    virtual_only = NetSnapshot((LO, eth("veth9", physical=False), eth("veth1", physical=False)))
    assert pick_device(None, virtual_only) == "veth1"
    assert pick_device(None, NetSnapshot((LO,))) is None


def test_fresh_nic_gets_address_up_and_route() -> None:
    snap = NetSnapshot((LO, eth(up=False)))
    assert plan_network(SITE_A, "eth0", snap, None) == [
        AddressAdd("eth0", "198.51.100.10", 24),
        LinkUp("eth0"),
        RouteReplace(4, "198.51.100.1", "eth0", 0),
    ]


def test_configured_nic_needs_nothing() -> None:
    snap = NetSnapshot(
        (LO, eth("eth0", IfAddress("198.51.100.10", 24))),
        (Route(4, "198.51.100.1", "eth0", 0, "static"),),
    )
    assert plan_network(SITE_A, "eth0", snap, applied(SITE_A)) == []


def test_second_site_on_same_device_removes_the_first() -> None:
    snap = NetSnapshot(
        (LO, eth("eth0", IfAddress("198.51.100.10", 24))),
        (Route(4, "198.51.100.1", "eth0", 0, "static"),),
    )
    assert plan_network(SITE_B, "eth0", snap, applied(SITE_A)) == [
        AddressDel("eth0", "198.51.100.10", 24),
        AddressAdd("eth0", "203.0.113.10", 24),
        RouteDel(4, "198.51.100.1", "eth0", 0),
        RouteReplace(4, "203.0.113.1", "eth0", 0),
    ]


def test_second_site_on_another_device_removes_the_first_there() -> None:
    snap = NetSnapshot(
        (LO, eth("eth0", IfAddress("198.51.100.10", 24)), eth("eth1")),
        (Route(4, "198.51.100.1", "eth0", 0, "static"),),
    )
    site_b = DrPayload("203.0.113.10", 24, "eth1", "203.0.113.1")
    assert plan_network(site_b, "eth1", snap, applied(SITE_A)) == [
        AddressDel("eth0", "198.51.100.10", 24),
        AddressAdd("eth1", "203.0.113.10", 24),
        RouteDel(4, "198.51.100.1", "eth0", 0),
        RouteReplace(4, "203.0.113.1", "eth1", 0),
    ]


def test_dedicated_device_loses_other_static_addresses_of_the_family_only() -> None:
    snap = NetSnapshot(
        (
            LO,
            eth(
                "eth0",
                IfAddress("192.0.2.77", 24),  # static, foreign: the device is dedicated
                IfAddress("192.0.2.99", 24, permanent=False),  # DHCP lease: dhclient's
                IfAddress("2001:db8::5", 64),  # the other family
            ),
        ),
        (
            Route(4, "192.0.2.1", "eth0", 100, "dhcp"),
            Route(6, "fe80::1", "eth0", 1024, "ra"),
            Route(4, "192.0.2.254", "eth0", 5, "static"),
            Route(4, "10.9.9.9", "eth1", 50, "static"),  # another NIC's
        ),
    )
    assert plan_network(SITE_A, "eth0", snap, None) == [
        AddressDel("eth0", "192.0.2.77", 24),
        AddressAdd("eth0", "198.51.100.10", 24),
        RouteDel(4, "192.0.2.254", "eth0", 5),
        RouteReplace(4, "198.51.100.1", "eth0", 0),
    ]


def test_previous_address_of_other_family_goes_too() -> None:
    v6 = DrPayload("2001:db8::10", 64, "eth0", "fe80::1")
    snap = NetSnapshot(
        (LO, eth("eth0", IfAddress("198.51.100.10", 24))),
        (Route(4, "198.51.100.1", "eth0", 0, "static"),),
    )
    assert plan_network(v6, "eth0", snap, applied(SITE_A)) == [
        AddressDel("eth0", "198.51.100.10", 24),
        AddressAdd("eth0", "2001:db8::10", 64),
        RouteDel(4, "198.51.100.1", "eth0", 0),
        RouteReplace(6, "fe80::1", "eth0", 1024),
    ]


def test_payload_without_gateway_removes_our_previous_route() -> None:
    no_gw = DrPayload("198.51.100.10", 24, "eth0")
    snap = NetSnapshot(
        (LO, eth("eth0", IfAddress("198.51.100.10", 24))),
        (Route(4, "198.51.100.1", "eth0", 0, "static"),),
    )
    assert plan_network(no_gw, "eth0", snap, applied(SITE_A)) == [
        RouteDel(4, "198.51.100.1", "eth0", 0)
    ]


def test_same_address_other_prefix_is_replaced() -> None:
    snap = NetSnapshot((LO, eth("eth0", IfAddress("198.51.100.10", 16))))
    no_gw = DrPayload("198.51.100.10", 24, "eth0")
    assert plan_network(no_gw, "eth0", snap, None) == [
        AddressDel("eth0", "198.51.100.10", 16),
        AddressAdd("eth0", "198.51.100.10", 24),
    ]


def test_unknown_device_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="eth7"):
        plan_network(SITE_A, "eth7", NetSnapshot((LO,)), None)


# --------------------------------------------------------------------------- files


def test_new_files_are_written_and_their_absence_recorded() -> None:
    actions, managed = plan_files(
        {"/etc/a": DesiredFile("A\n")}, {}, {"/etc/a": CurrentFile("absent")}
    )
    assert actions == [FileWrite("/etc/a", "A\n", 0o644)]
    assert managed == {"/etc/a": Original("absent")}


def test_replaced_file_keeps_its_original_across_runs() -> None:
    desired = {"/etc/ifcfg": DesiredFile("NEW\n")}
    actions, managed = plan_files(desired, {}, {"/etc/ifcfg": CurrentFile("file", "OLD\n", 0o640)})
    assert actions == [FileWrite("/etc/ifcfg", "NEW\n", 0o644)]
    assert managed == {"/etc/ifcfg": Original("file", "OLD\n", 0o640)}
    # Next run: already in place, and the original is still the guest's, not ours.
    actions, again = plan_files(desired, managed, {"/etc/ifcfg": CurrentFile("file", "NEW\n")})
    assert actions == []
    assert again == managed


def test_mode_difference_is_a_change() -> None:
    actions, _ = plan_files(
        {"/k": DesiredFile("x", 0o600)}, {}, {"/k": CurrentFile("file", "x", 0o644)}
    )
    assert actions == [FileWrite("/k", "x", 0o600)]


def test_files_no_longer_wanted_get_their_original_back() -> None:
    managed = {
        "/new": Original("absent"),
        "/edited": Original("file", "orig\n", 0o600),
        "/link": Original("symlink", "../run/resolv.conf"),
        "/gone-already": Original("absent"),
    }
    current = {
        "/new": CurrentFile("file", "ours"),
        "/edited": CurrentFile("file", "ours"),
        "/link": CurrentFile("file", "ours"),
        "/gone-already": CurrentFile("absent"),
    }
    actions, now = plan_files({}, managed, current)
    assert actions == [
        FileWrite("/edited", "orig\n", 0o600, reason="restore"),
        FileSymlink("/link", "../run/resolv.conf"),
        FileRemove("/new"),
    ]
    assert now == {}


def test_merged_files_keeps_the_first_original() -> None:
    assert merged_files(
        {"/a": Original("absent")}, {"/a": Original("file", "x"), "/b": Original("absent")}
    ) == {
        "/a": Original("absent"),
        "/b": Original("absent"),
    }


def test_state_round_trip_and_determinism() -> None:
    state = applied(SITE_B, site="siteB", files={"/etc/x": Original("file", "é\n", 0o600)})
    text = state_to_json(state)
    assert state_from_json(text) == state
    assert state_to_json(state_from_json(text)) == text


@pytest.mark.parametrize(
    "text",
    ["{}", '{"version": 2}', "[]", '{"version": 1, "files": {"rel": {}}}', "not json"],
)
def test_corrupt_state_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        state_from_json(text)


# --------------------------------------------------------------------------- resolved


def test_resolved_set_when_different_and_nothing_when_same() -> None:
    want = LinkDns(SITE_B.dns_servers, SITE_B.dns_search)
    assert plan_resolved(SITE_B, "eth0", None, LinkDns()) == [
        ResolvedSet("eth0", ("203.0.113.53",), ("b.example",))
    ]
    assert plan_resolved(SITE_B, "eth0", None, want) == []


def test_resolved_revert_previous_device_and_dns_no_longer_wanted() -> None:
    prev = applied(SITE_A, device="eth1", resolver="resolved")
    assert plan_resolved(SITE_B, "eth0", prev, LinkDns()) == [
        ResolvedRevert("eth1"),
        ResolvedSet("eth0", ("203.0.113.53",), ("b.example",)),
    ]
    no_dns = DrPayload("203.0.113.10", 24, "eth0")
    prev_here = applied(SITE_A, resolver="resolved")
    current = LinkDns(("198.51.100.53",), ())
    assert plan_resolved(no_dns, "eth0", prev_here, current) == [ResolvedRevert("eth0")]
    assert plan_resolved(no_dns, "eth0", None, current) == []


def test_resolvectl_commands() -> None:
    calls: list[list[str]] = []
    outputs = {"dns": "Link 2 (eth0): 203.0.113.53 2001:db8::53", "domain": "Link 2 (eth0):"}

    def runner(argv: object) -> tuple[int, str]:
        args = list(argv)  # type: ignore[call-overload]
        calls.append(args)
        return 0, outputs.get(args[1], "") if len(args) == 3 else ""

    ctl = ResolvedCtl(runner, resolvectl="resolvectl")
    assert ctl.current("eth0") == LinkDns(("203.0.113.53", "2001:db8::53"), ())
    ctl.apply(ResolvedSet("eth0", ("203.0.113.53",), ()))
    ctl.apply(ResolvedRevert("eth1"))
    assert calls[2:] == [
        ["resolvectl", "dns", "eth0", "203.0.113.53"],
        ["resolvectl", "domain", "eth0", ""],
        ["resolvectl", "revert", "eth1"],
    ]


def test_resolvectl_failure_is_an_os_error() -> None:
    ctl = ResolvedCtl(lambda argv: (1, "Failed to resolve interface"), resolvectl="resolvectl")
    with pytest.raises(OSError, match="Failed to resolve interface"):
        ctl.current("eth0")
