"""OCF exit codes and the mapping of our monitor states onto them (pure, no I/O).

The table is docs/pacemaker.md's "OCF exit codes". The one hard case is UNKNOWN: Pacemaker
has no "I don't know" answer, and each of its answers starts something — 7 a restart
(a double start if the guest still runs), 1 a recovery (a stop that must succeed or the node
is fenced), 0/190 "leave it where it is". So UNKNOWN is resolved with evidence from this
host where there is any (is the guest's QEMU process alive?), and otherwise by the safest
answer for the kind of monitor that asked.
"""

from __future__ import annotations

import enum

from kvmguest.model.states import MonitorResult, ResourceState


class Ocf(enum.IntEnum):
    SUCCESS = 0
    ERR_GENERIC = 1
    ERR_ARGS = 2
    ERR_UNIMPLEMENTED = 3
    ERR_PERM = 4
    ERR_INSTALLED = 5
    ERR_CONFIGURED = 6
    NOT_RUNNING = 7
    # OCF 1.1: active, but in a condition that makes failures more likely. Pacemaker treats
    # it as success (no recovery, no fail count) and shows the resource as degraded.
    DEGRADED = 190


class OcfError(Exception):
    """An action cannot run; ``code`` is the OCF exit code, the message the exit reason."""

    def __init__(self, code: Ocf, message: str) -> None:
        super().__init__(message)
        self.code = code


def monitor_code(result: MonitorResult, qemu_alive: bool | None, *, probe: bool) -> Ocf:
    """The OCF answer to a monitor whose result is ``result``.

    ``qemu_alive``: whether a QEMU process of the guest runs on this host — True or False
    when this host can tell (a local ``qemu:///system``), None when it cannot (a remote
    libvirt, RHV-M). ``probe``: a monitor without an interval (Pacemaker asks "does it run
    here?" before it starts the resource anywhere).
    """
    state = result.state
    if state is ResourceState.ONLINE:
        return Ocf.SUCCESS
    if state in (ResourceState.OFFLINE, ResourceState.INTENTIONAL_OFFLINE):
        # INTENTIONAL OFFLINE (migrated away, saved, suspended by the guest) is "not running
        # here" for Pacemaker too: it is not a fault under VCS either (IntentionalOffline=1).
        return Ocf.NOT_RUNNING
    if qemu_alive is True:
        # libvirt cannot be asked (down, restarting, hung) or reports a state we cannot
        # place (paused on an I/O error), but the guest's QEMU runs here: the guest runs.
        # Never 7 (a second start elsewhere corrupts its disks), never 1 (a recovery that
        # kills a running guest because libvirtd restarts).
        return Ocf.DEGRADED
    if qemu_alive is False:
        # No QEMU process of the guest on this host: whatever libvirt says, it is not
        # running here.
        return Ocf.NOT_RUNNING
    # No evidence at all. A recurring monitor keeps the resource where it runs and shows the
    # alarm (VCS's UNKNOWN: the operator decides); a probe must not claim a guest it cannot
    # see, nor deny one: an error makes Pacemaker stop it here before starting it anywhere.
    return Ocf.ERR_GENERIC if probe else Ocf.DEGRADED
