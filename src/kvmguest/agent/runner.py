"""Library entry: load the configuration, pick the hypervisor, run one entry point.

The CLI, the OCF adapter and the daemon all come through here (pcs-style: the library
takes its environment as arguments; callers only parse and format).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from kvmguest.agent import entrypoints as ep
from kvmguest.agent.params import GuestParams, Loaded, local_system
from kvmguest.hypervisors.base import Hypervisor, Progress

DEFAULT_URI = "qemu:///system"
DEFAULT_CONFIG = "/etc/kvmguest/main.cf"


@dataclass(frozen=True)
class Env:
    """Where an entry point runs: the config file, this system, the local libvirt."""

    config: str = DEFAULT_CONFIG
    system: str | None = None
    uri: str | None = None

    @classmethod
    def from_environ(cls, config: str | None, system: str | None, uri: str | None) -> Env:
        return cls(
            config=config or os.environ.get("KVMGUEST_CONFIG", DEFAULT_CONFIG),
            system=local_system(system),
            uri=uri or os.environ.get("KVMGUEST_LIBVIRT_URI", DEFAULT_URI),
        )


def make_hypervisor(params: GuestParams, loaded: Loaded, env: Env) -> Hypervisor:
    if params.rhev:
        from kvmguest.hypervisors.rhevm import RhevHypervisor

        return RhevHypervisor(params, loaded, env.system)
    from kvmguest.hypervisors.libvirt_kvm import LibvirtKVM

    return LibvirtKVM(env.uri or DEFAULT_URI)


def context(
    env: Env,
    resource: str,
    *,
    loaded: Loaded | None = None,
    hv: Hypervisor | None = None,
    progress: Progress | None = None,
) -> ep.Context:
    """Raises ConfigInvalid (with positions) or KeyError (unknown resource)."""
    loaded = loaded or Loaded.from_file(env.config)
    params = loaded.guest(resource, env.system)
    return ep.Context(
        params=params,
        loaded=loaded,
        hv=hv or make_hypervisor(params, loaded, env),
        progress=progress or (lambda _m: None),
    )
