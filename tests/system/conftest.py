"""Real libvirtd + QEMU (TCG) guests. `scripts/ci-env.sh` starts what these tests need.

Without the real components the tests skip, unless KVMGUEST_REQUIRE_SYSTEM=1 (CI sets it):
then a missing component is a failure, never a silent skip.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import libvirt
from kvmguest.agents.kvmguest import entrypoints as ep
from kvmguest.agents.kvmguest.libvirt_kvm import LibvirtKVM
from kvmguest.agents.kvmguest.runner import Env, context
from kvmguest.agents.loader import Loaded

from .guests import (
    GUEST_UP,
    HOST2_MIGRATE_URI,
    HOST2_URI,
    HOST_URI,
    Variant,
    domain_xml,
    make_disk,
    scratch_dir,
    wait_for_console,
)
from .realenv import reachable, remove_domain, require, require_real_libvirt

REPO = Path(__file__).resolve().parents[2]
_seq = itertools.count()


@pytest.fixture(scope="session")
def real_libvirt() -> None:
    require_real_libvirt()


@pytest.fixture(scope="session")
def host2(real_libvirt: None) -> str:
    if not reachable(HOST2_URI):
        require(f"second libvirt host not reachable at {HOST2_URI} (scripts/host2.sh start)")
    return HOST2_URI


MAIN_CF = """\
cluster c ( LibvirtURITemplate = "qemu:///system"
    DRPayloadDir = "{dr}" )
system host1 ( Site = east )
system host2 ( Site = {host2_site}
    LibvirtURI = "{host2_uri}"
    MigrateDataURI = "{host2_mig}" )
group g ( SystemList = {{ host1 = 0, host2 = 1 }} )
    KVMGuest {res} (
        GuestName = {name}
        GuestConfigFilePath = "{xml}"
        SyncDir = "{sync}"
        DelayAfterGuestOnline = 30
        DelayAfterGuestOffline = {delay_offline}
        {extra}
        )
"""


@dataclass
class RealGuest:
    name: str
    res: str
    dir: Path
    variant: Variant
    disk: Path | None = None
    extra: str = ""
    delay_offline: int = 60
    host2_site: str = "east"
    created: list[str] = field(default_factory=list)

    @property
    def serial(self) -> Path:
        return self.dir / "serial.log"

    @property
    def xml_path(self) -> Path:
        return self.dir / f"{self.name}.xml"

    @property
    def cfg_path(self) -> Path:
        return self.dir / "main.cf"

    @property
    def sync(self) -> Path:
        return self.dir / "sync"

    def write(self) -> None:
        self.sync.mkdir(exist_ok=True)
        self.xml_path.write_text(
            domain_xml(self.name, self.variant, serial_log=self.serial, disk=self.disk)
        )
        self.cfg_path.write_text(
            MAIN_CF.format(
                res=self.res, name=self.name, xml=self.xml_path, sync=self.sync,
                delay_offline=self.delay_offline, extra=self.extra,
                host2_site=self.host2_site, host2_uri=HOST2_URI, host2_mig=HOST2_MIGRATE_URI,
                dr=self.dir / "dr",
            )
        )  # fmt: skip

    def ctx(self, uri: str = HOST_URI, system: str = "host1") -> ep.Context:
        self.write()
        loaded = Loaded.from_file(str(self.cfg_path))
        return context(Env(str(self.cfg_path), system, uri), self.res, loaded=loaded,
                       hv=LibvirtKVM(uri))  # fmt: skip

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        self.write()
        return subprocess.run(
            [str(REPO / ".venv/bin/python"), "-m", "kvmguest", "--system", "host1",
             "--connect", HOST_URI, *args, "-c", str(self.cfg_path)],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def domain(self, uri: str = HOST_URI) -> libvirt.virDomain:
        return libvirt.open(uri).lookupByName(self.name)

    def wait_up(self, offset: int = 0, timeout: float = 120) -> None:
        wait_for_console(self.serial, GUEST_UP, timeout, offset=offset)


GuestFactory = Callable[..., RealGuest]


@pytest.fixture
def make_guest(real_libvirt: None) -> Iterator[GuestFactory]:
    made: list[RealGuest] = []

    def make(variant: Variant = "cooperative", *, disk: bool = False, **kw: object) -> RealGuest:
        n = next(_seq)
        d = scratch_dir(f"sys{n}-")
        name = f"kvmg-sys{n}-{os.getpid()}"
        g = RealGuest(name=name, res=f"vm{n}", dir=d, variant=variant, **kw)  # type: ignore[arg-type]
        if disk:
            g.disk = make_disk(d / "disk.img")
        made.append(g)
        return g

    yield make
    for g in made:
        remove_domain(g.name, HOST_URI)
        if reachable(HOST2_URI):
            remove_domain(g.name, HOST2_URI)
        shutil.rmtree(g.dir, ignore_errors=True)
