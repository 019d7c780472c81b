"""ocf-tester (Debian's resource-agents) against the installed ocf:kvmguest:KVMGuest and a
real TCG guest on this host's libvirtd, start to end."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import unavailable
from tests.system.guests import domain_xml, scratch_dir

import libvirt

pytestmark = [pytest.mark.pacemaker, pytest.mark.system]

HOST_URI = "qemu:///system"
# ocf-tester stops the guest right after starting it, before its init listens to the ACPI
# power button: each of its two stops waits DelayAfterGuestOffline, then forces the guest
# off. 5 s keeps the run short; the graceful path is exercised in the cluster tests.
DELAY_OFFLINE = 5


@pytest.fixture
def host_guest(guest_images: None) -> Iterator[tuple[str, Path]]:
    try:
        libvirt.open(HOST_URI).close()
    except libvirt.libvirtError:
        unavailable(f"libvirtd not reachable at {HOST_URI} (scripts/libvirtd.sh start)")
    name = f"kvmg-ocft-{os.getpid()}"
    d = scratch_dir("ocft-")
    xml = d / f"{name}.xml"
    xml.write_text(domain_xml(name, "cooperative", serial_log=d / "serial.log"))
    yield name, xml
    with contextlib.suppress(libvirt.libvirtError):
        dom = libvirt.open(HOST_URI).lookupByName(name)
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    shutil.rmtree(d, ignore_errors=True)


def test_ocf_tester_passes(ocf_agent: Path, host_guest: tuple[str, Path]) -> None:
    if shutil.which("ocf-tester") is None:
        unavailable("ocf-tester is not installed (resource-agents)")
    name, xml = host_guest
    proc = subprocess.run(
        [
            "ocf-tester",
            "-n",
            "ocft",
            "-o",
            f"guest_name={name}",
            "-o",
            f"guest_config_file_path={xml}",
            "-o",
            f"delay_after_guest_offline={DELAY_OFFLINE}",
            str(ocf_agent),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed all tests" in proc.stdout
    dom = libvirt.open(HOST_URI).lookupByName(name)
    assert not dom.isActive()  # ocf-tester ends with the resource stopped
