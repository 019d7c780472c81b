"""Fixtures: a simulated RHV-M on a manual clock, and a client logged in to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kvmguest.hypervisors.rhevm_client import RhevmClient
from kvmguest.testing.ovirt_sim import ManualClock, OvirtSimulator, TestPki, generate_pki

# Characters that URL-, JSON- and XML-encoding all change: a leak in any encoding shows.
PASSWORD = "Sécr3t &pw=%<x>+1"


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture(scope="session")
def pki() -> TestPki:
    return generate_pki()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim(pki: TestPki, clock: ManualClock) -> Iterator[OvirtSimulator]:
    s = OvirtSimulator(clock=clock, password=PASSWORD, pki=pki)
    s.seed_demo()
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def client(sim: OvirtSimulator) -> Iterator[RhevmClient]:
    c = RhevmClient(sim.base_url, sim.user, PASSWORD, sim.ca_file, timeout=10)
    try:
        yield c
    finally:
        c.close()
