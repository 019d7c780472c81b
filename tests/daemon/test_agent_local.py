"""The agent daemon on libvirt's embedded test driver (``test:///default``, in-process: no
libvirtd needed): ``--check``, control-socket permissions, the CLI commands."""

from __future__ import annotations

import grp
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import PYTHON, Agent

# test:///default holds one running domain, "test".
MAIN_CF = """\
cluster c ( )
system host1 ( )
system host2 ( )
group g (
    SystemList = { host1 = 0, host2 = 1 }
    AutoStartList = { host1 }
    )
    KVMGuest web (
        GuestName = test
        MonitorInterval = 5
        OfflineMonitorInterval = 10
        )
group elsewhere ( SystemList = { host2 = 0 } )
    KVMGuest other ( GuestName = other )
"""

CLIENT = """\
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect:", e.strerror); sys.exit(0)
s.sendall(b'{"cmd": "status"}\\n')
print(s.makefile().readline().strip())
"""


@pytest.fixture
def agent() -> Iterator[Agent]:
    d = Path(tempfile.mkdtemp(prefix="kvmguest-agent-"))
    d.chmod(0o755)  # traversable by other users: the socket's own mode must refuse them
    a = Agent(d, uri="test:///default")
    a.cfg.write_text(MAIN_CF)
    try:
        yield a
    finally:
        a.stop()
        shutil.rmtree(d, ignore_errors=True)


def _as_user(uid: int, gid: int, sock: Path) -> str:
    """Talk to the socket as another user (system python: /root is not theirs to read)."""
    if os.geteuid() != 0 or not shutil.which("setpriv") or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root, setpriv and /usr/bin/python3")
    r = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
         "/usr/bin/python3", "-c", CLIENT, str(sock)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_check_validates_without_starting(agent: Agent) -> None:
    r = subprocess.run([*agent.argv("--check")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "valid; system host1 runs group(s): g" in r.stdout
    assert "elsewhere" not in r.stdout
    assert not agent.socket.exists() and not agent.db.exists()

    agent.cfg.write_text(MAIN_CF.replace("GuestName = test", "GuestName = test\n Bogus = 1"))
    r = subprocess.run([*agent.argv("--check")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"{agent.cfg}:" in r.stderr and "not starting" in r.stderr
    assert not agent.socket.exists() and not agent.db.exists()


def test_an_invalid_config_starts_nothing(agent: Agent) -> None:
    agent.cfg.write_text("group g ( SystemList = { host1 = 0 } \n")
    r = subprocess.run(agent.argv(), capture_output=True, text=True, timeout=60)
    # 78 (EX_CONFIG): the unit's RestartPreventExitStatus, so systemd does not loop on it.
    assert r.returncode == 78 and "not starting" in r.stderr
    assert not agent.socket.exists()


def test_socket_is_0660_and_other_users_are_refused(agent: Agent) -> None:
    agent.start()
    st = os.stat(agent.socket)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_uid == 0
    # The file mode stops them at connect() ...
    assert _as_user(65534, 65534, agent.socket) == "connect: Permission denied"
    # ... and if someone loosens it, the daemon still checks the peer (SO_PEERCRED).
    agent.socket.chmod(0o666)
    reply = json.loads(_as_user(65534, 65534, agent.socket))
    assert reply == {"ok": False, "error": "permission denied"}


def test_socket_group_members_are_let_in(agent: Agent) -> None:
    try:
        gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        pytest.skip("no kvm group")
    agent.start("--socket-group", "kvm")
    assert os.stat(agent.socket).st_gid == gid
    reply = json.loads(_as_user(65534, gid, agent.socket))
    assert reply["ok"] is True and reply["system"] == "host1"


def test_cli_status_history_and_operations(agent: Agent) -> None:
    agent.start()
    assert agent.wait_state("web", "ONLINE", timeout=30) == "ONLINE"
    st = agent.cli_json("status")
    assert st["connected"] is True and st["groups"] == {"g": {"state": "ONLINE", "frozen": False}}
    assert [r["resource"] for r in st["resources"]] == ["web"]  # "other" is not ours
    (web,) = st["resources"]
    assert web["confidence"] == 100 and web["guest"] == "test" and web["frozen"] is False

    r = agent.cli("status", "nosuch")
    assert r.returncode == 1 and "no resource 'nosuch' runs on host1" in r.stderr

    r = agent.cli("group", "freeze", "g")
    assert r.returncode == 0, r.stderr
    assert agent.status("web")["frozen"] is True
    r = agent.cli("group", "offline", "g")
    assert r.returncode == 1 and "frozen" in r.stderr
    assert agent.cli("group", "unfreeze", "g").returncode == 0

    r = agent.cli("group", "offline", "g")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "group g: OFFLINE"
    assert agent.status("web")["confidence"] == 0
    r = agent.cli("resource", "online", "web")
    assert r.returncode == 0, r.stderr
    agent.wait_state("web", "ONLINE", timeout=30)
    r = agent.cli("resource", "probe", "web")
    assert r.returncode == 0, r.stderr

    r = agent.cli("group", "switch", "g")
    assert r.returncode == 2 and "switch needs --to" in r.stderr
    r = agent.cli("group", "switch", "g", "--to", "nowhere")
    assert r.returncode == 1 and "nowhere is not in its SystemList" in r.stderr
    r = agent.cli("group", "switch", "g", "--to", "host1")
    assert r.returncode == 1 and "host1 is this system" in r.stderr
    r = agent.cli("resource", "action", "web", "nosuch")
    assert r.returncode == 1 and "not supported" in r.stderr

    hist = agent.cli_json("history", "web")["history"]
    kinds = [(h["kind"], h["detail"]) for h in hist]
    assert ("request", "offline") in kinds and ("request", "online") in kinds
    assert ("request", "freeze") in kinds and ("request", "unfreeze") in kinds
    text = agent.cli("history", "-n", "5", "web")
    assert text.returncode == 0 and len(text.stdout.splitlines()) == 5


def test_ready_is_notified_to_systemd_once_the_socket_answers(agent: Agent) -> None:
    """Type=notify in packaging/systemd/kvmguest-agent.service."""
    notify = agent.dir / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(notify))
        s.settimeout(60)
        agent.start(env={"NOTIFY_SOCKET": str(notify)})
        assert s.recv(100) == b"READY=1"
    assert agent.call("status")["ok"] is True


def test_no_agent_is_a_one_line_error(tmp_path: Path) -> None:
    r = subprocess.run(
        [PYTHON, "-m", "kvmguest", "status", "--socket", str(tmp_path / "none.sock")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1
    want = f"kvmguest: no kvmguest agent listening at {tmp_path}/none.sock (is it running?)"
    assert r.stderr.strip() == want
