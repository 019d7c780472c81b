"""ocf:kvmguest:KVMGuest: the KVMGuest agent's Pacemaker side (parameters, meta-data text,
the lean monitor, the actions). Cheap to import: the lean monitor path comes through here."""

from __future__ import annotations

from collections.abc import Mapping

from kvmguest.agents.kvmguest.ocf_params import PARAMS, OcfEnv, from_environ
from kvmguest.agents.ocf_interface import Observed, Ocf, OcfSide
from kvmguest.agents.ocf_interface import OcfEnv as AnyOcfEnv

LONGDESC = (
    "Keeps a KVM guest (through libvirt) or a RHEV/oVirt VM (through the RHV-M REST API) "
    "running on one node of the cluster: the KVMGuest agent of Veritas Cluster Server, "
    "re-implemented by kvmguest, behind the OCF interface. Start defines the guest from its "
    "XML file when needed and starts it; stop shuts it down gracefully and forces it off "
    "after DelayAfterGuestOffline; migrate_to/migrate_from live-migrate it (set "
    "allow-migrate=true). The guest is described either by the parameters below or by a "
    "resource of a VCS main.cf (config + resource).\n\n"
    "monitor never reports a guest whose QEMU process runs here as stopped: with libvirtd "
    "down or restarting it answers 190 (degraded: running, libvirt unreachable), and stop "
    "still stops the guest (it kills the QEMU through libvirt's pid file). "
    "OCF_CHECK_LEVEL: 0 (default) reads the guest's state, plus the CEInfo heartbeat when "
    "ce_enabled; 10 also checks that every disk and CD-ROM source of the guest is present "
    "and readable on this node (DevScan). Exit codes and details: kvmguest's "
    "docs/pacemaker.md."
)
SHORTDESC = "KVM guest or RHEV VM (kvmguest, the VCS KVMGuest agent)"


class KvmOcfSide(OcfSide):
    params = PARAMS
    shortdesc = SHORTDESC
    longdesc = LONGDESC
    migrate = True
    imports = (
        "libvirt",
        "kvmguest.agents.kvmguest.ocf_actions",
        "kvmguest.agents.kvmguest.fastmon",
    )

    def from_environ(self, environ: Mapping[str, str]) -> OcfEnv:
        return from_environ(environ)

    def lean_monitor(self, env: AnyOcfEnv) -> tuple[Ocf, str] | None:
        from kvmguest.agents.kvmguest import fastmon

        assert isinstance(env, OcfEnv)
        return fastmon.monitor(env) if fastmon.applies(env) else None

    def run(self, action: str, env: AnyOcfEnv) -> tuple[Ocf, str]:
        from kvmguest.agents.kvmguest.ocf_actions import run

        assert isinstance(env, OcfEnv)
        return run(action, env)

    def observe(self, env: AnyOcfEnv) -> Observed | None:
        from kvmguest.agents.kvmguest.observe import observe

        assert isinstance(env, OcfEnv)
        return observe(env)


SIDE = KvmOcfSide()
