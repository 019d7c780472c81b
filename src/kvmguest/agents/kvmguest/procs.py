"""Evidence from this host's processes: does the guest's QEMU run here?

When libvirt cannot answer (libvirtd down, restarting or hung), the guest's QEMU process
still tells whether the guest runs on this host. libvirt writes its pid to
``/run/libvirt/qemu/NAME.pid``; a pid file can be stale and its pid reused, so a pid counts
only while ``/proc/PID/cmdline`` is a QEMU whose ``-name guest=NAME`` is the guest.

Only for the local ``qemu:///system`` driver: a remote libvirt's guests are not processes
of this host. Plain ``os`` calls (no pathlib): the lean monitor path imports this module.
"""

from __future__ import annotations

import os

QEMU_RUN_DIR = "/run/libvirt/qemu"
PROC = "/proc"
LOCAL_URIS = ("qemu:///system", "qemu+unix:///system")


def is_local(uri: str) -> bool:
    """The libvirt whose guests are processes of this host (and this PID namespace)."""
    return uri in LOCAL_URIS


def guest_of(cmdline: list[bytes]) -> str | None:
    """The guest name of a QEMU command line (``-name guest=NAME,...``), else None."""
    if not cmdline or b"qemu" not in os.path.basename(cmdline[0]):
        return None
    try:
        arg = cmdline[cmdline.index(b"-name") + 1].decode()
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    # QEMU option syntax: options split at ",", a literal comma is written ",,".
    opts = arg.replace(",,", "\0").split(",")
    first = opts[0]
    if first.startswith("guest="):
        return first[len("guest=") :].replace("\0", ",")
    if "=" not in first:  # the old "-name NAME" form
        return first.replace("\0", ",")
    for opt in opts[1:]:
        if opt.startswith("guest="):
            return opt[len("guest=") :].replace("\0", ",")
    return None


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _cmdline(pid: int, proc: str) -> list[bytes]:
    return _read(f"{proc}/{pid}/cmdline").rstrip(b"\0").split(b"\0")


def _alive(pid: int, proc: str) -> bool:
    try:
        stat = _read(f"{proc}/{pid}/stat")
    except OSError:
        return False
    # "PID (COMM) STATE ...": COMM may hold spaces and parentheses; STATE follows the last ")".
    state = stat.rpartition(b")")[2].split()[:1]
    return bool(state) and state[0] not in (b"Z", b"X")


def _same_pid_ns(pid: int, proc: str) -> bool:
    try:
        return os.readlink(f"{proc}/{pid}/ns/pid") == os.readlink(f"{proc}/self/ns/pid")
    except OSError:
        return True  # no namespaces to tell apart (or not readable): the pid is ours


def qemu_pid(name: str, *, run_dir: str = QEMU_RUN_DIR, proc: str = PROC) -> int | None:
    """The pid of the live QEMU process of guest ``name`` on this host, or None."""
    try:
        text = _read(f"{run_dir}/{name}.pid").strip()
        if not text.isdigit():  # bytes: ASCII digits only
            raise ValueError(f"not a pid: {text[:16]!r}")
        pid = int(text)
        if guest_of(_cmdline(pid, proc)) == name and _alive(pid, proc):
            return pid
    except (OSError, ValueError):
        pass
    # No (valid) pid file: libvirt writes one for every guest it starts, but a guest whose
    # file was lost still runs. The scan costs ~1 ms per 100 processes, and only runs when
    # libvirt could not answer.
    return qemu_processes(proc=proc).get(name)


def qemu_processes(*, proc: str = PROC) -> dict[str, int]:
    """Every live QEMU guest process of this PID namespace: {guest name: pid}."""
    found: dict[str, int] = {}
    try:
        entries = os.listdir(proc)
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            name = guest_of(_cmdline(pid, proc))
        except OSError:
            continue
        if name is not None and _alive(pid, proc) and _same_pid_ns(pid, proc):
            found[name] = pid
    return found
