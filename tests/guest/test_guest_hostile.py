"""Hostile DR payloads inside the guest: each is refused, and the guest stays as it was.

One test per case of the issue: line breaks in fields, a malformed ISO, deeply nested JSON,
an oversized payload record (refused before it is read), a disc without our label (skipped)
and a hung command (timed out, the service goes on). What is asserted is what the guest's
owner sees: the exit code, the log line, the guest's files and network untouched.
"""

from __future__ import annotations

import json
import logging
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from kvmguest.guest import command, iso, netreconfig, source
from kvmguest.guest.command import TIMEOUT_ENV
from kvmguest.guest.iso import build_iso, read_iso
from kvmguest.guest.netlink import IpCommandOps
from kvmguest.guest.payload import (
    MAX_PAYLOAD_BYTES,
    PayloadError,
    PayloadMissingError,
    from_json,
    payload_from_dropts,
    to_dict,
    to_json,
    validate_dropts,
)
from kvmguest.guest.resolver import ResolvedCtl

from .guest_testlib import SITE_A, SITE_B, GuestNet, payload_iso

MakeIso = Callable[[str, dict[str, str]], Path]
BACKENDS = ["networkmanager", "networkd", "ifupdown", "ifcfg"]
_SECTOR = 2048


def _fake_command(bin_dir: Path, name: str, script: str) -> Path:
    """A stand-in for a host command (mount, blkid...) on PATH; never a fake of libvirt."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


def _hostile(tmp_path: Path, name: str, **fields: object) -> Path:
    """Site B's payload with ``fields`` changed, on a DR image as the agent would attach it."""
    doc = dict(to_dict(payload_from_dropts(SITE_B, "siteB")), **fields)
    return payload_iso(tmp_path / f"{name}.iso", json.dumps(doc).encode())


def _refused(guest: GuestNet, image: Path, *args: str) -> str:
    """Run the service on ``image`` over an applied site A; check that nothing changed."""
    before, files = guest.network_state(), guest.files()
    result = guest.reconfig("--source", str(image), *args)
    assert result.returncode == netreconfig.ExitCode.INVALID_PAYLOAD, result.stderr
    assert "payload refused, nothing changed" in result.stderr
    assert guest.network_state() == before
    assert guest.files() == files
    return result.stderr


def _site_a(guest: GuestNet, make_iso: MakeIso, backend: str = "networkd") -> None:
    result = guest.reconfig(
        "--source", str(make_iso("siteA", SITE_A)), "--backend", backend, "--resolver", "file"
    )
    assert result.returncode == 0, result.stderr


def _written(guest: GuestNet) -> str:
    return "\n".join(content for *_, content in guest.files().values())


# --------------------------------------------------------------------------- field checks


@pytest.mark.parametrize("backend", BACKENDS)
def test_newline_in_dns_search_writes_no_line(
    guest: GuestNet, make_iso: MakeIso, tmp_path: Path, backend: str
) -> None:
    _site_a(guest, make_iso, backend)
    image = _hostile(tmp_path, "search", dns_search=["evil\n.com"])
    log = _refused(guest, image, "--backend", backend, "--resolver", "file")
    assert "dns_search: 'evil\\n.com' is not a valid domain name" in log
    written = _written(guest)
    assert "evil" not in written
    assert ".com" not in written.splitlines()
    assert "search site-a.example" in (guest.root / "etc/resolv.conf").read_text()


@pytest.mark.parametrize("backend", BACKENDS)
def test_newline_in_device_writes_no_line(
    guest: GuestNet, make_iso: MakeIso, tmp_path: Path, backend: str
) -> None:
    _site_a(guest, make_iso, backend)
    image = _hostile(tmp_path, "device", device="eth0\nDNS=192.0.2.66")
    log = _refused(guest, image, "--backend", backend, "--resolver", "file")
    assert "device: 'eth0\\nDNS=192.0.2' is not a valid interface name" in log  # 16 shown
    assert "192.0.2.66" not in _written(guest)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prefix_length", "\u00b2\u2074"),  # superscript 24: str.isdigit() says yes
        ("ip_address", "\u0661\u0669\u0668.51.100.10"),  # Arabic-Indic digits
        ("ip_address", "203.0.113.20\n"),  # fine for re.match("...$")
        ("gateway", "203.0.113.001"),  # accepted by Python < 3.9.5 as 203.0.113.1
        ("dns_servers", ["203.0.113.53"] * 4),
        ("dns_search", [f"d{i}.example" for i in range(33)]),
        ("dns_search", ["a" * 64 + ".example"]),
        ("dns_search", ["a." * 127 + "example"]),
        ("device", "e" * 16),
        ("site", "s" * 256),
        ("generated", "\uff12\uff10\uff12\uff14-05-01T12:00:00Z"),
    ],
)
def test_non_ascii_digits_and_overlong_values_are_refused(field: str, value: object) -> None:
    doc = dict(to_dict(payload_from_dropts(SITE_B, "siteB")), **{field: value})
    with pytest.raises(PayloadError, match=field):
        from_json(json.dumps(doc))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Netmask", "\u00b2\u2074"),
        ("Netmask", "1_6"),
        ("IPAddress", "203.0.113.20/\u0662\u0664"),
        ("Device", "eth\n0"),  # an outer newline is trimmed like any blank
        ("DNSSearchPath", " ".join(f"d{i}.example" for i in range(33))),
    ],
)
def test_dropts_take_ascii_digits_and_bounded_values(key: str, value: str) -> None:
    errors = validate_dropts(dict(SITE_B, **{key: value}))
    assert any(e.startswith(f"DROpts.{key}") for e in errors), errors


# --------------------------------------------------------------------------- corrupt media


def _damaged(image: Path, damage: str) -> bytes:
    data = image.read_bytes()
    if damage == "truncated":
        return data[: 28 * _SECTOR + 1]  # one byte of the root directory left
    sector, offset, value = {
        # The type-L path table's location: pycdlib unpacks what it finds there.
        "path table": (16, 140, 0x00),
        # The root directory's records: a Rock Ridge entry, a name.
        "rock ridge": (28, 263, 0xFF),
        "name": (28, 270, 0xFF),
    }[damage]
    pos = sector * _SECTOR + offset
    return data[:pos] + bytes([value]) + data[pos + 1 :]


@pytest.mark.parametrize(
    ("damage", "raised"),
    [
        ("truncated", "error"),  # struct.error
        ("path table", "error"),
        ("rock ridge", "KeyError"),
        ("name", "ValueError"),
    ],
)
def test_malformed_iso_exits_4(
    guest: GuestNet,
    make_iso: MakeIso,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    damage: str,
    raised: str,
) -> None:
    _site_a(guest, make_iso)
    image = tmp_path / "damaged.iso"
    image.write_bytes(_damaged(make_iso("siteB", SITE_B), damage))
    # As a kernel without iso9660, or one that finds the image as broken, answers.
    bin_dir = tmp_path / "bin"
    _fake_command(bin_dir, "mount", 'echo "mount: wrong fs type, bad superblock" >&2; exit 32')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    log = _refused(guest, image, "--backend", "networkd")
    assert f"not a readable ISO 9660 image ({raised}:" in log


def test_deeply_nested_json_exits_4(guest: GuestNet, make_iso: MakeIso, tmp_path: Path) -> None:
    _site_a(guest, make_iso)
    depth = 30000  # within the size cap; json.loads recursed past Python's limit on it
    content = b'{"format": "kvmguest-dr", "version": 1, "site": ' + b"[" * depth + b"]" * depth
    image = payload_iso(tmp_path / "nested.iso", content + b"}")
    log = _refused(guest, image, "--backend", "networkd")
    assert "nested deeper than" in log


def _oversized_iso(tmp_path: Path, size: int) -> Path:
    """A DR image whose payload file claims ``size`` bytes, present (sparse) on the image."""
    image = build_iso_bytes(tmp_path)
    data = bytearray(image)
    # Both names of the file (ISO 9660 and Joliet) have a directory record: length both-endian
    # at bytes 10-17 of the record, 33 bytes before its name.
    names = [b"KVMGUEST.JSO;1", "kvmguest-dr.json".encode("utf-16-be")]
    for name in names:
        record = data.index(name) - 33
        data[record + 10 : record + 18] = size.to_bytes(4, "little") + size.to_bytes(4, "big")
    path = tmp_path / "oversized.iso"
    path.write_bytes(bytes(data))
    with open(path, "r+b") as fp:
        fp.truncate(31 * _SECTOR + size)  # sparse: no disk space, reads as zeros
    return path


def build_iso_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "valid.iso"
    build_iso(payload_from_dropts(SITE_B, "siteB"), path)
    return path.read_bytes()


def test_oversized_payload_is_refused_before_it_is_read(
    guest: GuestNet, make_iso: MakeIso, tmp_path: Path
) -> None:
    size = 300 * 1024 * 1024
    image = _oversized_iso(tmp_path, size)
    tracemalloc.start()
    try:
        with pytest.raises(PayloadError, match=f"{size} bytes, more than {MAX_PAYLOAD_BYTES}"):
            read_iso(image)
        # The same file on a mounted medium.
        medium = tmp_path / "medium"
        medium.mkdir()
        with open(medium / "kvmguest-dr.json", "wb") as fp:
            fp.truncate(size)
        with pytest.raises(PayloadError, match="not read"):
            iso.read_source(medium)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"{peak} bytes allocated reading a refused payload"
    _site_a(guest, make_iso)
    assert "not read" in _refused(guest, image, "--backend", "networkd")


def test_image_claiming_gigabytes_of_directory_is_refused_at_once(tmp_path: Path) -> None:
    data = bytearray(build_iso_bytes(tmp_path))
    size = 0x7FFFF800  # 2 GiB of root directory, in the PVD and in the directory itself
    for record in (16 * _SECTOR + 156, 28 * _SECTOR):
        data[record + 10 : record + 18] = size.to_bytes(4, "little") + size.to_bytes(4, "big")
    image = tmp_path / "huge-directory.iso"
    image.write_bytes(bytes(data))
    with open(image, "r+b") as fp:
        fp.truncate(3 * 1024**3)  # sparse, as a disc of that size would be there to read
    started = time.monotonic()
    with pytest.raises(iso.UnreadableMediumError, match="more than"):
        read_iso(image)
    # pycdlib alone read the 2 GiB for 12 s.
    assert time.monotonic() - started < 2


# --------------------------------------------------------------------------- discovery


def test_disc_without_our_label_is_skipped_for_a_later_good_one(
    guest: GuestNet, tmp_path: Path, make_iso: MakeIso
) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    # sr0: another label, and damaged where pycdlib raises struct.error (was exit 1).
    broken = tmp_path / "broken.iso"
    payload_iso(broken, b"{}", label="INSTALL")
    (dev / "sr0").write_bytes(_damaged(broken, "path table"))
    # sr1: another label, and a payload file that is not ours to apply (was exit 4).
    payload_iso(dev / "sr1", b'{"format": "kvmguest-dr", "version": 1}', label="OTHER")
    # sr2: the payload, its label lost on the way (an oVirt payload without volume_id).
    good = to_json(payload_from_dropts(SITE_A, "siteA")).encode()
    payload_iso(dev / "sr2", good, label="config-2")
    result = guest.reconfig("--dev-dir", str(dev), "--backend", "none")
    assert result.returncode == 0, result.stderr
    assert f"found the payload on {dev / 'sr2'}" in result.stderr
    assert f"skipping {dev / 'sr1'}, its payload is refused" in result.stderr
    assert guest.addresses() == ["198.51.100.10/24"]


# --------------------------------------------------------------------------- timeouts


def test_hung_command_times_out_and_the_service_goes_on(
    guest: GuestNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    good = to_json(payload_from_dropts(SITE_A, "siteA")).encode()
    payload_iso(dev / "sr0", good, label="config-2")  # found only after blkid was asked
    bin_dir = tmp_path / "bin"
    _fake_command(bin_dir, "blkid", "exec sleep 600")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv(TIMEOUT_ENV, "1")
    started = time.monotonic()
    result = guest.reconfig("--dev-dir", str(dev), "--backend", "none")
    assert time.monotonic() - started < 15
    assert result.returncode == 0, result.stderr
    assert "blkid -L KVMGUEST_DR: timed out after 1 s, killed" in result.stderr
    assert guest.addresses() == ["198.51.100.10/24"]


def _call_mount(path: Path) -> str:
    with pytest.raises(PayloadMissingError) as info:
        iso.read_mounted(path)
    return str(info.value)


def _call_blkid(path: Path) -> str:
    assert source.find_labelled("KVMGUEST_DR", str(path.parent / "nodev")) is None
    return "timed out"


def _call_ip(path: Path) -> str:
    with pytest.raises(OSError) as info:
        IpCommandOps(str(path.parent / "bin" / "ip")).snapshot()
    return str(info.value)


def _call_resolvectl(path: Path) -> str:
    with pytest.raises(OSError) as info:
        ResolvedCtl(resolvectl=str(path.parent / "bin" / "resolvectl")).current("eth0")
    return str(info.value)


def _call_backend(name: str) -> Callable[[Path], str]:
    def call(path: Path) -> str:
        netreconfig.run_backend_commands([[name, "reload"]])
        return "timed out"

    return call


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("mount", _call_mount),
        ("blkid", _call_blkid),
        ("ip", _call_ip),
        ("resolvectl", _call_resolvectl),
        ("nmcli", _call_backend("nmcli")),
        ("networkctl", _call_backend("networkctl")),
    ],
)
def test_every_command_has_a_timeout(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    name: str,
    call: Callable[[Path], str],
) -> None:
    assert name in command.TIMEOUTS
    # The service's own logger stops at itself when it set up its handler in this process.
    monkeypatch.setattr(logging.getLogger(netreconfig.PROG), "propagate", True)
    _fake_command(tmp_path / "bin", name, "exec sleep 600")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv(TIMEOUT_ENV, "0.3")
    image = tmp_path / "dr.iso"
    image.write_bytes(b"")
    started = time.monotonic()
    assert "timed out" in call(image)
    assert time.monotonic() - started < 5
    assert "timed out after 0.3 s, killed" in caplog.text
