"""DR payload on a real guest: the busybox guest mounts the CD-ROM and prints the payload."""

from __future__ import annotations

import json

import pytest

from kvmguest.agents.kvmguest import entrypoints as ep

from .conftest import GuestFactory
from .guests import CDROM_DONE, console_offset, parse_cdrom, wait_for_console

pytestmark = pytest.mark.system

DROPTS = (
    'DROpts = { ConfigureNetwork = 1, IPAddress = "192.0.2.10", Netmask = "255.255.255.0",'
    ' Gateway = "192.0.2.1", DNSServers = "192.0.2.53", DNSSearchPath = "east.example",'
    " Device = eth0 }\n"
    'DROpts@host2 = { ConfigureNetwork = 1, IPAddress = "198.51.100.20", Netmask = 24,'
    ' Gateway = "198.51.100.1", DNSServers = "198.51.100.53", DNSSearchPath = "west.example" }'
)


def _payload_seen(serial: object, offset: int) -> dict[str, object]:
    text = wait_for_console(serial, CDROM_DONE, 120, offset=offset)  # type: ignore[arg-type]
    files = parse_cdrom(text)
    assert "kvmguest-dr.json" in files, files
    data: dict[str, object] = json.loads(files["kvmguest-dr.json"])
    return data


def test_dr_guest_gets_its_site_payload_and_the_other_site_replaces_it(
    make_guest: GuestFactory,
) -> None:
    g = make_guest(host2_site="west", extra=DROPTS)
    east = g.ctx(system="host1")
    mark = console_offset(g.serial)
    out = ep.online(east)
    assert out.ok, out.message
    seen = _payload_seen(g.serial, mark)
    assert (seen["ip_address"], seen["prefix_length"], seen["gateway"]) == (
        "192.0.2.10",
        24,
        "192.0.2.1",
    )
    assert seen["site"] == "east" and seen["dns_search"] == ["east.example"]
    assert ep.clean(east, 4).ok
    # Failover to the other site (same libvirtd, acting as host2 of site west).
    west = g.ctx(system="host2")
    mark = console_offset(g.serial)
    assert ep.online(west).ok
    seen = _payload_seen(g.serial, mark)
    assert (seen["ip_address"], seen["site"]) == ("198.51.100.20", "west")
    assert "192.0.2.10" not in json.dumps(seen)
    assert sorted(p.name for p in (g.dir / "dr").iterdir()) == [f"{g.name}.iso"]
