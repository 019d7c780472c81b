"""The ISO image: atomic writing, reading without mounting, the mount fallback, discovery."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pycdlib
import pytest

from kvmguest.guest import iso, source
from kvmguest.guest.iso import build_iso, read_iso
from kvmguest.guest.payload import (
    VOLUME_LABEL,
    DrPayload,
    PayloadError,
    PayloadMissingError,
    UnsupportedVersionError,
    to_dict,
    to_json,
)

PAYLOAD = DrPayload(
    "198.51.100.10", 24, "eth0", "198.51.100.1", ("198.51.100.53",), ("b.example",), "siteB"
)


def raw_iso(
    path: Path, files: dict[str, bytes], label: str = VOLUME_LABEL, rr: bool = True
) -> Path:
    """An image with arbitrary content, as another tool (or a broken agent) might write."""
    image = pycdlib.PyCdlib()
    image.new(
        interchange_level=3,
        vol_ident=label,
        joliet=3 if rr else None,
        rock_ridge="1.09" if rr else None,
    )
    for name, data in files.items():
        iso_name = name.upper().replace("-", "_")
        stem, _, ext = iso_name.partition(".")
        iso_path = f"/{stem[:8]}.{ext[:3]};1"
        if rr:
            image.add_fp(
                io.BytesIO(data), len(data), iso_path, rr_name=name, joliet_path=f"/{name}"
            )
        else:
            image.add_fp(io.BytesIO(data), len(data), iso_path)
    image.write(str(path))
    image.close()
    return path


def test_build_and_read_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "dr.iso"
    build_iso(PAYLOAD, target)
    assert read_iso(target) == PAYLOAD
    assert read_iso(str(target)) == PAYLOAD
    assert source.label_of(str(target)) == VOLUME_LABEL
    assert target.stat().st_mode & 0o777 == 0o644


def test_rebuild_replaces_the_image_atomically(tmp_path: Path) -> None:
    target = tmp_path / "dr.iso"
    build_iso(PAYLOAD, target)
    with open(target, "rb") as old:
        site_c = DrPayload("203.0.113.10", 24, site="siteC")
        build_iso(site_c, target)
        # The old image is still whole behind the open descriptor: the new one was renamed
        # over it, never written into it.
        old_image = pycdlib.PyCdlib()
        old_image.open_fp(old)
        out = io.BytesIO()
        old_image.get_file_from_iso_fp(out, rr_path="/kvmguest-dr.json")
        old_image.close()
    assert json.loads(out.getvalue())["site"] == "siteB"
    assert read_iso(target) == site_c
    assert sorted(os.listdir(tmp_path)) == ["dr.iso"]


def test_failed_build_leaves_the_old_image_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "dr.iso"
    build_iso(PAYLOAD, target)
    before = target.read_bytes()

    def broken_write(self: object, fp: io.BufferedWriter) -> None:
        fp.write(b"half an image")
        raise OSError("disk full")

    monkeypatch.setattr(pycdlib.PyCdlib, "write_fp", broken_write)
    with pytest.raises(OSError, match="disk full"):
        build_iso(DrPayload("203.0.113.10", 24), target)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["dr.iso"]


def test_iso9660_names_only_are_found(tmp_path: Path) -> None:
    image = raw_iso(
        tmp_path / "plain.iso", {"kvmguest-dr.json": to_json(PAYLOAD).encode()}, rr=False
    )
    assert read_iso(image) == PAYLOAD


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="xorriso is not installed")
def test_image_made_by_mkisofs_like_ovirt_payloads(tmp_path: Path) -> None:
    content = tmp_path / "content"
    content.mkdir()
    (content / "kvmguest-dr.json").write_text(to_json(PAYLOAD))
    image = tmp_path / "payload.iso"
    subprocess.run(
        [
            "xorriso",
            "-as",
            "mkisofs",
            "-R",
            "-J",
            "-V",
            VOLUME_LABEL,
            "-o",
            str(image),
            str(content),
        ],
        check=True,
        capture_output=True,
    )
    assert source.label_of(str(image)) == VOLUME_LABEL
    assert read_iso(image) == PAYLOAD


def test_not_an_iso_is_corrupt(tmp_path: Path) -> None:
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"\0" * 40000)
    with pytest.raises(iso.UnreadableMediumError, match="not a readable ISO 9660 image"):
        read_iso(junk)
    assert source.label_of(str(junk)) is None
    build_iso(PAYLOAD, junk)
    junk.write_bytes(junk.read_bytes()[: 17 * 2048])  # truncated after the descriptors
    with pytest.raises(PayloadError):
        read_iso(junk)


def test_iso_without_payload_is_missing(tmp_path: Path) -> None:
    image = raw_iso(tmp_path / "other.iso", {"readme.txt": b"hello"})
    with pytest.raises(PayloadMissingError, match=r"has no kvmguest-dr\.json"):
        read_iso(image)
    with pytest.raises(PayloadMissingError, match="no such file"):
        read_iso(tmp_path / "absent.iso")


def test_corrupt_and_future_payloads_on_the_medium(tmp_path: Path) -> None:
    bad = raw_iso(tmp_path / "bad.iso", {"kvmguest-dr.json": b'{"format": "kvmguest-dr", '})
    with pytest.raises(PayloadError, match="not JSON") as info:
        read_iso(bad)
    assert not isinstance(info.value, PayloadMissingError)
    future = dict(to_dict(PAYLOAD), version=2)
    newer = raw_iso(tmp_path / "v2.iso", {"kvmguest-dr.json": json.dumps(future).encode()})
    with pytest.raises(UnsupportedVersionError):
        read_iso(newer)


def test_read_directory(tmp_path: Path) -> None:
    (tmp_path / "kvmguest-dr.json").write_text(to_json(PAYLOAD))
    assert iso.read_source(tmp_path) == PAYLOAD
    with pytest.raises(PayloadMissingError):
        iso.read_directory(tmp_path / "nothing")


class FakeMount:
    """Stands in for mount(8): 'mounts' an image by extracting it into the mount point."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        args = list(argv)
        self.calls.append(args)
        if args[0] == "mount":
            if self.fail:
                return 32, "mount: unknown filesystem type 'iso9660'"
            image, mountpoint = args[-2], args[-1]
            reader = pycdlib.PyCdlib()
            reader.open(image)
            with open(os.path.join(mountpoint, "kvmguest-dr.json"), "wb") as out:
                reader.get_file_from_iso_fp(out, rr_path="/kvmguest-dr.json")
            reader.close()
            return 0, ""
        if args[0] == "umount":
            for name in os.listdir(args[1]):
                os.unlink(os.path.join(args[1], name))
            return 0, ""
        raise AssertionError(args)


def test_mount_fallback_reads_and_cleans_up(tmp_path: Path) -> None:
    image = tmp_path / "dr.iso"
    build_iso(PAYLOAD, image)
    fake = FakeMount()
    assert iso.read_mounted(image, fake) == PAYLOAD
    mount, umount = fake.calls
    assert mount[:4] == ["mount", "-t", "iso9660", "-o"]
    assert set(mount[4].split(",")) == {"ro", "nosuid", "nodev", "noexec", "loop"}
    assert umount == ["umount", mount[-1]]
    assert not os.path.exists(mount[-1])


def test_mount_failure_is_missing_and_cleans_up(tmp_path: Path) -> None:
    image = tmp_path / "dr.iso"
    build_iso(PAYLOAD, image)
    fake = FakeMount(fail=True)
    with pytest.raises(PayloadMissingError, match="unknown filesystem type"):
        iso.read_mounted(image, fake)
    assert not os.path.exists(fake.calls[0][-1])


def test_without_pycdlib_the_mount_fallback_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "dr.iso"
    build_iso(PAYLOAD, image)
    fake = FakeMount()
    monkeypatch.setitem(sys.modules, "pycdlib", None)  # import pycdlib -> ImportError
    assert iso.read_source(image, fake) == PAYLOAD
    assert [c[0] for c in fake.calls] == ["mount", "umount"]


def test_unparsable_medium_tries_mount_then_reports_the_parse_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"\0" * 40000)
    fake = FakeMount(fail=True)
    with pytest.raises(iso.UnreadableMediumError):
        iso.read_source(junk, fake)
    assert [c[0] for c in fake.calls] == ["mount"]


def _iso9660_mountable() -> str | None:
    if os.geteuid() != 0:
        return "mounting needs root"
    with open("/proc/filesystems") as fp:
        if "iso9660" not in fp.read() and not os.path.exists("/sbin/modprobe"):
            return "this kernel has no iso9660 filesystem loaded and no modprobe to load it"
    return None


@pytest.mark.skipif(_iso9660_mountable() is not None, reason=str(_iso9660_mountable()))
def test_real_mount_fallback(tmp_path: Path) -> None:
    image = tmp_path / "dr.iso"
    build_iso(PAYLOAD, image)
    assert iso.read_mounted(image) == PAYLOAD


# --------------------------------------------------------------------------- discovery


def test_find_labelled_in_a_device_directory(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "sr0").write_bytes(b"")  # an empty drive reads as nothing
    raw_iso(dev / "sr1", {"readme.txt": b"x"}, label="INSTALL")
    build_iso(PAYLOAD, dev / "sr10")
    (dev / "sda").write_bytes(b"")
    assert source.cdrom_devices(str(dev)) == [str(dev / n) for n in ("sr0", "sr1", "sr10")]
    no_blkid = FakeMount()  # never called: the scan finds it first
    assert source.find_labelled(VOLUME_LABEL, str(dev), no_blkid) == str(dev / "sr10")
    assert source.unlabelled_media(VOLUME_LABEL, str(dev)) == [str(dev / "sr1")]
    assert no_blkid.calls == []


def test_find_labelled_prefers_the_udev_link(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    (dev / "disk" / "by-label").mkdir(parents=True)
    build_iso(PAYLOAD, dev / "sr3")
    (dev / "disk" / "by-label" / VOLUME_LABEL).symlink_to("../../sr3")
    assert source.find_labelled(VOLUME_LABEL, str(dev)) == str(dev / "sr3")


def test_find_labelled_asks_blkid_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    vda = tmp_path / "vdb"
    vda.write_bytes(b"")
    asked: list[list[str]] = []

    def blkid(argv: Sequence[str]) -> tuple[int, str]:
        asked.append(list(argv))
        return 0, f"{vda}\n"

    monkeypatch.setattr(shutil, "which", lambda name: f"/sbin/{name}")
    assert source.find_labelled(VOLUME_LABEL, str(dev), blkid) == str(vda)
    assert asked == [["blkid", "-L", VOLUME_LABEL]]
    assert source.find_labelled(VOLUME_LABEL, str(dev), lambda argv: (2, "")) is None


def _attach_loop(image: Path) -> str | None:
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        return None
    result = subprocess.run(
        ["losetup", "--find", "--show", "--read-only", str(image)], capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 else None


def test_read_from_a_block_device(tmp_path: Path) -> None:
    """What the guest does with /dev/sr0: pycdlib on the device node, no mount."""
    image = tmp_path / "dr.iso"
    build_iso(PAYLOAD, image)
    device = _attach_loop(image)
    if device is None:
        pytest.skip("needs root and a free loop device (losetup)")
    try:
        assert source.label_of(device) == VOLUME_LABEL
        assert read_iso(device) == PAYLOAD
    finally:
        subprocess.run(["losetup", "--detach", device], check=True)
