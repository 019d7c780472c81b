"""Entry points on libvirt's own test:///default driver (in-process, shared per process)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import libvirt
from kvmguest.agents.kvmguest import entrypoints as ep
from kvmguest.agents.kvmguest.libvirt_kvm import LibvirtKVM
from kvmguest.agents.kvmguest.runner import Env, context
from kvmguest.agents.loader import Loaded

URI = "test:///default"
_counter = itertools.count()


def guest_xml(name: str, memory_mib: int = 128, disk: Path | None = None) -> str:
    disk_xml = (
        f"<devices><disk type='file' device='disk'><source file='{disk}'/>"
        "<target dev='vda' bus='virtio'/></disk></devices>"
        if disk
        else ""
    )
    stable_uuid = uuid.uuid5(uuid.NAMESPACE_DNS, name)
    return (
        f"<domain type='test'><name>{name}</name><uuid>{stable_uuid}</uuid>"
        f"<memory unit='MiB'>{memory_mib}</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64'>hvm</type></os>{disk_xml}</domain>"
    )


MAIN_CF = """\
cluster c ( LibvirtURITemplate = "test:///default"
    DRPayloadDir = "{dr}" )
system hostA ( Site = east )
system hostB ( Site = east )
system hostC ( Site = west
    LibvirtURI = "qemu+unix:///system?socket=/nonexistent/libvirt-sock" )
group g (
    SystemList = {{ hostA = 0, hostB = 1, hostC = 2 }}
    )
    KVMGuest {res} (
        GuestName = {name}
        {extra}
        )
"""


class Guest:
    def __init__(self, tmp: Path, name: str, res: str) -> None:
        self.tmp = tmp
        self.name = name
        self.res = res
        self.xml_path = tmp / f"{name}.xml"
        self.cfg_path = tmp / "main.cf"
        self.sync = tmp / "sync"
        self.sync.mkdir()

    def configure(self, extra: str = "", system: str = "hostA") -> ep.Context:
        self.cfg_path.write_text(
            MAIN_CF.format(res=self.res, name=self.name, extra=extra, dr=self.tmp / "dr")
        )
        loaded = Loaded.from_file(str(self.cfg_path))
        return context(Env(str(self.cfg_path), system, URI), self.res, loaded=loaded,
                       hv=LibvirtKVM(URI))  # fmt: skip

    def domain(self) -> libvirt.virDomain:
        return libvirt.open(URI).lookupByName(self.name)

    def defined(self) -> bool:
        return self.name in libvirt.open(URI).listDefinedDomains() + [
            d.name() for d in libvirt.open(URI).listAllDomains()
        ]


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[Guest]:
    name = f"t{next(_counter)}-{uuid.uuid4().hex[:6]}"
    g = Guest(tmp_path, name, f"res_{name}".replace("-", "_"))
    yield g
    conn = libvirt.open(URI)
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    if dom.isActive():
        dom.destroy()
    if dom.isPersistent():
        dom.undefine()


GuestFactory = Callable[[], Guest]
