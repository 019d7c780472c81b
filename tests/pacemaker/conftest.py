"""Fixtures for tests against real Pacemaker clusters (scripts/pcmk/).

Session-scoped clusters, started once and torn down at the end of the session:

* ``one_node_cluster`` -- corosync + pacemakerd on this host (``one-node.sh``).
* ``two_node_cluster`` -- node1 + node2 in their own namespaces (``two-node.sh``).

Function-scoped ``one_node`` / ``two_node`` hand out the same clusters after a reset: every
crashed node booted again, both nodes Online, no resources, no constraints, no failures.

Tests are skipped, with the reason, when not root or a binary is missing. Environment:

* ``KVMGUEST_PCMK_DC_DEADTIME`` -- dc-deadtime seeded into the CIB (default ``2s``; Pacemaker's
  own default of 20 s costs ~18 s per cluster start and buys nothing on a test machine).
* ``KVMGUEST_PCMK_REUSE=1`` -- use a cluster that is already up (``status`` succeeds) and leave
  it running at the end; otherwise any leftover is stopped first and a fresh one is started.
* ``KVMGUEST_PCMK_STATE`` / ``KVMGUEST_PCMK_SHARE`` -- passed through to the scripts.
* ``KVMGUEST_REQUIRE_SYSTEM=1`` (CI) -- a missing requirement fails the tests instead of
  skipping them.

For the kvmguest agent: ``ocf_agent`` installs ``ocf:kvmguest:KVMGuest`` from this checkout
(session), ``pcmk_libvirt`` starts libvirtd in both nodes of the two-node cluster (session),
``guest_images`` checks the tiny TCG guest's images (scripts/build-guest.sh).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypeVar

import pytest
from cluster import (
    CLUSTER_BINARIES,
    LIBVIRT_BINARIES,
    TWO_NODE_BINARIES,
    Cluster,
    ClusterError,
    OneNodeCluster,
    TwoNodeCluster,
    missing_requirements,
    wait_for,
)

LOCK_TIMEOUT = 300.0
C = TypeVar("C", bound=Cluster)
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tests.system.guests: the tiny TCG guest
    sys.path.insert(0, str(REPO))
AGENT = Path("/usr/lib/ocf/resource.d/kvmguest/KVMGuest")


def unavailable(reason: str) -> None:
    """Skip, or fail under KVMGUEST_REQUIRE_SYSTEM=1 (CI: a skip would hide a broken setup)."""
    if os.environ.get("KVMGUEST_REQUIRE_SYSTEM") == "1":
        pytest.fail(reason + " (KVMGUEST_REQUIRE_SYSTEM=1)")
    pytest.skip(reason)


def _script_env() -> dict[str, str]:
    return {"PCMK_DC_DEADTIME": os.environ.get("KVMGUEST_PCMK_DC_DEADTIME", "2s")}


def _lock(name: str) -> IO[str]:
    """Exclusive lock for one cluster kind, so two pytest sessions never share or tear
    down each other's cluster. Bounded wait; when it cannot be taken the tests skip (and
    fail in CI)."""
    state = Path(os.environ.get("KVMGUEST_PCMK_STATE", "/var/tmp/kvmguest-pcmk"))
    state.mkdir(parents=True, exist_ok=True)
    fh = (state / f".{name}.lock").open("a+")

    def attempt() -> bool:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    try:
        wait_for(attempt, LOCK_TIMEOUT, what=f"the {name} cluster lock", interval=1.0)
    except ClusterError:
        fh.close()
        unavailable(f"{name} cluster is in use by another test session")
    return fh


@contextmanager
def _session_cluster(cluster: C, name: str) -> Iterator[C]:
    lock = _lock(name)
    reuse = os.environ.get("KVMGUEST_PCMK_REUSE") == "1"
    started = False
    try:
        if not (reuse and cluster.is_running()):
            cluster.stop()  # leftovers of an interrupted session
            cluster.start()
            started = True
        yield cluster
    finally:
        try:
            if started and not reuse:
                cluster.stop()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()


@pytest.fixture(scope="session")
def one_node_cluster() -> Iterator[OneNodeCluster]:
    reasons = missing_requirements(CLUSTER_BINARIES)
    if reasons:
        unavailable("one-node Pacemaker cluster unavailable: " + "; ".join(reasons))
    with _session_cluster(OneNodeCluster(_script_env()), "one-node") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def two_node_cluster() -> Iterator[TwoNodeCluster]:
    reasons = missing_requirements(TWO_NODE_BINARIES)
    if reasons:
        unavailable("two-node Pacemaker cluster unavailable: " + "; ".join(reasons))
    with _session_cluster(TwoNodeCluster(_script_env()), "two-node") as cluster:
        yield cluster


@pytest.fixture
def one_node(one_node_cluster: OneNodeCluster) -> OneNodeCluster:
    """The session's one-node cluster, Online, with no resources or constraints."""
    one_node_cluster.wait_online()
    one_node_cluster.reset()
    return one_node_cluster


@pytest.fixture
def two_node(two_node_cluster: TwoNodeCluster) -> TwoNodeCluster:
    """The session's two-node cluster with both nodes Online (crashed nodes booted again),
    no resources, no constraints, no failures."""
    live = two_node_cluster.live_nodes()
    for node in two_node_cluster.nodes:
        if node not in live:
            two_node_cluster.boot(node)
    two_node_cluster.wait_online()
    two_node_cluster.reset()
    return two_node_cluster


@pytest.fixture(scope="session")
def guest_images() -> None:
    from tests.system.guests import GUEST_DIR, guest_images_present

    if not guest_images_present():
        unavailable(f"guest images missing in {GUEST_DIR} (scripts/build-guest.sh)")


@pytest.fixture(scope="session")
def ocf_agent() -> Path:
    """ocf:kvmguest:KVMGuest installed from this checkout (``kvmguest ocf install``)."""
    reasons = missing_requirements(("crm_resource",))
    if reasons:
        unavailable("cannot install the OCF agent: " + "; ".join(reasons))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvmguest",
            "ocf",
            "install",
            "--python",
            sys.executable,
            "--no-units",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return AGENT


def _libvirt_answers(cluster: TwoNodeCluster, node: str) -> bool:
    proc = cluster.run(node, "virsh", "-c", "qemu:///system", "version", check=False, timeout=20)
    return proc.returncode == 0


@pytest.fixture(scope="session")
def pcmk_libvirt(two_node_cluster: TwoNodeCluster, guest_images: None) -> TwoNodeCluster:
    """libvirtd running in node1 and node2 (started once; ``boot`` restarts it after a crash)."""
    reasons = missing_requirements(LIBVIRT_BINARIES)
    if reasons:
        unavailable("libvirt unavailable in the test nodes: " + "; ".join(reasons))
    live = two_node_cluster.live_nodes()
    for node in two_node_cluster.nodes:
        if node not in live:
            two_node_cluster.boot(node)
    for node in two_node_cluster.nodes:
        if not _libvirt_answers(two_node_cluster, node):
            two_node_cluster.start_libvirtd(node)
    return two_node_cluster
