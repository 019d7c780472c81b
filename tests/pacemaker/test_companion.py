"""The Pacemaker companion (``kvmguest agent --pacemaker``) in the two-node cluster.

* with the companion on both nodes and a 60 s recurring monitor, ``kill -9`` of the guest's
  QEMU is reported at once (``crm_resource --fail``): the fail count rises once, and the guest
  runs again long before the first monitor could have run;
* a planned live migration (``crm_resource --move``) both ways and a planned stop report
  nothing: the fail count stays 0;
* with the companion stopped, the monitors fall back to the direct path: a crash is found by
  the recurring monitor (its failed op is in the CIB), as without a companion;
* with libvirtd stopped under a running guest, the monitor answers 190 through the
  companion, nothing is reported, nothing is stopped; the QEMU's own death then is
  reported (once), and Pacemaker recovers the guest on the other node;
* the companion's socket refuses other users, and the companion refuses to run beside a
  managing ``kvmguest agent``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import ClusterError, TwoNodeCluster, wait_for
from test_kvmguest_two_node import Guest, domstate, monitor_recorded, qemu_pid
from tests.system.guests import GUEST_UP, console_offset, console_text, domain_xml, wait_for_console

pytestmark = [pytest.mark.pacemaker, pytest.mark.system]

RES = "cmpvm"
SOCKET = "/run/kvmguest/pacemaker.sock"
CLIENT = str(
    Path(__file__).resolve().parents[2] / "src" / "kvmguest" / "ocf" / "companion_client.py"
)


@pytest.fixture
def guest(pcmk_libvirt: TwoNodeCluster) -> Iterator[Guest]:
    shared = pcmk_libvirt.share / "shared"
    g = Guest(f"kvmg-cmp-{os.getpid()}-{os.urandom(2).hex()}", shared)
    g.xml.write_text(domain_xml(g.name, "cooperative", serial_log=g.console))
    yield g
    for node in pcmk_libvirt.live_nodes():
        for cmd in (["destroy", g.name], ["undefine", g.name]):
            pcmk_libvirt.run(node, "virsh", "-c", "qemu:///system", *cmd, check=False)
    for path in (g.xml, g.console):
        path.unlink(missing_ok=True)


class Companions:
    """The companion in each node's namespaces (its own /run, PID namespace and CIB)."""

    def __init__(self, cluster: TwoNodeCluster, logs: Path) -> None:
        self.c = cluster
        self.logs = logs
        self.pids: dict[str, str] = {}

    def start(self, node: str) -> None:
        log = self.logs / f"companion-{node}.log"
        argv = f"{sys.executable} -m kvmguest -v agent --pacemaker"
        out = self.c.run(node, "sh", "-c", f"setsid {argv} >>{log} 2>&1 </dev/null & echo $!")
        self.pids[node] = out.stdout.strip()
        starts = self.log(node).count("companion running on node")
        # Up once it has read the CIB and says what it watches (logged at -v).
        wait_for(lambda: self.log(node).count("companion running on node") > starts, 60,
                 what=f"the companion on {node}")  # fmt: skip

    def stop(self, node: str) -> None:
        pid = self.pids.pop(node, None)
        if pid is None:
            return
        self.c.run(node, "kill", pid, check=False)
        wait_for(lambda: self.c.run(node, "kill", "-0", pid, check=False).returncode != 0,
                 30, what=f"the companion on {node} gone")  # fmt: skip

    def status(self, node: str) -> dict[str, object] | None:
        code = (
            "import json, sys; sys.path.insert(0, sys.argv[1]); import companion_client as c; "
            f"print(json.dumps(c.ask({SOCKET!r}, {{'cmd': 'status'}}, 5)))"
        )
        proc = self.c.run(node, sys.executable, "-I", "-S", "-c", code,
                          str(Path(CLIENT).parent), check=False)  # fmt: skip
        if proc.returncode != 0:
            return None
        reply = json.loads(proc.stdout or "null")
        return reply if isinstance(reply, dict) else None

    def watched_pid(self, node: str, rid: str) -> int | None:
        st = self.status(node)
        for r in st.get("resources", []) if st else []:  # type: ignore[union-attr]
            if isinstance(r, dict) and r.get("resource") == rid:
                pid = r.get("pid")
                return pid if isinstance(pid, int) else None
        return None

    def wait_watching(self, node: str, pid: int) -> None:
        try:
            wait_for(lambda: self.watched_pid(node, RES) == pid, 30,
                     what=f"the companion on {node} watching QEMU {pid}")  # fmt: skip
        except ClusterError as e:
            raise AssertionError(f"{e}; status {self.status(node)}; log:\n{self.log(node)}") from e

    def log(self, node: str) -> str:
        with contextlib.suppress(OSError):
            return (self.logs / f"companion-{node}.log").read_text()
        return ""


@pytest.fixture
def companions(
    two_node: TwoNodeCluster, pcmk_libvirt: TwoNodeCluster, ocf_agent: Path
) -> Iterator[Companions]:
    logs = two_node.share / "shared"
    comp = Companions(two_node, logs)
    try:
        for node in two_node.nodes:
            comp.start(node)
        yield comp
    finally:
        for node in list(comp.pids):
            with contextlib.suppress(ClusterError):
                comp.stop(node)
        for node in two_node.nodes:
            (logs / f"companion-{node}.log").unlink(missing_ok=True)


def add_guest(c: TwoNodeCluster, g: Guest, monitor: str) -> None:
    """The guest as a migratable primitive preferring node1, with a recurring monitor."""
    params = {
        "guest_name": g.name,
        "guest_config_file_path": str(g.xml),
        "delay_after_guest_offline": "10",
        "libvirt_uri_template": f"qemu+unix:///system?socket={c.share}/{{system}}/libvirt-sock",
        "migrate_data_uri_template": f"unix://{c.share}/{{system}}/mig.sock",
    }
    nv = "".join(f'<nvpair id="{RES}-ia-{k}" name="{k}" value="{v}"/>' for k, v in params.items())
    ops = "".join(
        f'<op id="{RES}-{name}" name="{name}" interval="{interval}" timeout="60s"/>'
        for name, interval in (("start", "0s"), ("stop", "0s"), ("monitor", monitor),
                               ("migrate_to", "0s"), ("migrate_from", "0s"))
    )  # fmt: skip
    c.cib_create(
        "resources",
        f'<primitive id="{RES}" class="ocf" provider="kvmguest" type="KVMGuest">'
        f'<instance_attributes id="{RES}-ia">{nv}</instance_attributes>'
        f'<meta_attributes id="{RES}-ma"><nvpair id="{RES}-ma-am" name="allow-migrate" '
        f'value="true"/></meta_attributes><operations>{ops}</operations></primitive>',
    )
    c.prefer(RES, "node1")


def test_a_crash_is_reported_at_once_and_planned_changes_never(
    companions: Companions, guest: Guest
) -> None:
    c = companions.c
    add_guest(c, guest, "60s")
    c.wait_running(RES, "node1", timeout=120)
    started = time.monotonic()  # the first recurring monitor runs 60 s after the start
    wait_for_console(guest.console, GUEST_UP, 120)
    pid = qemu_pid(c, "node1", guest.name)
    assert pid is not None
    companions.wait_watching("node1", pid)

    # kill -9: reported at once, recovered in place, counted once.
    mark = console_offset(guest.console)
    c.run("node1", "kill", "-9", str(pid))
    wait_for(lambda: c.fail_count(RES, "node1") >= 1, 60, what="the failure counted")
    wait_for(
        lambda: (qemu_pid(c, "node1", guest.name) or pid) != pid and c.where(RES) == ("node1",),
        60,
        what="the guest restarted on node1",
    )
    recovered = time.monotonic()
    assert recovered - started < 55, "recovered only at the recurring monitor"
    wait_for_console(guest.console, GUEST_UP, 120, offset=mark)
    # Reported once (one crm_resource --fail: one injected "asyncmon" failure, nothing
    # found by a monitor). Pacemaker 2.1.5 itself adds 2 to the fail count for that one
    # injected failure (its attrd log: "(unset) -> 1", "1 -> 2" for the same op result):
    # docs/pacemaker.md says what that means for migration-threshold.
    st = c.status("node2")
    assert companions.log("node1").count("reporting it to Pacemaker") == 1, companions.log("node1")
    assert [f.task for f in st.failures] == ["asyncmon"], st.failures  # crm_resource --fail
    assert 1 <= st.fail_count(RES, "node1") <= 2
    assert not monitor_recorded(c, RES, "node1", 7)  # no monitor found it
    new = qemu_pid(c, "node1", guest.name)
    assert new is not None
    companions.wait_watching("node1", new)
    c.cleanup(RES)
    wait_for(lambda: c.fail_count(RES, "node1") == 0, 30, what="the fail count cleared")

    # Planned: a live migration both ways, then a stop. Nothing is reported.
    for source, target in (("node1", "node2"), ("node2", "node1")):
        mark = console_offset(guest.console)
        c.move(RES, target)
        c.wait_running(RES, target, timeout=120)
        wait_for(lambda t=target: domstate(c, t, guest.name) == "running", 60,  # type: ignore[misc]
                 what=f"the guest running on {target}")  # fmt: skip
        assert console_text(guest.console, mark).count(GUEST_UP) == 0  # migrated, not booted
        assert domstate(c, source, guest.name) != "running"
        c.clear(RES)
    # A companion (re)started while the guest runs learns of it from the CIB.
    companions.stop("node1")
    companions.start("node1")
    assert "watching 1 resource(s)" in companions.log("node1"), companions.log("node1")
    pid = qemu_pid(c, "node1", guest.name)
    assert pid is not None and companions.watched_pid("node1", RES) == pid

    c.run("node2", "crm_resource", "--resource", RES, "--meta", "--set-parameter",
          "target-role", "--parameter-value", "Stopped")  # fmt: skip
    c.wait_stopped(RES, timeout=120, node="node2")
    st = c.status("node2")
    assert st.failures == (), st.failures
    assert all(st.fail_count(RES, n) == 0 for n in c.nodes)
    # One report in all: the crash; none for the migrations or the stop.
    assert companions.log("node1").count("reporting it to Pacemaker") == 1, companions.log("node1")
    assert "reporting it to Pacemaker" not in companions.log("node2")


def test_without_the_companion_monitors_fall_back(companions: Companions, guest: Guest) -> None:
    c = companions.c
    for node in c.nodes:
        companions.stop(node)
    add_guest(c, guest, "5s")
    c.wait_running(RES, "node1", timeout=120)
    wait_for_console(guest.console, GUEST_UP, 120)
    pid = qemu_pid(c, "node1", guest.name)
    assert pid is not None
    c.run("node1", "kill", "-9", str(pid))
    wait_for(lambda: c.fail_count(RES, "node1") >= 1, 90, what="the failure counted")
    wait_for(lambda: (qemu_pid(c, "node1", guest.name) or pid) != pid, 90,
             what="the guest restarted")  # fmt: skip
    # Found by Pacemaker's own recurring monitor, through the direct path.
    assert monitor_recorded(c, RES, "node1", 7)  # the direct path found it
    assert [f.task for f in c.status("node2").failures] == ["monitor"]


def test_libvirtd_down_is_degraded_and_reports_nothing(
    companions: Companions, guest: Guest
) -> None:
    c = companions.c
    add_guest(c, guest, "3s")
    libvirtd_down = False
    try:
        c.wait_running(RES, "node1", timeout=120)
        wait_for_console(guest.console, GUEST_UP, 120)
        pid = qemu_pid(c, "node1", guest.name)
        assert pid is not None
        companions.wait_watching("node1", pid)
        daemons = c.run("node1", "pidof", "libvirtd").stdout.split()
        c.run("node1", "kill", "-9", *daemons)
        libvirtd_down = True

        # The monitor as Pacemaker runs it, through the wrapper and the companion: 190.
        env = {"OCF_ROOT": "/usr/lib/ocf", "OCF_RESOURCE_INSTANCE": RES,
               "OCF_RESOURCE_TYPE": "KVMGuest", "OCF_RESKEY_CRM_meta_interval": "3000",
               **{f"OCF_RESKEY_{k}": v for k, v in _params(c, guest).items()}}  # fmt: skip
        argv = ["env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-I", "-S",
                CLIENT, "monitor"]  # fmt: skip
        wait_for(lambda: c.run("node1", *argv, check=False).returncode == 190, 30,
                 what="the companion answering 190")  # fmt: skip

        wait_for(lambda: monitor_recorded(c, RES, "node1", 190), 30,
                 what="a degraded monitor result in the CIB")  # fmt: skip
        st = c.status("node2")
        assert st.where(RES) == ("node1",)
        # 190 is listed among crm_mon's "failures" but is no failure: no fail count.
        assert st.fail_count(RES, "node1") == 0
        assert [f for f in st.failures if f.exitcode != 190] == [], st.failures
        assert qemu_pid(c, "node1", guest.name) == pid
        assert "reporting it to Pacemaker" not in companions.log("node1")

        # Now the QEMU itself dies, libvirtd still down: that is a failure (seen through the
        # pidfd), reported once; Pacemaker stops it (the stop works without libvirtd) and,
        # node1's libvirtd being down, starts it on node2.
        c.run("node1", "kill", "-9", str(pid))
        wait_for(lambda: "reporting it to Pacemaker" in companions.log("node1"), 30,
                 what="the death reported")  # fmt: skip
        c.wait_running(RES, "node2", timeout=180, node="node2")
        wait_for(lambda: domstate(c, "node2", guest.name) == "running", 60,
                 what="the guest running on node2")  # fmt: skip
        assert companions.log("node1").count("reporting it to Pacemaker") == 1
    finally:
        if libvirtd_down:
            with contextlib.suppress(ClusterError):
                c.start_libvirtd("node1")


def _params(c: TwoNodeCluster, g: Guest) -> dict[str, str]:
    return {
        "guest_name": g.name,
        "guest_config_file_path": str(g.xml),
        "delay_after_guest_offline": "10",
        "libvirt_uri_template": f"qemu+unix:///system?socket={c.share}/{{system}}/libvirt-sock",
        "migrate_data_uri_template": f"unix://{c.share}/{{system}}/mig.sock",
    }


# --- on this host, without a cluster -----------------------------------------------------


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def test_the_companion_socket_refuses_other_users_and_a_managing_agent(tmp_path: Path) -> None:
    # A directory user nobody can reach (pytest's tmp_path is mode 0700).
    sock_dir = Path(tempfile.mkdtemp(prefix="kvmguest-companion-", dir="/tmp"))
    os.chmod(sock_dir, 0o755)
    sock = sock_dir / "pacemaker.sock"
    proc = _start([sys.executable, "-m", "kvmguest", "--system", "nodeX", "agent", "--pacemaker",
                   "--socket", str(sock), "--agent-socket", str(sock_dir / "none.sock")],
                  tmp_path / "companion.log")  # fmt: skip
    try:
        wait_for(lambda: sock.exists(), 60, what="the companion's socket")
        code = (
            "import json, sys; sys.path.insert(0, sys.argv[1]); import companion_client as c; "
            "print(json.dumps(c.ask(sys.argv[2], {'cmd': 'status'}, 5)))"
        )
        argv = [sys.executable, "-I", "-S", "-c", code, str(Path(CLIENT).parent), str(sock)]
        mine = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
        assert json.loads(mine.stdout)["mode"] == "pacemaker"
        # Even with the socket's mode opened up by mistake, the peer's credentials refuse.
        os.chmod(sock, 0o666)
        theirs = subprocess.run(["runuser", "-u", "nobody", "--", *argv], capture_output=True,
                                text=True, timeout=30, check=False)  # fmt: skip
        assert json.loads(theirs.stdout) == {"ok": False, "error": "permission denied"}, theirs

        # A second companion pointed at this one as "the agent" runs; a managing agent's
        # socket makes it refuse (here: the managing daemon on an empty test:/// config).
        cfg = tmp_path / "main.cf"
        cfg.write_text("cluster c ( )\nsystem nodeX ( )\n")
        agent_sock = sock_dir / "agent.sock"
        agent = _start([sys.executable, "-m", "kvmguest", "--system", "nodeX", "--connect",
                        "test:///default", "agent", "-c", str(cfg), "--socket", str(agent_sock),
                        "--db", str(tmp_path / "agent.db"), "--no-autostart"],
                       tmp_path / "agent.log")  # fmt: skip
        try:
            wait_for(lambda: agent_sock.exists(), 60, what="the managing agent's socket")
            refused = subprocess.run(
                [sys.executable, "-m", "kvmguest", "--system", "nodeX", "agent", "--pacemaker",
                 "--socket", str(sock_dir / "second.sock"), "--agent-socket", str(agent_sock)],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert refused.returncode == 1, refused
            assert "a managing kvmguest agent runs on this node" in refused.stderr
            assert not (sock_dir / "second.sock").exists()
        finally:
            agent.terminate()
            agent.wait(60)
    finally:
        proc.terminate()
        assert proc.wait(60) == 0, (tmp_path / "companion.log").read_text()
        assert not sock.exists()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_the_companion_follows_the_notifications(tmp_path: Path) -> None:
    """What the companion watches, from the OCF agent's notifications alone (on libvirt's
    test:///default driver, whose guest "test" runs): a planned stop ends the watch, a
    late monitor does not bring it back, and a guest claimed by a new resource is watched
    as that resource only."""
    sock = tmp_path / "pacemaker.sock"
    proc = _start([sys.executable, "-m", "kvmguest", "--system", "nodeX", "agent", "--pacemaker",
                   "--socket", str(sock), "--agent-socket", str(tmp_path / "none.sock")],
                  tmp_path / "companion.log")  # fmt: skip
    sys.path.insert(0, str(Path(CLIENT).parent))
    try:
        import companion_client as cc

        def env(rid: str, **extra: str) -> dict[str, str]:
            return {"KVMGUEST_COMPANION_SOCKET": str(sock), "OCF_RESOURCE_TYPE": "KVMGuest",
                    "OCF_RESOURCE_INSTANCE": rid, "OCF_RESKEY_guest_name": "test",
                    "OCF_RESKEY_hypervisor": "test:///default", **extra}  # fmt: skip

        def watched() -> list[str]:
            st = cc.ask(str(sock), {"cmd": "status"}, 5)
            assert st is not None and st["ok"], st
            return sorted(str(r["resource"]) for r in st["resources"])  # type: ignore[union-attr]

        wait_for(lambda: sock.exists(), 60, what="the companion's socket")
        monitor = {"OCF_RESKEY_CRM_meta_interval": "10000"}
        assert cc.monitor(env("a", **monitor)) == cc.FALLBACK  # not watched: direct path
        cc.notify(env("a"), "start", "pre")
        cc.notify(env("a"), "start", "post", 0)
        assert watched() == ["a"]
        assert cc.monitor(env("a", **monitor)) == 0  # answered by the companion
        assert cc.monitor(env("a")) == cc.FALLBACK  # a probe: always the direct path
        cc.notify(env("a"), "stop", "pre")
        assert watched() == []
        cc.notify(env("a", **monitor), "monitor", "post", 0)  # a late monitor's "running"
        assert watched() == []
        cc.notify(env("a"), "start", "post", 1)  # a failed start watches nothing
        assert watched() == []
        cc.notify(env("a"), "start", "pre")
        cc.notify(env("a"), "start", "post", 0)
        cc.notify(env("b"), "start", "pre")
        cc.notify(env("b"), "start", "post", 0)  # the same guest, now resource b
        assert watched() == ["b"]
        cc.notify(env("c", **monitor), "monitor", "post", 0)  # a companion catching up
        assert watched() == ["c"]
    finally:
        sys.path.remove(str(Path(CLIENT).parent))
        proc.terminate()
        assert proc.wait(60) == 0, (tmp_path / "companion.log").read_text()
