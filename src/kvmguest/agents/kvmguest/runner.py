"""Library entry: load the configuration, pick the hypervisor, run one entry point.

The CLI, the OCF adapter and the daemon all come through here (pcs-style: the library
takes its environment as arguments; callers only parse and format).
"""

from __future__ import annotations

from kvmguest.agents import loader
from kvmguest.agents.base import DEFAULT_URI, Env
from kvmguest.agents.kvmguest import entrypoints as ep
from kvmguest.agents.kvmguest.hypervisor import Hypervisor, Progress
from kvmguest.agents.kvmguest.params import GuestParams, guest_params
from kvmguest.model.resolver import Loaded

__all__ = ["DEFAULT_URI", "Env", "context", "make_hypervisor"]


def make_hypervisor(params: GuestParams, loaded: Loaded, env: Env) -> Hypervisor:
    if params.rhev:
        from kvmguest.agents.kvmguest.rhevm import RhevHypervisor

        return RhevHypervisor(params, loaded, env.system)
    from kvmguest.agents.kvmguest.libvirt_kvm import LibvirtKVM

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
    loaded = loaded or loader.Loaded.from_file(env.config)
    params = guest_params(loaded, resource, env.system)
    return ep.Context(
        params=params,
        loaded=loaded,
        hv=hv or make_hypervisor(params, loaded, env),
        progress=progress or (lambda _m: None),
    )
