"""Fixtures for the guest tests: a namespace standing in for the guest, and DR images."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvmguest.guest.iso import build_iso
from kvmguest.guest.payload import payload_from_dropts

from .guest_testlib import NETNS_SKIP, GuestNet, run


@pytest.fixture(params=["pyroute2", "ip"])
def netlink(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[GuestNet]:
    if NETNS_SKIP is not None:
        pytest.skip(NETNS_SKIP)
    tag = uuid.uuid4().hex[:8]
    net = GuestNet(f"kgguest-{tag}", f"kgpeer-{tag}", tmp_path / "root")
    net.root.mkdir()
    run("ip", "netns", "add", net.ns)
    try:
        run("ip", "netns", "add", net.peer)
        run("ip", "-n", net.ns, "link", "set", "lo", "up")
        # No duplicate address detection: its late "address now valid" events would show up
        # in the idempotence test as changes nobody made.
        for key in ("all", "default"):
            knob = f"/proc/sys/net/ipv6/conf/{key}/accept_dad"
            script = f"if [ -w {knob} ]; then echo 0 > {knob}; fi"
            run("ip", "netns", "exec", net.ns, "sh", "-c", script)
        net.add_nic("eth0")
        yield net
    finally:
        run("ip", "netns", "del", net.ns, check=False)
        run("ip", "netns", "del", net.peer, check=False)


@pytest.fixture
def make_iso(tmp_path: Path) -> Callable[..., Path]:
    """make_iso(site, dropts) -> path of a DR image as the agent builds it."""
    counter = iter(range(1000))

    def make(site: str, dropts: dict[str, str]) -> Path:
        path = tmp_path / f"dr-{site}-{next(counter)}.iso"
        build_iso(payload_from_dropts(dropts, site), path)
        return path

    return make
