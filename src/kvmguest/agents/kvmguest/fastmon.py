"""The lean monitor: a KVM guest described by its OCF parameters, state only.

Pacemaker runs ``monitor`` every interval for every guest, each time in a new process, so
its cost is the product's steady load. This path imports libvirt, the pure state table,
the deadline and the process check — not click, not lark, not the configuration model —
and asks libvirt one question. It is the same state table and the same UNKNOWN rules as the
full path (:func:`kvmguest.agents.kvmguest.ocf_actions.monitor`, through the entry
points); the tests run both on the same domains and compare.

Used when the parameters alone describe the guest: no ``config``, RHEVMInfo and CEInfo
not enabled, OCF_CHECK_LEVEL below 10.
"""

from __future__ import annotations

import contextlib
from typing import Any

import libvirt
from kvmguest.agents.kvmguest import procs
from kvmguest.agents.kvmguest.libvirt_conn import bounded, describe, error_code, open_connection
from kvmguest.agents.kvmguest.ocf_params import OcfEnv
from kvmguest.agents.ocf_interface import Ocf, OcfError, monitor_code
from kvmguest.deadline import Deadline
from kvmguest.errors import Unreachable
from kvmguest.model import states
from kvmguest.model.states import MonitorResult, ResourceState

# The KVMGuest type's MonitorTimeout (agent-framework default; a unit test keeps them equal):
# the deadline of a monitor that Pacemaker gave no timeout (a manual run, ocf-tester).
MONITOR_TIMEOUT = 60


def budget(timeout_ms: int | None, default: float) -> float:
    """Seconds an action may use: the op timeout less a margin to report before the kill."""
    if timeout_ms is None or timeout_ms <= 0:
        return default
    seconds = timeout_ms / 1000
    return max(1.0, seconds - min(5.0, seconds / 10))


def applies(env: OcfEnv) -> bool:
    """True when the lean path can answer this monitor."""
    return (
        not env.config_mode
        and env.check_level < 10
        and not env.flag("rhevm_enabled")
        and not env.flag("ce_enabled")
    )


def probe(name: str, uri: str, deadline: Deadline) -> MonitorResult:
    """The guest's state by the KVM state table; UNKNOWN when libvirt cannot tell."""

    def read(conn: Any) -> MonitorResult:
        try:
            dom = conn.lookupByName(name)
            state, reason = dom.state()
            job_op = None
            if state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_MIGRATION:
                job_op = int(dom.jobStats().get("operation", 0))
        except libvirt.libvirtError as e:
            if error_code(e) == libvirt.VIR_ERR_NO_DOMAIN:
                return states.kvm_state(None)
            raise
        return states.kvm_state(state, reason, job_op)

    conn = None
    try:
        conn = open_connection(uri, deadline)
        return bounded(lambda: read(conn), deadline, f"state of {name}", uri)
    except Unreachable as e:
        return states.unknown(str(e))
    except libvirt.libvirtError as e:
        return states.unknown(f"libvirt error {error_code(e)}: {describe(e)}")
    finally:
        if conn is not None:
            # Closing a dead connection: nothing is left to release.
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()


def evidence(result: MonitorResult, name: str, uri: str) -> tuple[bool | None, str]:
    """For an UNKNOWN result: is the guest's QEMU alive here (None: cannot tell)?"""
    if result.state is not ResourceState.UNKNOWN or not procs.is_local(uri):
        return None, ""
    pid = procs.qemu_pid(name)
    if pid is None:
        return False, f"; no QEMU process of {name} on this host"
    return True, f"; its QEMU (pid {pid}) is alive"


def monitor(env: OcfEnv) -> tuple[Ocf, str]:
    name = env.get("guest_name")
    if not name:
        raise OcfError(Ocf.ERR_CONFIGURED, "guest_name is required (or config and resource)")
    uri = env.get("hypervisor") or "qemu:///system"
    deadline = Deadline(budget(env.meta.timeout_ms, MONITOR_TIMEOUT))
    result = probe(name, uri, deadline)
    alive, why = evidence(result, name, uri)
    code = monitor_code(result, alive, probe=env.meta.probe)
    return code, f"{name} {result.state.value}: {result.detail}{why}"
