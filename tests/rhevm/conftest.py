"""Fixtures: a simulated RHV-M on a manual clock, and a client logged in to it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from html import escape
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from kvmguest.agents.kvmguest import entrypoints as ep
from kvmguest.agents.kvmguest.rhevm_client import RhevmClient
from kvmguest.agents.kvmguest.runner import Env, context
from kvmguest.secrets import encrypt
from kvmguest.testing.ovirt_sim import (
    Durations,
    ManualClock,
    OvirtSimulator,
    TestPki,
    generate_pki,
)

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


# A second secret: a wrong password must not leak either.
WRONG_PASSWORD = "Wr0ng&pw=%<y>+2"


def _forms(secret: str) -> set[str]:
    return {secret, quote_plus(secret), quote(secret, safe=""), escape(secret)}


def leaks(texts: Iterable[str]) -> list[str]:
    """The texts that contain a test password, as is or URL/XML-encoded."""
    forms = _forms(PASSWORD) | _forms(WRONG_PASSWORD)
    return [t for t in texts if any(f in t for f in forms)]


# -- the entry points on RHV-M (tests of kvmguest.agents.kvmguest.rhevm and the CLI) ----------

# Short transitions on the real clock: the entry points wait for them as for a real engine.
LIVE_DURATIONS = Durations(launch=0.1, power_up=0.2, power_down=0.2, migrate=0.3, restore=0.1)

MAIN_CF = """\
cluster rhev (
    RHEVMCAFile = "{ca}"
    SecretKeyFile = "{key}"
    )
system host1 ( Site = east )
system host2 ( Site = east )
system host3 ( Site = west
    RHEVHost = "192.0.2.13" )
system lost ( Site = east )
group g ( SystemList = {{ host1 = 0, host2 = 1, host3 = 2, lost = 3 }} )
    KVMGuest {res} (
        GuestName = {vm}
        RHEVMInfo = {{ Enabled = 1, URL = "{url}", User = "{user}", Password = "{ciphertext}",
                      Cluster = cluster1, UseManualRHEVMFencing = {fencing} }}
        MonitorTimeout = 3
        OnlineTimeout = 5
        {extra}
        )
"""


@pytest.fixture
def live_sim(pki: TestPki) -> Iterator[OvirtSimulator]:
    """cluster1: host1 (192.0.2.11), host2 (.12), host3 (.13); vm1 up on host1, vm2 down."""
    s = OvirtSimulator(password=PASSWORD, pki=pki, durations=LIVE_DURATIONS)
    s.seed_demo()
    s.add_host("host3", "cluster1", address="192.0.2.13")
    s.start()
    try:
        yield s
    finally:
        s.stop()


class Rhev:
    """A main.cf for one RHEV resource against ``sim``, and contexts to run it with."""

    def __init__(self, sim: OvirtSimulator, tmp: Path) -> None:
        self.sim = sim
        self.tmp = tmp
        self.key = tmp / "secret.key"
        self.cfg = tmp / "main.cf"
        # A copy, as on a real system (and the simulator's own goes away when it stops).
        self.ca = tmp / "rhvm-ca.pem"
        shutil.copyfile(sim.ca_file, self.ca)
        self._contexts: list[ep.Context] = []

    def ciphertext(self, password: str = PASSWORD, key: Path | None = None) -> str:
        return encrypt(password, key or self.key)

    def write(
        self,
        *,
        vm: str = "vm1",
        res: str = "res1",
        extra: str = "",
        fencing: int = 0,
        ca: str | None = None,
        password: str = PASSWORD,
        ciphertext: str | None = None,
        url: str | None = None,
    ) -> Path:
        self.cfg.write_text(
            MAIN_CF.format(
                ca=self.ca if ca is None else ca,
                key=self.key,
                res=res,
                vm=vm,
                url=url or self.sim.base_url,
                user=self.sim.user,
                ciphertext=ciphertext or self.ciphertext(password),
                fencing=fencing,
                extra=extra,
            )
        )
        return self.cfg

    def ctx(self, system: str | None = "host1", res: str = "res1") -> ep.Context:
        c = context(Env(str(self.cfg), system, uri=None), res)
        self._contexts.append(c)
        return c

    def configure(self, system: str | None = "host1", **kw: object) -> ep.Context:
        self.write(**kw)  # type: ignore[arg-type]
        return self.ctx(system, str(kw.get("res", "res1")))

    def env(self) -> dict[str, str]:
        """The environment for a ``python -m kvmguest`` child (no stray key or CA)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KVMGUEST_")}
        return env

    def close(self) -> None:
        for c in self._contexts:
            c.hv.close()


@pytest.fixture
def rhev(live_sim: OvirtSimulator, tmp_path: Path) -> Iterator[Rhev]:
    r = Rhev(live_sim, tmp_path)
    try:
        yield r
    finally:
        r.close()
