"""kvmguest-net-reconfig end to end, in network namespaces standing in for the guest.

The netlink part runs inside the namespace (``ip netns exec``); the guest's files go to a
temporary root (``--root``). Both netlink implementations (pyroute2 and the ip command)
run every test that takes the ``netlink`` fixture.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from kvmguest.guest.netreconfig import ExitCode
from kvmguest.guest.payload import payload_from_dropts, to_dict, to_json

from .guest_testlib import SITE_A, SITE_B, GuestNet, NetlinkWatch, needs_netns, payload_iso

pytestmark = needs_netns

MakeIso = Callable[[str, dict[str, str]], Path]
NETWORKD_A = "/etc/systemd/network/05-kvmguest-dr-eth0.network"


def apply(guest: GuestNet, image: Path, *args: str) -> str:
    result = guest.reconfig("--source", str(image), *args)
    assert result.returncode == ExitCode.OK, result.stderr
    return result.stderr


def everything_text(guest: GuestNet) -> str:
    return "\n".join(content for *_, content in guest.files().values())


def test_apply_a_site(guest: GuestNet, netlink: str, make_iso: MakeIso) -> None:
    guest.netlink = netlink
    log = apply(guest, make_iso("siteA", SITE_A), "--backend", "networkd")
    assert guest.addresses() == ["198.51.100.10/24"]
    assert guest.default_routes() == [("198.51.100.1", "eth0")]
    assert guest.link_up("eth0")
    assert (
        (guest.root / "etc/resolv.conf")
        .read_text()
        .endswith("search site-a.example\nnameserver 198.51.100.53\n")
    )
    assert "Address=198.51.100.10/24\n" in (guest.root / NETWORKD_A.lstrip("/")).read_text()
    # One log line per change.
    for line in (
        "address add 198.51.100.10/24 dev eth0",
        "route replace default via 198.51.100.1 dev eth0 metric 0 (IPv4)",
        f"file write {NETWORKD_A} (mode 0644)",
        "file write /etc/resolv.conf (mode 0644)",
    ):
        assert sum(line in entry for entry in log.splitlines()) == 1, log


def test_second_site_leaves_nothing_of_the_first(
    guest: GuestNet, netlink: str, make_iso: MakeIso
) -> None:
    guest.netlink = netlink
    apply(guest, make_iso("siteA", SITE_A), "--backend", "networkd")
    log = apply(guest, make_iso("siteB", SITE_B), "--backend", "networkd")
    assert "address del 198.51.100.10/24 dev eth0" in log
    assert guest.addresses() == ["203.0.113.20/24"]
    assert guest.default_routes() == [("203.0.113.1", "eth0")]
    assert (
        "nameserver 203.0.113.53\nnameserver 203.0.113.54\n"
        in (guest.root / "etc/resolv.conf").read_text()
    )
    text = everything_text(guest)
    assert "198.51.100" not in text and "site-a" not in text and "siteA" not in text


def test_second_site_on_another_nic(guest: GuestNet, netlink: str, make_iso: MakeIso) -> None:
    guest.netlink = netlink
    guest.add_nic("eth1")
    apply(guest, make_iso("siteA", SITE_A), "--backend", "networkd")
    apply(guest, make_iso("siteB", dict(SITE_B, Device="eth1")), "--backend", "networkd")
    assert guest.addresses("eth0") == []
    assert guest.addresses("eth1") == ["203.0.113.20/24"]
    assert guest.default_routes() == [("203.0.113.1", "eth1")]
    assert not (guest.root / NETWORKD_A.lstrip("/")).exists()
    assert (guest.root / "etc/systemd/network/05-kvmguest-dr-eth1.network").exists()
    text = everything_text(guest)
    assert "198.51.100" not in text and "site-a" not in text


def test_second_run_changes_nothing(guest: GuestNet, netlink: str, make_iso: MakeIso) -> None:
    guest.netlink = netlink
    image = make_iso("siteA", SITE_A)
    apply(guest, image, "--backend", "networkd")
    files = guest.files()
    watch = NetlinkWatch(guest.ns)
    try:
        watch.start()
        log = apply(guest, image, "--backend", "networkd")
        events = watch.stop()
    finally:
        watch.close()
    assert "nothing to change" in log
    assert events == []
    assert guest.files() == files


def test_the_monitor_would_see_a_change(guest: GuestNet, make_iso: MakeIso) -> None:
    """The idempotence check above can fail: a real change shows up between the markers."""
    apply(guest, make_iso("siteA", SITE_A), "--backend", "none")
    watch = NetlinkWatch(guest.ns)
    try:
        watch.start()
        apply(guest, make_iso("siteB", SITE_B), "--backend", "none")
        events = watch.stop()
    finally:
        watch.close()
    assert any("203.0.113.20" in e for e in events), events


def test_reapplies_what_was_undone_by_hand(guest: GuestNet, make_iso: MakeIso) -> None:
    image = make_iso("siteA", SITE_A)
    apply(guest, image, "--backend", "networkd")
    guest.ip("route", "del", "default")
    (guest.root / "etc/resolv.conf").write_text("nameserver 192.0.2.99\n")
    log = apply(guest, image, "--backend", "networkd")
    assert "route replace default via 198.51.100.1" in log
    assert "file write /etc/resolv.conf" in log
    assert "address add" not in log
    assert guest.default_routes() == [("198.51.100.1", "eth0")]


def test_dry_run_changes_nothing(guest: GuestNet, netlink: str, make_iso: MakeIso) -> None:
    guest.netlink = netlink
    before = guest.network_state()
    result = guest.reconfig("--source", str(make_iso("siteA", SITE_A)), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would: address add 198.51.100.10/24 dev eth0\n" in result.stdout
    assert "would: route replace default via 198.51.100.1 dev eth0" in result.stdout
    assert guest.network_state() == before
    assert guest.files() == {}
    # Over an applied site, too.
    apply(guest, make_iso("siteA", SITE_A), "--backend", "ifcfg")
    before, files = guest.network_state(), guest.files()
    image_b = make_iso("siteB", SITE_B)
    result = guest.reconfig("--source", str(image_b), "--dry-run", "--backend", "ifcfg")
    assert "would: address del 198.51.100.10/24 dev eth0\n" in result.stdout
    assert guest.network_state() == before
    assert guest.files() == files


def _bad_images(tmp_path: Path, make_iso: MakeIso) -> dict[str, tuple[list[str], int]]:
    def image(name: str, data: bytes) -> str:
        return str(payload_iso(tmp_path / f"{name}.iso", data))

    future = dict(to_dict(payload_from_dropts(SITE_B, "siteB")), version=2)
    invalid = dict(to_dict(payload_from_dropts(SITE_B, "siteB")), gateway="192.0.2.1")
    empty_dev = tmp_path / "emptydev"
    empty_dev.mkdir()
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"\0" * 65536)
    return {
        "corrupt json": (["--source", image("corrupt", b"{not json")], ExitCode.INVALID_PAYLOAD),
        "invalid values": (
            ["--source", image("invalid", json.dumps(invalid).encode())],
            ExitCode.INVALID_PAYLOAD,
        ),
        "not an iso": (["--source", str(junk)], ExitCode.INVALID_PAYLOAD),
        "future version": (
            ["--source", image("future", json.dumps(future).encode())],
            ExitCode.UNSUPPORTED_VERSION,
        ),
        "no such image": (["--source", str(tmp_path / "nope.iso")], ExitCode.NO_PAYLOAD),
        "no cdrom": (["--dev-dir", str(empty_dev)], ExitCode.NO_PAYLOAD),
        "missing device": (
            ["--source", str(make_iso("siteB", dict(SITE_B, Device="eth9")))],
            ExitCode.NO_DEVICE,
        ),
    }


def test_refused_payloads_change_nothing(
    guest: GuestNet, tmp_path: Path, make_iso: MakeIso
) -> None:
    apply(guest, make_iso("siteA", SITE_A), "--backend", "networkd")
    before, files = guest.network_state(), guest.files()
    for case, (args, code) in _bad_images(tmp_path, make_iso).items():
        result = guest.reconfig(*args, "--backend", "networkd")
        assert result.returncode == code, (case, result.stderr)
        assert "nothing changed" in result.stderr, (case, result.stderr)
        assert guest.network_state() == before, case
        assert guest.files() == files, case


def test_unsupported_version_says_why(guest: GuestNet, tmp_path: Path, make_iso: MakeIso) -> None:
    args, _ = _bad_images(tmp_path, make_iso)["future version"]
    result = guest.reconfig(*args)
    assert "unsupported payload version 2" in result.stderr


def test_found_by_label_among_cdroms(guest: GuestNet, tmp_path: Path, make_iso: MakeIso) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "sr0").write_bytes(b"")
    make_iso("siteA", SITE_A).rename(dev / "sr1")
    result = guest.reconfig("--dev-dir", str(dev), "--backend", "none")
    assert result.returncode == 0, result.stderr
    assert f"found the medium labelled KVMGUEST_DR at {dev / 'sr1'}" in result.stderr
    assert guest.addresses() == ["198.51.100.10/24"]


def test_first_nic_when_no_device_is_named(guest: GuestNet, make_iso: MakeIso) -> None:
    guest.add_nic("eth1")
    apply(guest, make_iso("siteA", dict(SITE_A, Device="NONE")), "--backend", "none")
    assert guest.addresses("eth0") == ["198.51.100.10/24"]
    assert guest.addresses("eth1") == []


def test_ipv6_site(guest: GuestNet, netlink: str, make_iso: MakeIso) -> None:
    guest.netlink = netlink
    site6 = dict(SITE_A, IPAddress="2001:db8:5::10", Netmask="64", Gateway="fe80::1")
    site6["DNSServers"] = "2001:db8:5::53"
    apply(guest, make_iso("site6", site6), "--backend", "networkd")
    assert guest.addresses() == ["2001:db8:5::10/64"]
    assert guest.default_routes() == [("fe80::1", "eth0")]
    apply(guest, make_iso("siteB", SITE_B), "--backend", "networkd")
    assert guest.addresses() == ["203.0.113.20/24"]
    assert guest.default_routes() == [("203.0.113.1", "eth0")]


# --------------------------------------------------------------------------- backends

IFCFG_ORIGINAL = "DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\n"
INTERFACES_ORIGINAL = (
    "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n\n"
    "allow-hotplug eth0\niface eth0 inet dhcp\n"
)


@pytest.mark.parametrize(
    ("backend", "path", "mode", "expected"),
    [
        ("networkd", NETWORKD_A, 0o644, ["Name=eth0", "Address=198.51.100.10/24"]),
        (
            "networkmanager",
            "/etc/NetworkManager/system-connections/kvmguest-dr-eth0.nmconnection",
            0o600,
            ["interface-name=eth0", "address1=198.51.100.10/24", "gateway=198.51.100.1"],
        ),
        (
            "ifupdown",
            "/etc/network/interfaces.d/kvmguest-dr-eth0",
            0o644,
            ["iface eth0 inet static", "    address 198.51.100.10", "    gateway 198.51.100.1"],
        ),
        (
            "ifcfg",
            "/etc/sysconfig/network-scripts/ifcfg-eth0",
            0o644,
            ["DEVICE=eth0", "IPADDR=198.51.100.10", "PREFIX=24", "GATEWAY=198.51.100.1"],
        ),
    ],
)
def test_backend_files(
    guest: GuestNet, make_iso: MakeIso, backend: str, path: str, mode: int, expected: list[str]
) -> None:
    (guest.root / "etc/sysconfig/network-scripts").mkdir(parents=True)
    (guest.root / "etc/sysconfig/network-scripts/ifcfg-eth0").write_text(IFCFG_ORIGINAL)
    (guest.root / "etc/network").mkdir(parents=True)
    (guest.root / "etc/network/interfaces").write_text(INTERFACES_ORIGINAL)
    apply(guest, make_iso("siteA", SITE_A), "--backend", backend)
    written = guest.root / path.lstrip("/")
    lines = written.read_text().splitlines()
    assert all(line in lines for line in expected), lines
    assert stat.S_IMODE(written.stat().st_mode) == mode
    main = (guest.root / "etc/network/interfaces").read_text()
    if backend == "ifupdown":
        assert "#kvmguest-dr# iface eth0 inet dhcp\n" in main
    else:
        assert main == INTERFACES_ORIGINAL
    # A later site on another NIC gives the guest its own files back.
    guest.add_nic("eth1")
    apply(guest, make_iso("siteB", dict(SITE_B, Device="eth1")), "--backend", backend)
    assert (guest.root / "etc/network/interfaces").read_text() == INTERFACES_ORIGINAL
    ifcfg = guest.root / "etc/sysconfig/network-scripts/ifcfg-eth0"
    assert ifcfg.read_text() == IFCFG_ORIGINAL
    assert not written.exists() or written == ifcfg
    assert "198.51.100" not in everything_text(guest)


def test_detected_backend(guest: GuestNet, make_iso: MakeIso) -> None:
    wants = guest.root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    os.symlink("/lib/systemd/system/systemd-networkd.service", wants / "systemd-networkd.service")
    apply(guest, make_iso("siteA", SITE_A))
    assert (guest.root / NETWORKD_A.lstrip("/")).exists()
    state = json.loads((guest.root / "var/lib/kvmguest-net-reconfig/applied.json").read_text())
    assert state["backend"] == "networkd"


def test_resolv_conf_symlink_comes_back(guest: GuestNet, make_iso: MakeIso) -> None:
    (guest.root / "etc").mkdir()
    os.symlink("../run/resolvconf/resolv.conf", guest.root / "etc/resolv.conf")
    apply(guest, make_iso("siteA", SITE_A), "--backend", "none", "--resolver", "file")
    assert not os.path.islink(guest.root / "etc/resolv.conf")
    no_dns = dict(SITE_B, DNSServers="NONE", DNSSearchPath="NONE")
    apply(guest, make_iso("siteB", no_dns), "--backend", "none")
    assert os.readlink(guest.root / "etc/resolv.conf") == "../run/resolvconf/resolv.conf"


def test_resolv_conf_symlink_is_left_to_its_owner(guest: GuestNet, make_iso: MakeIso) -> None:
    (guest.root / "etc").mkdir()
    os.symlink("../run/systemd/resolve/stub-resolv.conf", guest.root / "etc/resolv.conf")
    log = apply(guest, make_iso("siteA", SITE_A), "--backend", "networkd")
    assert "DNS is left to what manages it" in log
    assert os.readlink(guest.root / "etc/resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"
    assert "DNS=198.51.100.53" in (guest.root / NETWORKD_A.lstrip("/")).read_text()


def test_corrupt_state_file_is_ignored_with_a_warning(guest: GuestNet, make_iso: MakeIso) -> None:
    state = guest.root / "var/lib/kvmguest-net-reconfig/applied.json"
    state.parent.mkdir(parents=True)
    state.write_text("{garbage")
    log = apply(guest, make_iso("siteA", SITE_A), "--backend", "none")
    assert "ignoring the unreadable state file" in log
    assert json.loads(state.read_text())["ip_address"] == "198.51.100.10"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600


def test_payload_in_a_mounted_directory(guest: GuestNet, tmp_path: Path) -> None:
    medium = tmp_path / "medium"
    medium.mkdir()
    payload = payload_from_dropts(SITE_A, "siteA")
    (medium / "kvmguest-dr.json").write_text(to_json(payload))
    apply(guest, medium, "--backend", "none")
    assert guest.addresses() == ["198.51.100.10/24"]


def test_nothing_is_overwritten_unless_the_originals_can_be_recorded(
    guest: GuestNet, tmp_path: Path, make_iso: MakeIso
) -> None:
    (guest.root / "etc/sysconfig/network-scripts").mkdir(parents=True)
    (guest.root / "etc/sysconfig/network-scripts/ifcfg-eth0").write_text("BOOTPROTO=dhcp\n")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    before, files = guest.network_state(), guest.files()
    result = guest.reconfig(
        "--source",
        str(make_iso("siteA", SITE_A)),
        "--backend",
        "ifcfg",
        "--state-file",
        str(not_a_dir / "applied.json"),
    )
    assert result.returncode == ExitCode.APPLY_FAILED, result.stderr
    assert "cannot record the original files" in result.stderr
    assert guest.network_state() == before
    assert guest.files() == files


def test_found_on_an_unlabelled_cdrom_among_others(guest: GuestNet, tmp_path: Path) -> None:
    def disc(path: Path, label: str, content: bytes, keep: int | None = None) -> None:
        payload_iso(path, content, label)
        if keep is not None:
            path.write_bytes(path.read_bytes()[:keep])

    dev = tmp_path / "dev"
    dev.mkdir()
    payload = to_json(payload_from_dropts(SITE_A, "siteA")).encode()
    disc(dev / "sr0", "INSTALL", b"{}", keep=17 * 2048)  # a label, then nothing pycdlib reads
    disc(dev / "sr1", "config-2", payload)  # as if the payload's volume_id were not set
    result = guest.reconfig("--dev-dir", str(dev), "--backend", "none")
    assert result.returncode == 0, result.stderr
    assert f"found the payload on {dev / 'sr1'} (volume label is not KVMGUEST_DR)" in result.stderr
    assert guest.addresses() == ["198.51.100.10/24"]
