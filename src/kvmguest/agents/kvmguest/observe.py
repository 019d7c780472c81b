"""A KVM guest as the Pacemaker companion watches it: the lean monitor's probe and evidence
(the same answer the OCF monitor's direct path gives), and the guest's verified QEMU pid."""

from __future__ import annotations

from kvmguest.agents.kvmguest import fastmon, procs
from kvmguest.agents.kvmguest.ocf_params import DEFAULT_URI, OcfEnv
from kvmguest.agents.ocf_interface import Observed, Ocf, monitor_code
from kvmguest.deadline import Deadline


class KvmObserved(Observed):
    def __init__(self, name: str, uri: str) -> None:
        self.key = name
        self.uri = uri

    def probe(self, interval_ms: int, bound: float) -> tuple[Ocf, str]:
        result = fastmon.probe(self.key, self.uri, Deadline(bound))
        alive, why = fastmon.evidence(result, self.key, self.uri)
        code = monitor_code(result, alive, probe=interval_ms == 0)
        return code, f"{self.key} {result.state.value}: {result.detail}{why}"

    def main_pid(self) -> int | None:
        return procs.qemu_pid(self.key) if procs.is_local(self.uri) else None


def observe(env: OcfEnv) -> KvmObserved | None:
    """The guest of ``env``, unless its monitor needs more than libvirt's state (RHV-M, a
    CEInfo heartbeat): those monitors always take the direct path."""
    if env.config_mode:
        from kvmguest.agents.kvmguest.ocf_actions import resolve

        r = resolve(env, "monitor")
        try:
            p = r.ctx.params
            if p.rhev or p.ce_info.get("Enabled") == "1":
                return None
            return KvmObserved(r.name, r.uri)
        finally:
            r.ctx.hv.close()
    if env.flag("rhevm_enabled") or env.flag("ce_enabled"):
        return None
    name = env.get("guest_name")
    return KvmObserved(name, env.get("hypervisor") or DEFAULT_URI) if name else None
