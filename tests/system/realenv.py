"""What the real-component tests share: is libvirt there, and cleaning up domains.

A missing component skips the tests on a developer's machine and fails them in CI
(KVMGUEST_REQUIRE_SYSTEM=1), so that CI can never pass by skipping.
"""

from __future__ import annotations

import contextlib
import os

import pytest

import libvirt

from .guests import HOST_URI, guest_images_present


def require(problem: str | None) -> None:
    if problem is None:
        return
    msg = problem + " — run scripts/ci-env.sh"
    if os.environ.get("KVMGUEST_REQUIRE_SYSTEM") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def reachable(uri: str) -> bool:
    try:
        libvirt.open(uri).close()
        return True
    except libvirt.libvirtError:
        return False


def require_real_libvirt() -> None:
    problems = []
    if not guest_images_present():
        problems.append("guest images missing (scripts/build-guest.sh)")
    if not reachable(HOST_URI):
        problems.append(f"libvirtd not reachable at {HOST_URI} (scripts/libvirtd.sh start)")
    require("; ".join(problems) or None)


def remove_domain(name: str, uri: str = HOST_URI) -> None:
    """Destroy and undefine ``name`` on ``uri`` if it is there; never raises."""
    with contextlib.suppress(libvirt.libvirtError):
        conn = libvirt.open(uri)
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            return
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefine()
