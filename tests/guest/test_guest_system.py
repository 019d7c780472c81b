"""Filesystem side under a temporary root: backend facts, file changes, the state file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kvmguest.guest import system
from kvmguest.guest.backends import BackendFacts
from kvmguest.guest.fsutil import atomic_write
from kvmguest.guest.plan import (
    AppliedState,
    CurrentFile,
    FileRemove,
    FileSymlink,
    FileWrite,
    Original,
)


def touch(root: Path, path: str, text: str = "") -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


@pytest.mark.parametrize(
    ("files", "facts"),
    [
        ([], BackendFacts()),
        (
            ["/etc/systemd/system/multi-user.target.wants/NetworkManager.service"],
            BackendFacts(networkmanager=True),
        ),
        (["/run/NetworkManager/NetworkManager.pid"], BackendFacts(networkmanager=True)),
        (
            ["/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"],
            BackendFacts(networkd=True),
        ),
        (["/etc/network/interfaces"], BackendFacts()),  # no ifup: ifupdown is not installed
        (["/etc/network/interfaces", "/sbin/ifup"], BackendFacts(ifupdown=True)),
        (["/etc/sysconfig/network-scripts/ifcfg-lo"], BackendFacts(ifcfg=True)),
    ],
)
def test_gather_facts(tmp_path: Path, files: list[str], facts: BackendFacts) -> None:
    for path in files:
        touch(tmp_path, path)
    assert system.gather_facts(str(tmp_path), "eth0") == facts


def test_gather_facts_sees_the_device_in_interfaces(tmp_path: Path) -> None:
    touch(tmp_path, "/usr/sbin/ifup")
    touch(
        tmp_path,
        "/etc/network/interfaces",
        "auto eth0\n# iface eth1 inet dhcp\niface eth0 inet dhcp\n",
    )
    assert system.gather_facts(str(tmp_path), "eth0").ifupdown_has_device
    assert not system.gather_facts(str(tmp_path), "eth1").ifupdown_has_device


def test_read_current(tmp_path: Path) -> None:
    touch(tmp_path, "/etc/a", "A")
    os.chmod(tmp_path / "etc/a", 0o640)
    os.symlink("../run/x", tmp_path / "etc/link")
    current = system.read_current(str(tmp_path), ["/etc/a", "/etc/link", "/etc/none"])
    assert current == {
        "/etc/a": CurrentFile("file", "A", 0o640),
        "/etc/link": CurrentFile("symlink", "../run/x"),
        "/etc/none": CurrentFile("absent"),
    }


def test_file_actions(tmp_path: Path) -> None:
    root = str(tmp_path)
    system.apply_file_action(root, FileWrite("/etc/NetworkManager/x.nmconnection", "k\n", 0o600))
    written = tmp_path / "etc/NetworkManager/x.nmconnection"
    assert written.read_text() == "k\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    os.symlink("/outside/target", tmp_path / "etc/resolv.conf")
    system.apply_file_action(root, FileWrite("/etc/resolv.conf", "nameserver 192.0.2.53\n", 0o644))
    # The symlink was replaced, not followed out of the root.
    assert not os.path.islink(tmp_path / "etc/resolv.conf")
    assert not os.path.exists("/outside/target")
    system.apply_file_action(root, FileSymlink("/etc/resolv.conf", "../run/resolv.conf"))
    assert os.readlink(tmp_path / "etc/resolv.conf") == "../run/resolv.conf"
    system.apply_file_action(root, FileRemove("/etc/NetworkManager/x.nmconnection"))
    system.apply_file_action(root, FileRemove("/etc/NetworkManager/x.nmconnection"))
    assert not written.exists()
    assert sorted(os.listdir(tmp_path / "etc")) == ["NetworkManager", "resolv.conf"]


def test_atomic_write_keeps_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, "old")
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing-dir" / "f", "new")
    with pytest.raises(TypeError):
        atomic_write(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f"]


def test_state_file_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "var/lib/kvmguest-net-reconfig/applied.json")
    assert system.load_state(path) is None
    state = AppliedState(
        "eth0",
        "198.51.100.10",
        24,
        None,
        (),
        (),
        "ifcfg",
        "file",
        files={"/etc/sysconfig/network-scripts/ifcfg-eth0": Original("file", "DEVICE=eth0\n")},
    )
    system.save_state(path, state)
    assert system.load_state(path) == state
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    Path(path).write_text("{")
    with pytest.raises(ValueError):
        system.load_state(path)
