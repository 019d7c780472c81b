"""The commands kvmguest-net-reconfig runs, each bounded by a timeout.

The service runs early at boot, before the network services: a command that hangs (a mount
of a drive that does not answer, blkid on a stuck device, nmcli waiting for D-Bus) must fail
its step, which the caller logs and gets over, never stall the boot. The timeouts are per
command class (:data:`TIMEOUTS`); the environment variable :data:`TIMEOUT_ENV` lowers them
all at once (tests, or a guest that would rather give up sooner).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

#: Mounting reads the disc: a drive may need to spin up.
MOUNT_TIMEOUT = 30.0
#: blkid probes devices: a healthy one answers at once.
BLKID_TIMEOUT = 10.0
#: ip talks to the kernel only.
IP_TIMEOUT = 10.0
#: nmcli and networkctl talk to their daemon over D-Bus or varlink.
BACKEND_TIMEOUT = 30.0
#: resolvectl talks to systemd-resolved over D-Bus.
RESOLVECTL_TIMEOUT = 10.0
#: ``udevadm settle --timeout=N`` bounds itself; it gets this much more to exit.
SETTLE_MARGIN = 5.0
#: Any other command.
DEFAULT_TIMEOUT = 30.0

TIMEOUTS = {
    "mount": MOUNT_TIMEOUT,
    "umount": MOUNT_TIMEOUT,
    "blkid": BLKID_TIMEOUT,
    "ip": IP_TIMEOUT,
    "nmcli": BACKEND_TIMEOUT,
    "networkctl": BACKEND_TIMEOUT,
    "resolvectl": RESOLVECTL_TIMEOUT,
}
#: Seconds (e.g. ``2`` or ``0.5``); every command's timeout is at most this.
TIMEOUT_ENV = "KVMGUEST_NET_RECONFIG_TIMEOUT"
#: The exit status of a command that timed out, as timeout(1) has it.
TIMED_OUT = 124
#: The exit status of a command that could not be started, as the shell has it.
NOT_STARTED = 127
# After SIGKILL, a process in uninterruptible sleep (a mount stuck on the hardware) only
# dies when the kernel lets go of it: wait this long for it, then leave it behind.
_REAP_WAIT = 2.0
_ENV_RE = re.compile(r"[0-9]{1,5}(?:\.[0-9]{1,3})?")
_SETTLE_RE = re.compile(r"--timeout=([0-9]{1,5})")

log = logging.getLogger("kvmguest-net-reconfig.command")


@dataclass(frozen=True)
class Completed:
    status: int
    stdout: str
    stderr: str = ""

    @property
    def message(self) -> str:
        """What the command said, for a log line or an error."""
        return (self.stderr.strip() or self.stdout.strip()) or f"exit {self.status}"


def timeout_for(argv: Sequence[str]) -> float:
    """The timeout of ``argv``: its class's, capped by :data:`TIMEOUT_ENV` if that is set."""
    name = os.path.basename(argv[0])
    timeout = TIMEOUTS.get(name, DEFAULT_TIMEOUT)
    if name == "udevadm":
        settle = [m for a in argv[1:] if (m := _SETTLE_RE.fullmatch(a))]
        if settle:
            timeout = int(settle[0].group(1)) + SETTLE_MARGIN
    cap = os.environ.get(TIMEOUT_ENV, "")
    if _ENV_RE.fullmatch(cap) and float(cap) > 0:
        timeout = min(timeout, float(cap))
    return timeout


def _kill(proc: subprocess.Popen[str]) -> None:
    # The command leads its own session: its children (a shell script's sleep, a helper
    # mount spawned) go with it, and none keeps our pipes open.
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.communicate(timeout=_REAP_WAIT)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) does not die; left behind", proc.args, proc.pid)


def run(argv: Sequence[str], *, merge_stderr: bool = True) -> Completed:
    """Run ``argv`` bounded by :func:`timeout_for`; never raises for the command's sake.

    A command that cannot be started gets status :data:`NOT_STARTED`, one that times out
    :data:`TIMED_OUT` (it is killed, with everything it started, and a warning logged).
    With ``merge_stderr``, standard error is part of ``stdout``, as a terminal shows it.
    """
    args = list(argv)
    timeout = timeout_for(args)
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:
        return Completed(NOT_STARTED, "", f"{args[0]}: {exc.strerror or exc}")
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        what = f"{' '.join(args)}: timed out after {timeout:g} s, killed"
        log.warning("%s", what)
        return Completed(TIMED_OUT, "", what)
    return Completed(proc.returncode, stdout or "", stderr or "")


def runner(argv: Sequence[str]) -> tuple[int, str]:
    """:func:`run` as the (status, output) callable the readers take (injectable in tests)."""
    done = run(argv)
    if done.status in (TIMED_OUT, NOT_STARTED):
        return done.status, done.stderr
    return done.status, done.stdout.strip()
