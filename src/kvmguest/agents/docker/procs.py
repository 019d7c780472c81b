"""Processes on this host: the engine that holds an API socket, and a pid verified against
its start time (a recycled pid is never taken for the process we knew). Linux /proc only."""

from __future__ import annotations

import os


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields follow the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    if fields[0] == b"Z":  # a zombie has exited
        return None
    return int(fields[19])


def alive(pid: int, started: int | None) -> bool:
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def socket_path(host: str) -> str | None:
    # Not urllib.parse: the lean monitor comes through here (it costs ~4 ms to import).
    return host[len("unix://") :] if host.startswith("unix://") else None


def _listening_inodes(path: str) -> set[str]:
    inodes = set()
    try:  # not contextlib.suppress: contextlib costs the lean monitor ~1 ms to import
        with open("/proc/net/unix", encoding="utf-8") as f:
            next(f, None)
            for line in f:
                cols = line.split()
                # Num RefCount Protocol Flags Type St Inode Path; flags 00010000 = listening.
                if len(cols) >= 8 and cols[7] == path and cols[3] == "00010000":
                    inodes.add(cols[6])
    except OSError:
        pass
    return inodes


def socket_holder(host: str) -> int | None:
    """The pid of the process listening on ``host``'s Unix socket (not pid 1: systemd's
    socket activation also holds it), None when none does or ``host`` is not a socket."""
    path = socket_path(host)
    if path is None:
        return None
    inodes = {f"socket:[{i}]" for i in _listening_inodes(path)}
    if not inodes:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or entry == "1":
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in inodes:
                    return int(entry)
            except OSError:
                continue
    return None


def _conmon_of(name: str) -> int | None:
    """The pid of a Podman ``conmon`` that monitors the container ``name`` (its command
    line carries ``-n NAME``), None when there is none."""
    want = name.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"conmon"):
            for i, arg in enumerate(argv[:-1]):
                if arg in (b"-n", b"--name") and argv[i + 1] == want:
                    return int(entry)
    return None


def engine_absent(host: str, engine: str, name: str) -> str | None:
    """Why container ``name`` cannot be running although its engine cannot be asked, or
    None when it may be (then the answer stays UNKNOWN).

    Only for a local engine that is gone (no process listens on its socket): dockerd stops
    its containers when it stops; Podman's outlive its API service, each under its conmon,
    so a Podman container is not running only when no conmon of it is left."""
    if socket_path(host) is None or socket_holder(host) is not None:
        return None
    # Whatever Engine says: a Podman socket named with Engine = docker must not make a
    # running Podman container look stopped.
    if _conmon_of(name) is not None:
        return None
    if engine == "podman":
        return f"no Podman service at {host} and no conmon of container {name}"
    return f"no engine process at {host} (dockerd's containers stop with it)"
