"""Offline migration of a container group in the two-node cluster (scripts/pcmk/two-node.sh),
under Pacemaker, from a main.cf exported with ``kvmguest export pacemaker``:

* ``ocf:kvmguest:DockerDaemon`` runs Podman's API service on both nodes as a clone (a
  ``Parallel = 1`` group), each node on its own storage and socket (``Attr@node`` values);
* ``ocf:kvmguest:DockerContainer`` runs a busybox container on node1, ordered after and
  colocated with the engine clone; its data directory is bind-mounted from the nodes'
  shared storage;
* ``crm_resource --move`` to node2: the container stops on node1 and starts on node2 from
  the same image and the same data: what was written on node1 is read on node2; and back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import TwoNodeCluster, wait_for
from conftest import unavailable
from podman_nodes import PodmanNodes, missing_podman
from tests.docker.engines import IMAGE

pytestmark = [pytest.mark.pacemaker, pytest.mark.docker]

NODES = ("node1", "node2")
CONTAINER_RES = "web"
DAEMON_RES = "podman"
# The container's own command notes each start in the shared data directory.
COMMAND = "trap 'exit 0' TERM; echo started >> /data/log; while true; do sleep 1; done"


def _list(words: list[str]) -> str:
    return "{ " + ", ".join(f'"{w}"' for w in words) + " }"


def main_cf(engines: PodmanNodes, data: Path, name: str) -> str:
    local = "".join(
        f'        DockerHost@{n} = "{engines.host(n)}"\n'
        f"        DaemonOptions@{n} = {_list(engines.daemon_options(n))}\n"
        for n in NODES
    )
    hosts = "".join(f'        DockerHost@{n} = "{engines.host(n)}"\n' for n in NODES)
    return f"""\
cluster pcmk ( )
system node1 ( )
system node2 ( )
group engine (
    SystemList = {{ node1 = 0, node2 = 0 }}
    AutoStartList = {{ node1, node2 }}
    Parallel = 1
    )
    DockerDaemon {DAEMON_RES} (
        Engine = podman
        DaemonCommand = "{engines.daemon_command()}"
{local}        DelayAfterOnline = 60
        MonitorInterval = 10
        )
group app (
    SystemList = {{ node1 = 0, node2 = 1 }}
    AutoStartList = {{ node1 }}
    )
    DockerContainer {CONTAINER_RES} (
        ContainerName = {name}
        Image = "{IMAGE}"
        Engine = podman
{hosts}        Command = {_list(["/bin/sh", "-c", COMMAND])}
        Volumes = {{ "{data}:/data" }}
        Network = none
        StopTimeout = 5
        RemoveOnOffline = 1
        MonitorInterval = 10
        )
    requires group engine online local firm
"""


@pytest.fixture(scope="session")
def podman_installed() -> None:
    """Checked before the cluster starts: without Podman, skip (fail in CI) at once."""
    reasons = missing_podman()
    if reasons:
        unavailable("Podman unavailable in the test nodes: " + "; ".join(reasons))


@pytest.fixture
def node_podman(
    podman_installed: None, two_node: TwoNodeCluster, ocf_agent: Path
) -> Iterator[PodmanNodes]:
    """A Podman storage per node with the test image in it; the OCF agents installed."""
    for agent in ("DockerDaemon", "DockerContainer"):
        assert (ocf_agent.parent / agent).exists(), f"kvmguest ocf install wrote no {agent}"
    engines = PodmanNodes(two_node)
    try:
        for node in NODES:
            engines.import_image(node)
        yield engines
    finally:
        # Stop the resources (the container first, then the engines) before removing
        # their storage; then whatever is left.
        try:
            two_node.reset(timeout=180)
        finally:
            engines.cleanup()


@pytest.fixture
def shared_data(two_node: TwoNodeCluster) -> Iterator[Path]:
    """The container's data directory, on the storage both nodes see."""
    data = two_node.share / "shared" / f"kvmg-mig-{os.getpid()}"
    data.mkdir(mode=0o755)
    yield data
    shutil.rmtree(data, ignore_errors=True)


def wait_started(c: TwoNodeCluster, rsc: str, node: str) -> None:
    """Until ``rsc`` is Started on ``node`` and only there, with no action pending on it (its
    start has returned: crm_mon shows a starting resource as Started, pending="Starting")."""

    def started() -> bool:
        xml = c.run(None, "crm_mon", "-1", "--output-as=xml").stdout
        found = [r for r in ET.fromstring(xml).iter("resource") if r.get("id") == rsc]
        return len(found) == 1 and all(
            r.get("role") == "Started"
            and r.get("pending") is None
            and [n.get("name") for n in r.findall("node")] == [node]
            for r in found
        )

    wait_for(started, 120, what=f"{rsc} Started on {node}")


def _exported_xml(cfg: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "kvmguest", "export", "pacemaker", "-c", str(cfg),
         "--format", "xml"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "not exported" not in proc.stderr, proc.stderr
    return proc.stdout


def test_container_group_moves_with_its_data_to_the_other_node(
    two_node: TwoNodeCluster, node_podman: PodmanNodes, shared_data: Path, tmp_path: Path
) -> None:
    c, engines = two_node, node_podman
    name = f"kvmg-mig-{os.getpid()}"
    cfg = tmp_path / "main.cf"
    cfg.write_text(main_cf(engines, shared_data, name))
    exported = _exported_xml(cfg)

    # The export: the engine as a clone, the container ordered after it and with it.
    root = ET.fromstring(exported.split("-->", 1)[1])
    clone = root.find("./resources/clone")
    assert clone is not None and [p.get("type") for p in clone.iter("primitive")] == [
        "DockerDaemon"
    ]
    clone_id = clone.get("id", "")
    orders = [(o.get("first"), o.get("then")) for o in root.iter("rsc_order")]
    colocations = [(o.get("rsc"), o.get("with-rsc")) for o in root.iter("rsc_colocation")]
    assert orders == [(clone_id, CONTAINER_RES)]
    assert colocations == [(CONTAINER_RES, clone_id)]

    c.run("node1", "cibadmin", "--modify", "--allow-create", "--scope", "configuration",
          "--xml-pipe", input_text=exported)  # fmt: skip

    # 1. One engine per node, the container on node1 (SystemList priority 0).
    c.wait_running(DAEMON_RES, NODES, timeout=120)
    wait_started(c, CONTAINER_RES, "node1")
    assert engines.state("node1", name) == "running"
    assert engines.state("node2", name) == "absent"

    # 2.-4. Data written inside the container on one node, into the shared directory; the
    #       group moved (stopped there, started on the other node from the same image and
    #       data); the data read inside the container on the other node. Both ways.
    expected = ["started"]
    for source, target in (("node1", "node2"), ("node2", "node1")):
        token = f"written on {source} at {time.time():.3f}"
        engines.podman(source, "exec", name, "/bin/sh", "-c", f"echo '{token}' >> /data/log")
        expected += [token, "started"]

        c.move(CONTAINER_RES, target)
        wait_started(c, CONTAINER_RES, target)
        assert engines.state(target, name) == "running"
        assert engines.state(source, name) == "absent"  # stopped and removed (RemoveOnOffline)
        assert sorted(c.where(DAEMON_RES)) == list(NODES)  # the engines stay where they are

        log = engines.podman(target, "exec", name, "cat", "/data/log").splitlines()
        assert log == expected, log
        c.clear(CONTAINER_RES)

    st = c.status()
    assert not st.failures, st.failures
    assert c.where(CONTAINER_RES) == ("node1",)  # stickiness: it stays after --clear
