"""Finding the DR CD-ROM inside the guest.

In order: the udev link ``/dev/disk/by-label/LABEL``; every ``/dev/sr*`` whose ISO 9660
volume label is LABEL (read straight from the primary volume descriptor, so this works
without udev and without pycdlib); ``blkid -L LABEL``. As a last resort, any CD-ROM with the
payload file at its root: a RHEV payload whose volume label was not set still works.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence

from kvmguest.guest.command import runner as _run
from kvmguest.guest.iso import read_volume_label

Runner = Callable[[Sequence[str]], "tuple[int, str]"]
_SR_RE = re.compile(r"sr([0-9]{1,4})")


def cdrom_devices(dev_dir: str = "/dev") -> list[str]:
    """``sr0``, ``sr1``... in numeric order (sr10 after sr9)."""
    try:
        names = os.listdir(dev_dir)
    except OSError:
        return []
    found = [(int(m.group(1)), name) for name in names if (m := _SR_RE.fullmatch(name))]
    return [os.path.join(dev_dir, name) for _, name in sorted(found)]


def label_of(path: str) -> str | None:
    """The ISO 9660 volume label of a device or image; None without a readable medium."""
    try:
        with open(path, "rb") as fp:
            return read_volume_label(fp)
    except OSError:
        return None  # ENOMEDIUM for an empty drive, EACCES, ...


def find_labelled(label: str, dev_dir: str = "/dev", runner: Runner = _run) -> str | None:
    """The device carrying an ISO 9660 volume labelled ``label``, if any."""
    link = os.path.join(dev_dir, "disk", "by-label", label)
    if os.path.exists(link):
        return os.path.realpath(link)
    for device in cdrom_devices(dev_dir):
        if label_of(device) == label:
            return device
    if shutil.which("blkid"):
        status, output = runner(["blkid", "-L", label])
        if status == 0 and output and os.path.exists(output.splitlines()[0]):
            return output.splitlines()[0]
    return None


def unlabelled_media(label: str, dev_dir: str = "/dev") -> list[str]:
    """CD-ROMs holding an ISO 9660 medium with another label: worth a look for the file."""
    return [d for d in cdrom_devices(dev_dir) if label_of(d) not in (None, label)]


def settle_udev(timeout: float, runner: Runner = _run) -> bool:
    """Wait (bounded) for udev to process the boot's device events; False if it cannot."""
    if timeout <= 0 or not shutil.which("udevadm"):
        return False
    status, _ = runner(["udevadm", "settle", f"--timeout={int(max(1, timeout))}"])
    return status == 0
