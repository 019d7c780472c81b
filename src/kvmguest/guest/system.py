"""Filesystem I/O of kvmguest-net-reconfig, all relative to a root directory.

Every guest path (``/etc/...``) is resolved under ``root`` so that tests, and an operator
preparing an image, can point the service at a directory instead of ``/``.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable

from kvmguest.guest.backends import IFUPDOWN_MAIN, BackendFacts
from kvmguest.guest.fsutil import atomic_write, fsync_dir
from kvmguest.guest.plan import (
    AppliedState,
    CurrentFile,
    FileAction,
    FileRemove,
    FileSymlink,
    FileWrite,
    state_from_json,
    state_to_json,
)

STATE_FILE = "/var/lib/kvmguest-net-reconfig/applied.json"
_MAX_CONFIG_BYTES = 1024 * 1024


def under(root: str, path: str) -> str:
    """The host path of guest path ``path`` below ``root``."""
    return os.path.join(root, path.lstrip("/"))


def read_current(root: str, paths: Iterable[str]) -> dict[str, CurrentFile]:
    """What is at each guest path now: absent, a symlink (with its target) or a file."""
    current: dict[str, CurrentFile] = {}
    for path in paths:
        real = under(root, path)
        try:
            info = os.lstat(real)
        except FileNotFoundError:
            current[path] = CurrentFile("absent")
            continue
        if stat.S_ISLNK(info.st_mode):
            current[path] = CurrentFile("symlink", os.readlink(real))
            continue
        with open(real, "rb") as fp:
            raw = fp.read(_MAX_CONFIG_BYTES)
        current[path] = CurrentFile(
            "file", raw.decode("utf-8", errors="surrogateescape"), stat.S_IMODE(info.st_mode)
        )
    return current


def read_text(root: str, path: str) -> str | None:
    current = read_current(root, [path])[path]
    return current.content if current.kind == "file" else None


def apply_file_action(root: str, action: FileAction) -> None:
    real = under(root, action.path)
    if isinstance(action, FileRemove):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(real)
        fsync_dir(os.path.dirname(real))
        return
    os.makedirs(os.path.dirname(real), mode=0o755, exist_ok=True)
    if isinstance(action, FileSymlink):
        tmp = f"{real}.kvmguest-dr.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(action.target, tmp)
        os.replace(tmp, real)
        fsync_dir(os.path.dirname(real))
        return
    assert isinstance(action, FileWrite)
    atomic_write(real, action.content.encode("utf-8", errors="surrogateescape"), action.mode)


def _exists(root: str, *paths: str) -> bool:
    return any(os.path.lexists(under(root, p)) for p in paths)


def _enabled(root: str, unit: str, targets: Iterable[str]) -> bool:
    """A systemd unit enabled for a target, or running now (its /run directory)."""
    return _exists(root, *(f"/etc/systemd/system/{t}.target.wants/{unit}" for t in targets))


def gather_facts(root: str, device: str | None) -> BackendFacts:
    """Look at the guest's files to tell which network backend it uses."""
    networkmanager = _enabled(
        root, "NetworkManager.service", ("multi-user", "network-online")
    ) or _exists(root, "/run/NetworkManager/NetworkManager.pid")
    networkd = (
        _enabled(root, "systemd-networkd.service", ("multi-user", "network-online"))
        or _enabled(root, "systemd-networkd.socket", ("sockets",))
        or _exists(root, "/run/systemd/netif/state")
    )
    ifupdown = _exists(root, IFUPDOWN_MAIN) and _exists(root, "/sbin/ifup", "/usr/sbin/ifup")
    has_device = False
    if ifupdown and device is not None:
        text = read_text(root, IFUPDOWN_MAIN) or ""
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if words[:2] == ["iface", device]:
                has_device = True
    ifcfg = os.path.isdir(under(root, "/etc/sysconfig/network-scripts"))
    return BackendFacts(networkmanager, networkd, ifupdown, ifcfg, has_device)


def is_symlink(root: str, path: str) -> bool:
    return os.path.islink(under(root, path))


def resolved_running(root: str) -> bool:
    """systemd-resolved serves this system (only meaningful for the real root)."""
    return root == "/" and _exists(root, "/run/systemd/resolve/io.systemd.Resolve")


def load_state(path: str) -> AppliedState | None:
    """The last applied state; None if there is none. ValueError if it is corrupt."""
    try:
        with open(path, encoding="utf-8") as fp:
            text = fp.read(_MAX_CONFIG_BYTES)
    except FileNotFoundError:
        return None
    return state_from_json(text)


def state_text(path: str) -> str | None:
    """The state file's text, None if it cannot be read (then it differs from any state)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fp:
            return fp.read(_MAX_CONFIG_BYTES)
    except OSError:
        return None


def save_state(path: str, state: AppliedState) -> None:
    # 0600: it keeps copies of replaced config files, which may hold secrets.
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    atomic_write(path, state_to_json(state), 0o600)
