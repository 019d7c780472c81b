"""One private Podman per node of the two-node test cluster (scripts/pcmk/two-node.sh).

Each node gets its own storage (``--root``), state (``--runroot``), temporary dir and API
socket under one host directory, ``BASE/NODE/...``: the nodes share the host's file system
(``/tmp`` and ``/srv`` are not remounted in them), so the paths must differ per node.
Every podman command runs inside the node (``nsenter``, :meth:`TwoNodeCluster.run`).

The API service itself is not started here: the ``ocf:kvmguest:DockerDaemon`` clone runs
it, from :meth:`PodmanNodes.daemon_command` and :meth:`PodmanNodes.daemon_options`. The
settings are those of tests/docker/engines.py (DESIGN.md §8: ``--runtime runc``, rlimits
below the host's hard limits, no network namespace), and so is the offline busybox image.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import tempfile
from pathlib import Path

from cluster import ClusterError, TwoNodeCluster
from tests.docker.engines import BUSYBOX, CONTAINERS_CONF, IMAGE, build_rootfs_tar

#: What a node's Podman needs on the host.
PODMAN_BINARIES: tuple[str, ...] = ("podman", "runc", "conmon", BUSYBOX)


def missing_podman() -> list[str]:
    return [
        f"{b} is not installed (apt-get install podman runc busybox-static)"
        for b in PODMAN_BINARIES
        if shutil.which(b) is None
    ]


class PodmanNodes:
    """The per-node Podman instances of one test, under one host directory."""

    def __init__(self, cluster: TwoNodeCluster) -> None:
        self.cluster = cluster
        self.base = Path(tempfile.mkdtemp(prefix="kvmguest-podman-nodes-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.conf = self.base / "containers.conf"
        self.conf.write_text(CONTAINERS_CONF)
        for node in cluster.nodes:
            for sub in ("root", "run", "tmp"):
                (self.base / node / sub).mkdir(parents=True)

    # --- per node -----------------------------------------------------------------------

    def host(self, node: str) -> str:
        """The node's DockerHost."""
        return f"unix://{self.base / node / 'podman.sock'}"

    def global_options(self, node: str) -> list[str]:
        d = self.base / node
        return ["--root", str(d / "root"), "--runroot", str(d / "run"), "--tmpdir",
                str(d / "tmp"), "--runtime", "runc", "--cgroup-manager", "cgroupfs",
                "--events-backend", "file"]  # fmt: skip

    def daemon_command(self) -> str:
        """DockerDaemon's DaemonCommand (the same on every node)."""
        return f"env CONTAINERS_CONF={self.conf} podman"

    def daemon_options(self, node: str) -> list[str]:
        """DockerDaemon's DaemonOptions on ``node``: its storage, then the API service."""
        return [*self.global_options(node), "system", "service", "--time=0", self.host(node)]

    def podman(self, node: str, *args: str, timeout: float = 60.0, check: bool = True) -> str:
        """The podman CLI inside ``node``, on that node's storage."""
        proc = self.cluster.run(
            node, "env", f"CONTAINERS_CONF={self.conf}", "podman", *self.global_options(node),
            *args, check=False, timeout=timeout,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise ClusterError(f"{node}: podman {shlex.join(args)}: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def import_image(self, node: str) -> None:
        """The offline busybox image (tests/docker/engines.py) into ``node``'s storage."""
        tar = build_rootfs_tar(self.base)
        self.podman(node, "import", str(tar), IMAGE, timeout=120)

    def state(self, node: str, container: str) -> str:
        """The container's state on ``node`` ("running", "exited", ...), "absent" if none."""
        proc = self.cluster.run(
            node, "env", f"CONTAINERS_CONF={self.conf}", "podman", *self.global_options(node),
            "container", "inspect", "--format", "{{.State.Status}}", container, check=False,
        )  # fmt: skip
        if proc.returncode == 0:
            return proc.stdout.strip()
        if "no such" in proc.stderr.lower():
            return "absent"
        raise ClusterError(f"{node}: podman container inspect {container}: {proc.stderr.strip()}")

    # --- clean up -----------------------------------------------------------------------

    def _mine(self) -> list[int]:
        """Host pids of processes running from this instance's directories (its API
        services, conmons), whatever started them."""
        pids = []
        marker = str(self.base).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes():
                    pids.append(int(entry))
        return pids

    def cleanup(self) -> None:
        """Remove every container, stop what still runs from these directories, unmount
        what Podman mounted in the nodes, then remove the directories."""
        live = self.cluster.live_nodes()
        for node in live:
            with contextlib.suppress(ClusterError):
                self.podman(node, "rm", "-af", "-t", "0", timeout=90, check=False)
        for pid in self._mine():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for node in live:
            with contextlib.suppress(ClusterError):
                mounts = self.cluster.run(node, "cat", "/proc/self/mounts", timeout=30).stdout
                targets = [line.split()[1] for line in mounts.splitlines() if len(line.split()) > 1]
                prefix = str(self.base) + "/"
                for target in sorted((t for t in targets if t.startswith(prefix)), key=len,
                                     reverse=True):  # fmt: skip
                    self.cluster.run(node, "umount", "-l", target, check=False, timeout=30)
        shutil.rmtree(self.base, ignore_errors=True)
