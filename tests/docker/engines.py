"""Private container engines for the tests: a dockerd and a Podman API service, each with
its own storage, state, socket and pid, under /tmp/kvmguest-docker-*; never the system's
/var/lib/docker, default Podman storage or default sockets. And the test images, built
offline from busybox-static (no registry exists here, and nothing ever tries one).

Usable from the tests (fixtures in conftest.py), the benchmark and by hand:

    python -m tests.docker.engines start DIR      # both engines, prints their DockerHost
    python -m tests.docker.engines stop DIR
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

BUSYBOX = "/bin/busybox"
IMAGE = "kvmguest-busybox:test"
HEALTH_IMAGE = "kvmguest-health:test"
DOCKER_CLI = "/usr/bin/docker"
START_TIMEOUT = 60.0
# DESIGN.md §8: crun fails on this host's cgroup layout, and rlimits must stay below the
# host's hard limits.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]
netns = "none"
[engine]
runtime = "runc"
events_logger = "file"
cgroup_manager = "cgroupfs"
"""
# The health check of HEALTH_IMAGE: healthy until /tmp/sick exists in the container.
DOCKERFILE = f"""\
FROM {IMAGE}
HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD ["/bin/sh", "-c", "test ! -e /tmp/sick"]
CMD ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"""
# A command that stops at once on SIGTERM (busybox sh ignores it as pid 1 otherwise).
SLEEPER = ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def missing() -> list[str]:
    """What this host lacks to run the engines (empty: nothing)."""
    out = []
    for binary in ("dockerd", "containerd", "podman", "runc", DOCKER_CLI, BUSYBOX):
        if shutil.which(binary) is None:
            out.append(f"{binary} is not installed (apt-get install docker.io podman runc "
                       "busybox-static)")  # fmt: skip
    if os.geteuid() != 0:
        out.append("the engines need root")
    return out


def build_rootfs_tar(dest: Path) -> Path:
    """A busybox-static root file system as a tar (for ``docker import``)."""
    tar = dest / "busybox-rootfs.tar"
    if tar.exists():
        return tar
    root = dest / "rootfs"
    (root / "bin").mkdir(parents=True, exist_ok=True)
    for d in ("tmp", "data", "proc", "sys", "dev", "etc"):
        (root / d).mkdir(exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True,
                             timeout=10).stdout.split()  # fmt: skip
    for applet in applets:
        link = root / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")  # relative: it resolves inside the container
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    with tarfile.open(tar.with_suffix(".tmp"), "w") as t:
        t.add(root, arcname=".")
    os.replace(tar.with_suffix(".tmp"), tar)
    shutil.rmtree(root)
    return tar


class Engine:
    """One private engine instance: ``kind`` is docker or podman."""

    def __init__(self, kind: str, base: Path) -> None:
        self.kind = kind
        self.dir = base / kind
        self.sock = self.dir / f"{kind}.sock"
        self.host = f"unix://{self.sock}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "engine.log"
        self.conf = self.dir / "containers.conf"

    # --- the engine's command ---------------------------------------------------------

    def podman_base(self) -> list[str]:
        return ["podman", "--root", str(self.dir / "root"), "--runroot", str(self.dir / "run"),
                "--tmpdir", str(self.dir / "tmp"), "--runtime", "runc",
                "--cgroup-manager", "cgroupfs", "--events-backend", "file"]  # fmt: skip

    def daemon_argv(self) -> list[str]:
        """The engine's command (what a DockerDaemon resource's DaemonCommand + options are)."""
        if self.kind == "docker":
            d, ns = self.dir, f"kvmguest-{os.getpid()}"
            return ["dockerd", "--data-root", str(d / "data"), "--exec-root", str(d / "exec"),
                    "--pidfile", str(d / "docker.pid"), "-H", self.host,
                    "--iptables=false", "--ip6tables=false", "--bridge=none",
                    # The host's sysctls are shared with other tests: leave forwarding alone.
                    "--ip-forward=false", "--ip-masq=false",
                    "--containerd-namespace", ns,
                    "--containerd-plugins-namespace", f"{ns}-plugins"]  # fmt: skip
        return [*self.podman_base(), "system", "service", "--time=0", self.host]

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("DOCKER_HOST", None)
        if self.kind == "podman":
            env["CONTAINERS_CONF"] = str(self.conf)
        return env

    def cli(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        """The engine's own command line (docker -H, or podman on this instance's storage)."""
        argv = [DOCKER_CLI, "-H", self.host] if self.kind == "docker" else self.podman_base()
        done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout,
                              env=self.environ(), check=False)  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(f"{self.kind} {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    # --- life cycle -------------------------------------------------------------------

    def answers(self) -> bool:
        import socket

        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(str(self.sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in s.recv(64)
        except OSError:
            return False
        finally:
            s.close()

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "tmp").mkdir(exist_ok=True)
        self.conf.write_text(CONTAINERS_CONF)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.daemon_argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env=self.environ(),
                                         start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: "
                                   f"{self.log.read_text()[-800:]}")  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} did not answer within {START_TIMEOUT} s")
            time.sleep(0.1)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60) -> None:
        """Stop the engine (its whole process group: dockerd's containerd with it on
        SIGKILL; on SIGTERM dockerd stops containerd itself)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGKILL:
                os.killpg(self.proc.pid, sig)
            else:
                os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def images(self, workdir: Path) -> None:
        """Import the busybox image and build the health-check image (offline)."""
        tar = build_rootfs_tar(workdir)
        self.cli("import", str(tar), IMAGE)
        ctx = workdir / f"health-{self.kind}"
        ctx.mkdir(exist_ok=True)
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        if self.kind == "docker":
            self.cli("build", "-q", "-t", HEALTH_IMAGE, str(ctx), timeout=120)
        else:
            self.cli("build", "-q", "--pull=never", "--format", "docker", "-t", HEALTH_IMAGE,
                     str(ctx), timeout=120)  # fmt: skip

    def cleanup(self) -> None:
        """Stop the engine and everything it runs, then remove its directories."""
        if self.answers():
            with contextlib.suppress(Exception):
                ids = self.cli("ps", "-aq", timeout=30).split()
                if ids:
                    self.cli("rm", "-f", *ids, timeout=60, check=False)
        self.stop()
        if self.kind == "podman":
            # Podman's containers outlive its service: their conmon processes may remain.
            with contextlib.suppress(Exception):
                self.cli("rm", "-af", "-t", "0", timeout=60, check=False)
        # Whatever still runs from this instance's directories (a containerd left by a
        # SIGKILLed dockerd, a conmon whose service is gone): all ours, by their paths.
        for pid in _processes_under(self.dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["umount", "-R", "-l", str(self.dir)], capture_output=True, check=False,
                       timeout=30)  # fmt: skip
        for m in _mounts_under(self.dir):
            subprocess.run(["umount", "-l", m], capture_output=True, check=False, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def _processes_under(path: Path) -> list[int]:
    want = str(path).encode() + b"/"
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
            if want in f.read():
                out.append(int(entry))
    return out


def _mounts_under(path: Path) -> list[str]:
    out = []
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            target = line.split()[1]
            if target.startswith(str(path) + "/"):
                out.append(target)
    return sorted(out, key=len, reverse=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        sys.stderr.write("usage: python -m tests.docker.engines start|stop DIR\n")
        return 2
    base = Path(argv[1])
    for kind in ("docker", "podman"):
        e = Engine(kind, base)
        if argv[0] == "start":
            e.start()
            e.images(base)
            print(f"{kind} {e.host} pid {e.pid}")
        else:
            e.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
