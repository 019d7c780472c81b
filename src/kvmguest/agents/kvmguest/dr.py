"""Disaster recovery, agent side (KVM): build the site's network payload and attach it.

The payload format is defined once, in :mod:`kvmguest.guest.payload` (which runs alone
inside the guest); this module only builds the image for this system's site and puts it
in the guest's persistent definition as a read-only CD-ROM before the guest starts.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Protocol

from kvmguest.agents.kvmguest.params import GuestParams
from kvmguest.deadline import Deadline
from kvmguest.errors import AgentError, ConfigError
from kvmguest.guest.iso import build_iso
from kvmguest.guest.payload import DrPayload, PayloadError, payload_from_dropts


class Definable(Protocol):
    """The part of a libvirt driver that attaching the payload needs."""

    def definition(self, guest: GuestParams, deadline: Deadline) -> str | None: ...

    def redefine_xml(self, xml: str, deadline: Deadline) -> None: ...


def build_payload(guest: GuestParams) -> DrPayload:
    try:
        return payload_from_dropts(guest.dr_opts, guest.site)
    except PayloadError as e:
        raise ConfigError(f"DROpts of {guest.resource}: {e}") from None


def image_path(guest: GuestParams) -> Path:
    return Path(guest.dr_dir) / f"{guest.guest_name}.iso"


def write_image(guest: GuestParams, path: Path | None = None) -> Path:
    """Build the ISO for this site, replacing any earlier one atomically."""
    path = path or image_path(guest)
    payload = build_payload(guest)
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        build_iso(payload, path)
    except OSError as e:
        raise AgentError(f"cannot write the DR payload image {path}: {e.strerror}") from None
    return path


def _free_target(devices: ET.Element, prefix: str) -> str:
    used = {t.get("dev") for t in devices.iter("target")}
    for letter in "cdbefghijklmnopqrstuvwxyz" if prefix == "hd" else "abcdefghijklmnopqrstuvwxyz":
        if f"{prefix}{letter}" not in used:
            return f"{prefix}{letter}"
    raise AgentError("no free CD-ROM target left for the DR payload")


def with_cdrom(xml: str, iso: Path) -> str | None:
    """The domain XML with ``iso`` attached as a read-only CD-ROM; None if it already is."""
    root = ET.fromstring(xml)
    devices = root.find("devices")
    if devices is None:
        devices = ET.SubElement(root, "devices")
    for disk in devices.findall("disk"):
        src = disk.find("source")
        if disk.get("device") == "cdrom" and src is not None and src.get("file") == str(iso):
            return None
    machine = (root.find("os/type").get("machine", "") if root.find("os/type") is not None  # type: ignore[union-attr]
               else "")  # fmt: skip
    # q35 has no IDE controller; the i440fx "pc" machine does, and every guest kernel
    # reads an IDE CD-ROM without extra drivers.
    bus, prefix = ("sata", "sd") if "q35" in machine else ("ide", "hd")
    disk = ET.SubElement(devices, "disk", {"type": "file", "device": "cdrom"})
    ET.SubElement(disk, "driver", {"name": "qemu", "type": "raw"})
    ET.SubElement(disk, "source", {"file": str(iso)})
    ET.SubElement(disk, "target", {"dev": _free_target(devices, prefix), "bus": bus})
    ET.SubElement(disk, "readonly")
    return ET.tostring(root, encoding="unicode")


def attach_dr_payload(hv: Definable, guest: GuestParams, deadline: Deadline) -> list[str]:
    """Rebuild the payload image for this site and make sure the guest has it as a CD-ROM."""
    iso = write_image(guest)
    xml = hv.definition(guest, deadline)
    if xml is None:
        raise AgentError(f"{guest.guest_name} is not defined: cannot attach the DR payload")
    edited = with_cdrom(xml, iso)
    if edited is not None:
        hv.redefine_xml(edited, deadline)
        return [f"DR payload for site {guest.site or '-'} attached as a CD-ROM ({iso})"]
    return [f"DR payload for site {guest.site or '-'} rebuilt in {iso}"]
