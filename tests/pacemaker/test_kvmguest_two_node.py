"""ocf:kvmguest:KVMGuest in the two-node cluster (scripts/pcmk/two-node.sh), with real TCG
guests in each node's own libvirtd, their XML and console on the nodes' shared storage.

* the configuration exported from a main.cf, loaded with cibadmin: the guest comes online
  on the preferred node; kill -9 of its QEMU is recovered (and counted); ``crm_resource
  --move`` live-migrates it both ways (one boot in its console: it kept running); a crash of
  the preferred node brings it up on the other one;
* libvirtd down under a running guest: the monitor does not say "not running" (no restart,
  no fail count: VirtualDomain's fencing cascade, ClusterLabs resource-agents #546) and stop
  still stops the guest (#385).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cluster import ClusterError, TwoNodeCluster, wait_for
from tests.system.guests import GUEST_UP, console_offset, console_text, domain_xml, wait_for_console

pytestmark = [pytest.mark.pacemaker, pytest.mark.system]

RES = "pcvm"
NODES = ("node1", "node2")


@dataclass
class Guest:
    name: str
    dir: Path

    @property
    def xml(self) -> Path:
        return self.dir / f"{self.name}.xml"

    @property
    def console(self) -> Path:
        return self.dir / f"{self.name}.console"


@pytest.fixture
def guest(pcmk_libvirt: TwoNodeCluster) -> Iterator[Guest]:
    shared = pcmk_libvirt.share / "shared"
    g = Guest(f"kvmg-pc-{os.getpid()}-{os.urandom(2).hex()}", shared)
    g.xml.write_text(domain_xml(g.name, "cooperative", serial_log=g.console))
    yield g
    # The next test's fixture resets the CIB (stopping the guest); here: no domain is left
    # defined in either node, and no file on the shared storage.
    for node in pcmk_libvirt.live_nodes():
        for cmd in (["destroy", g.name], ["undefine", g.name]):
            pcmk_libvirt.run(node, "virsh", "-c", "qemu:///system", *cmd, check=False)
    for path in (g.xml, g.console):
        path.unlink(missing_ok=True)


def qemu_pid(cluster: TwoNodeCluster, node: str, name: str) -> int | None:
    """Pid (in the node's PID namespace) of the guest's QEMU, from libvirt's pid file."""
    try:
        pid = int((cluster.share / node / "run" / "qemu" / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None
    alive = cluster.run(node, "kill", "-0", str(pid), check=False).returncode == 0
    return pid if alive else None


def domstate(cluster: TwoNodeCluster, node: str, name: str) -> str:
    proc = cluster.run(node, "virsh", "-c", "qemu:///system", "domstate", name, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else "undefined"


def runs_on(cluster: TwoNodeCluster, node: str, name: str) -> bool:
    return domstate(cluster, node, name) == "running"


def monitor_recorded(cluster: TwoNodeCluster, rsc: str, node: str, rc: int) -> bool:
    """A recurring monitor of ``rsc`` on ``node`` with exit code ``rc`` is in the CIB."""
    xpath = (
        f"//node_state[@uname='{node}']//lrm_resource[@id='{rsc}']"
        f"/lrm_rsc_op[@operation='monitor' and @rc-code='{rc}']"
    )
    other = next(n for n in cluster.nodes if n != node)
    return cluster.cib_query(xpath, node=other) is not None


def boots(g: Guest, offset: int = 0) -> int:
    return console_text(g.console, offset).count(GUEST_UP)


def migrated(cluster: TwoNodeCluster, source: str) -> bool:
    log = cluster.log_dir(source) / "pacemaker.log"
    with contextlib.suppress(OSError):
        return bool(re.search(rf"migrate_to operation for {RES} on {source}: ok", log.read_text()))
    return False


MAIN_CF = """\
cluster pcmk (
    LibvirtURITemplate = "qemu+unix:///system?socket={share}/{{system}}/libvirt-sock"
    MigrateDataURITemplate = "unix://{share}/{{system}}/mig.sock"
    )
system node1 ( )
system node2 ( )
group vmgrp (
    SystemList = {{ node1 = 0, node2 = 1 }}
    AutoStartList = {{ node1 }}
    )
    KVMGuest {res} (
        GuestName = {name}
        GuestConfigFilePath = "{xml}"
        DelayAfterGuestOffline = 20
        MonitorInterval = 3
        MonitorTimeout = 30
        OnlineTimeout = 60
        OfflineTimeout = 60
        MigrateTimeout = 60
        RestartLimit = 1
        )
"""


def test_exported_configuration_runs_migrates_recovers_and_fails_over(
    two_node: TwoNodeCluster, pcmk_libvirt: TwoNodeCluster, ocf_agent: Path, guest: Guest
) -> None:
    c = two_node
    cfg = guest.dir / f"{guest.name}.cf"
    cfg.write_text(MAIN_CF.format(share=c.share, res=RES, name=guest.name, xml=guest.xml))
    try:
        exported = subprocess.run(
            [sys.executable, "-m", "kvmguest", "export", "pacemaker", "-c", str(cfg),
             "--format", "xml"], capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        assert "not exported" not in exported.stderr, exported.stderr
        c.run("node1", "cibadmin", "--modify", "--allow-create", "--scope", "configuration",
              "--xml-pipe", input_text=exported.stdout)  # fmt: skip

        # 1. Online on the preferred node (SystemList priority 0, AutoStartList).
        c.wait_running(RES, "node1", timeout=120)
        wait_for_console(guest.console, GUEST_UP, 120)
        assert domstate(c, "node1", guest.name) == "running"

        # 2. kill -9 of its QEMU: the monitor (3 s) sees it, Pacemaker restarts it in place
        #    (RestartLimit 1 -> migration-threshold 2) and counts the failure.
        pid = qemu_pid(c, "node1", guest.name)
        assert pid is not None
        mark = console_offset(guest.console)
        c.run("node1", "kill", "-9", str(pid))
        wait_for(lambda: c.fail_count(RES, "node1") >= 1, 60, what="the failure counted")
        wait_for(
            lambda: (qemu_pid(c, "node1", guest.name) or pid) != pid and c.where(RES) == ("node1",),
            90,
            what="the guest restarted on node1",
        )
        wait_for_console(guest.console, GUEST_UP, 120, offset=mark)
        assert c.fail_count(RES, "node1") == 1

        # 3. crm_resource --move: live migration (migrate_to/migrate_from), both ways. The
        #    guest keeps running: no new boot in its console.
        for source, target in (("node1", "node2"), ("node2", "node1")):
            mark = console_offset(guest.console)
            c.move(RES, target)
            c.wait_running(RES, target, timeout=120)
            wait_for(functools.partial(runs_on, c, target, guest.name), 60,
                     what=f"the guest running on {target}")  # fmt: skip
            assert migrated(c, source), f"{source} -> {target} was not a live migration"
            assert boots(guest, mark) == 0, console_text(guest.console, mark)
            assert domstate(c, source, guest.name) != "running"
            c.clear(RES)
        assert c.where(RES) == ("node1",)  # stickiness: it stays after --clear

        # 4. The preferred node crashes (power loss): the guest starts on node2.
        mark = console_offset(guest.console)
        c.crash("node1")
        st = c.wait_running(RES, "node2", timeout=120, node="node2")
        assert not st.nodes["node1"].online
        wait_for_console(guest.console, GUEST_UP, 120, offset=mark)
        assert domstate(c, "node2", guest.name) == "running"
    finally:
        cfg.unlink(missing_ok=True)


def _agent_env(guest: Guest, **extra: str) -> list[str]:
    env = {
        "OCF_ROOT": "/usr/lib/ocf",
        "OCF_RESOURCE_INSTANCE": RES,
        "OCF_RESKEY_guest_name": guest.name,
        "OCF_RESKEY_guest_config_file_path": str(guest.xml),
        **extra,
    }
    return ["env", *(f"{k}={v}" for k, v in env.items())]


def test_libvirtd_down_neither_restarts_nor_blocks_stop(
    two_node: TwoNodeCluster, pcmk_libvirt: TwoNodeCluster, ocf_agent: Path, guest: Guest
) -> None:
    c = two_node
    c.add_primitive(
        RES,
        "ocf:kvmguest:KVMGuest",
        {
            "guest_name": guest.name,
            "guest_config_file_path": str(guest.xml),
            "delay_after_guest_offline": "10",
        },
        monitor_interval="2s",
        op_timeout="60s",
    )
    c.prefer(RES, "node1")
    libvirtd_down = False
    try:
        c.wait_running(RES, "node1", timeout=120)
        wait_for_console(guest.console, GUEST_UP, 120)
        pid = qemu_pid(c, "node1", guest.name)
        assert pid is not None

        # libvirtd dies under the running guest (the QEMU lives on).
        daemons = c.run("node1", "pidof", "libvirtd").stdout.split()
        c.run("node1", "kill", "-9", *daemons)
        libvirtd_down = True
        wait_for(lambda: c.run("node1", "pidof", "libvirtd", check=False).returncode != 0,
                 30, what="libvirtd gone")  # fmt: skip

        # The agent as Pacemaker runs it: a recurring monitor and a probe. Not 7.
        for extra in ({"OCF_RESKEY_CRM_meta_interval": "2000"}, {}):
            proc = c.run("node1", *_agent_env(guest, **extra), str(ocf_agent), "monitor",
                         check=False)  # fmt: skip
            assert proc.returncode == 190, proc.stdout + proc.stderr
            assert "alive" in proc.stderr

        # Pacemaker's own monitors get the same answer and leave the guest alone.
        wait_for(lambda: monitor_recorded(c, RES, "node1", 190), 30,
                 what="a degraded monitor result in the CIB")  # fmt: skip
        st = c.status("node2")
        assert st.where(RES) == ("node1",)
        assert st.fail_count(RES, "node1") == 0
        assert qemu_pid(c, "node1", guest.name) == pid

        # Stop while libvirtd is still down: it must succeed (the QEMU is killed through
        # libvirt's pid file), not fail (a failed stop is fenced).
        c.run("node2", "crm_resource", "--resource", RES, "--meta", "--set-parameter",
              "target-role", "--parameter-value", "Stopped")  # fmt: skip
        c.wait_stopped(RES, timeout=120, node="node2")
        st = c.status("node2")
        assert not [f for f in st.failures if f.task == "stop"], st.failures
        assert c.run("node1", "kill", "-0", str(pid), check=False).returncode != 0
    finally:
        if libvirtd_down:
            with contextlib.suppress(ClusterError):
                c.start_libvirtd("node1")
