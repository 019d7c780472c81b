"""Tiny real guests for the system tests (real libvirtd + QEMU/TCG).

The guest images are built by ``scripts/build-guest.sh`` (``scripts/ci-env.sh`` does it) into
``GUEST_DIR``: a Debian cloud kernel and two busybox initramfs variants.

- ``cooperative``: the ACPI power button (``virsh shutdown``) powers the guest off (~2 s).
- ``stubborn``: the power button is ignored; only ``virsh destroy`` stops it.

Guest console protocol (serial port, logged to ``serial_log`` by libvirt, appended to):

- ``KVMGUEST-VARIANT <variant>`` then ``KVMGUEST-GUEST-UP`` once init runs (power button
  handler and drivers loaded: a shutdown sent after the marker is acted upon);
- for every file on an ISO9660 CD-ROM: ``KVMGUEST-CDROM-BEGIN <path>``, the contents,
  ``KVMGUEST-CDROM-END``; then ``KVMGUEST-CDROM-DONE <n>``, or ``KVMGUEST-CDROM-NONE``
  when there is no CD-ROM medium (up to ~5 s after GUEST-UP);
- ``KVMGUEST-POWER-BUTTON`` (cooperative, then it powers off) or
  ``KVMGUEST-POWER-BUTTON-IGNORED`` (stubborn).

The serial log is opened in append mode (it must be: during a live migration the source
and the destination QEMU write the same file), so it keeps every boot of the domain. To wait
for something that happens *after* a point in a test, take ``console_offset(log)`` first and
pass it as ``offset=`` to :func:`wait_for_console`.

Every image (disk, ISO, serial log) must live where both libvirt hosts (the host and
``scripts/host2.sh``'s host2, which has private /run and /var/{lib,log,cache}/libvirt) see it
under the same path, in directories QEMU (user ``libvirt-qemu``) can traverse: use
:func:`scratch_dir`, never pytest's ``tmp_path`` (``/tmp/pytest-of-root`` is mode 0700).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

__all__ = [
    "CDROM_BEGIN",
    "CDROM_DONE",
    "CDROM_END",
    "CDROM_NONE",
    "GUEST_DIR",
    "GUEST_UP",
    "HOST2_DIR",
    "HOST2_MIGRATE_URI",
    "HOST2_STATE",
    "HOST2_URI",
    "HOST_MIGRATE_URI",
    "HOST_URI",
    "HOST_URI_FROM_HOST2",
    "IMAGE_DIR",
    "POWER_BUTTON",
    "POWER_BUTTON_IGNORED",
    "Variant",
    "console_offset",
    "console_text",
    "domain_xml",
    "guest_images_present",
    "make_disk",
    "make_iso",
    "parse_cdrom",
    "qemu_pid",
    "scratch_dir",
    "wait_for_console",
]

Variant = Literal["cooperative", "stubborn"]

GUEST_DIR = Path(os.environ.get("KVMGUEST_GUEST_DIR", "/srv/kvmguest-ci/guest"))
"""Kernel and initramfs images (``scripts/build-guest.sh GUEST_DIR``)."""

IMAGE_DIR = Path(os.environ.get("KVMGUEST_IMAGE_DIR", "/srv/kvmguest-ci/images"))
"""Root for per-test disks, ISOs and serial logs (see :func:`scratch_dir`)."""

HOST2_DIR = Path(os.environ.get("KVMGUEST_HOST2_DIR", "/srv/kvmguest-host2"))
"""Socket directory of the second libvirt host (``scripts/host2.sh``)."""

HOST2_STATE = Path(os.environ.get("KVMGUEST_HOST2_STATE", "/var/lib/kvmguest-host2"))
"""State directory of host2 (``scripts/host2.sh``): logs under ``log/``."""

HOST_URI = "qemu:///system"
"""The host's libvirtd, from the host's namespace (tests, virsh)."""

HOST2_URI = f"qemu+unix:///system?socket={HOST2_DIR}/libvirt-sock"
"""host2's libvirtd; valid from the host and from inside host2 (peer-to-peer migration)."""

HOST2_MIGRATE_URI = f"unix://{HOST2_DIR}/mig.sock"
"""Migration data URI when host2 is the destination (host2's QEMU listens there)."""

HOST_URI_FROM_HOST2 = f"qemu+unix:///system?socket={HOST2_DIR}/host1/libvirt-sock"
"""The host's libvirtd under a path valid in both namespaces (destination of host2 -> host)."""

HOST_MIGRATE_URI = f"unix://{HOST2_DIR}/mig-host1.sock"
"""Migration data URI when the host is the destination."""

GUEST_UP = "KVMGUEST-GUEST-UP"
CDROM_BEGIN = "KVMGUEST-CDROM-BEGIN"
CDROM_END = "KVMGUEST-CDROM-END"
CDROM_DONE = "KVMGUEST-CDROM-DONE"
CDROM_NONE = "KVMGUEST-CDROM-NONE"
POWER_BUTTON = "KVMGUEST-POWER-BUTTON"
POWER_BUTTON_IGNORED = "KVMGUEST-POWER-BUTTON-IGNORED"

_IMAGES = ("vmlinuz", "initrd-cooperative.img", "initrd-stubborn.img")


def guest_images_present() -> bool:
    """True when the kernel and both initramfs images exist in GUEST_DIR."""
    return all((GUEST_DIR / name).is_file() for name in _IMAGES)


def scratch_dir(prefix: str = "t-") -> Path:
    """A new directory under IMAGE_DIR (mode 0755) for a test's disks, ISOs and logs.

    Visible under the same path from both libvirt hosts and traversable by QEMU. The caller
    removes it (``shutil.rmtree``) when done; libvirt re-owns images while guests run.
    """
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    IMAGE_DIR.chmod(0o755)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=IMAGE_DIR))
    path.chmod(0o755)
    return path


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = text
    return element


def domain_xml(
    name: str,
    variant: Variant,
    *,
    serial_log: Path,
    disk: Path | None = None,
    cdrom: Path | None = None,
    memory_mib: int = 128,
    cdrom_bus: Literal["ide", "scsi"] = "ide",
    kernel_args: str = "",
) -> str:
    """Libvirt XML of a TCG test guest booting GUEST_DIR's kernel and VARIANT's initramfs.

    ``disk``: a raw image as ``vda`` (virtio). ``cdrom``: an ISO as ``hdc`` (IDE, default) or
    ``sda`` on a virtio-scsi controller; the guest kernel has no AHCI, so SATA CD-ROMs are
    invisible to it. No network, no graphics, no balloon; ``on_crash`` destroys.
    """
    if variant not in ("cooperative", "stubborn"):
        raise ValueError(f"unknown guest variant {variant!r}")
    root = ET.Element("domain", type="qemu")
    _sub(root, "name", name)
    _sub(root, "memory", str(memory_mib), unit="MiB")
    _sub(root, "vcpu", "1")
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_el, "kernel", str(GUEST_DIR / "vmlinuz"))
    _sub(os_el, "initrd", str(GUEST_DIR / f"initrd-{variant}.img"))
    _sub(os_el, "cmdline", f"console=ttyS0 quiet {kernel_args}".strip())
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(root, "clock", offset="utc")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    if disk is not None:
        d = _sub(devices, "disk", type="file", device="disk")
        _sub(d, "driver", name="qemu", type="raw")
        _sub(d, "source", file=str(disk))
        _sub(d, "target", dev="vda", bus="virtio")
    if cdrom is not None:
        if cdrom_bus == "scsi":
            _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
        c = _sub(devices, "disk", type="file", device="cdrom")
        _sub(c, "driver", name="qemu", type="raw")
        _sub(c, "source", file=str(cdrom))
        _sub(c, "target", dev="hdc" if cdrom_bus == "ide" else "sda", bus=cdrom_bus)
        _sub(c, "readonly")
    _sub(devices, "controller", type="usb", model="none")
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(serial_log), append="on")
    _sub(serial, "target", port="0")
    _sub(devices, "memballoon", model="none")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def make_disk(path: Path, size_mib: int = 1) -> Path:
    """Create (or truncate to) a sparse raw disk image of SIZE_MIB MiB; returns PATH."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    path.chmod(0o644)
    return path


def make_iso(path: Path, files: Mapping[str, str | bytes], *, volume_id: str = "KVMGTEST") -> Path:
    """Build an ISO9660 (Rock Ridge + Joliet) image holding FILES (relative path -> data).

    Uses xorriso, independently of the product's own ISO writer.
    """
    xorriso = shutil.which("xorriso")
    if xorriso is None:
        raise RuntimeError("xorriso is not installed (scripts/install-deps.sh)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kvmguest-iso-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        for rel, data in files.items():
            target = tree / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data.encode() if isinstance(data, str) else data)
        subprocess.run(
            [
                xorriso,
                "-as",
                "mkisofs",
                "-quiet",
                "-R",
                "-J",
                "-V",
                volume_id,
                "-o",
                str(path),
                str(tree),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    path.chmod(0o644)
    return path


def console_offset(serial_log: Path) -> int:
    """Current size of the serial log (0 if it does not exist yet): an ``offset=`` mark."""
    try:
        return serial_log.stat().st_size
    except FileNotFoundError:
        return 0


def console_text(serial_log: Path, offset: int = 0) -> str:
    """The serial log from byte OFFSET on ('' if it does not exist yet).

    The guest's tty writes CRLF line ends; they are returned as LF.
    """
    try:
        with serial_log.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n")


def wait_for_console(
    serial_log: Path,
    marker: str,
    timeout: float,
    *,
    offset: int = 0,
    poll_interval: float = 0.1,
) -> str:
    """Wait until MARKER appears in the serial log after byte OFFSET.

    Returns the log text from OFFSET through the end of the line holding the first MARKER.
    Raises TimeoutError (with the log's tail) when it does not appear within TIMEOUT s.
    """
    deadline = time.monotonic() + timeout
    while True:
        text = console_text(serial_log, offset)
        index = text.find(marker)
        if index >= 0:
            end = text.find("\n", index)
            return text if end < 0 else text[: end + 1]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            tail = text[-2000:]
            raise TimeoutError(
                f"{marker!r} not in {serial_log} (from offset {offset}) after {timeout}s;"
                f" log tail:\n{tail}"
            )
        time.sleep(min(poll_interval, remaining))


_CDROM_RE = re.compile(
    rf"^{CDROM_BEGIN} (?P<name>[^\n]+)\n(?P<body>.*?)^{CDROM_END}$",
    re.MULTILINE | re.DOTALL,
)


def parse_cdrom(console: str) -> dict[str, str]:
    """Files the guest printed from its CD-ROM(s): {relative path: contents}.

    A file that does not end with a newline gets one (the guest adds it so that the END
    marker stays on its own line): compare contents with that in mind (e.g. ``.strip()``).
    Accepts raw log text too (CRLF line ends are normalised to LF).
    """
    text = console.replace("\r\n", "\n")
    files: dict[str, str] = {}
    for match in _CDROM_RE.finditer(text):
        files[match.group("name")] = match.group("body")
    return files


def qemu_pid(name: str, *, host2: bool = False) -> int:
    """PID (in this machine's pid namespace) of the QEMU running domain NAME.

    Read from libvirt's pid file: ``/run/libvirt/qemu/NAME.pid`` on the host; on host2 (whose
    /run is private) through ``/proc/<host2 anchor>/root``. Raises FileNotFoundError when
    the domain is not running (or host2 is down).
    """
    run = Path("/run")
    if host2:
        anchor = (HOST2_STATE / "unshare.pid").read_text().strip()
        run = Path(f"/proc/{anchor}/root/run")
    return int((run / "libvirt" / "qemu" / f"{name}.pid").read_text().strip())
