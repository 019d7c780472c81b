"""ocf:kvmguest:DockerContainer and ocf:kvmguest:DockerDaemon: their meta-data against the
OCF DTD (xmllint), ocf-tester (Debian's resource-agents) on both engines, and the lean
monitor (standard library) answering as the full one."""

from __future__ import annotations

import ast
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Box, unavailable
from .engines import IMAGE, Engine

pytestmark = pytest.mark.docker
DTD = Path("/usr/share/resource-agents/ra-api-1.dtd")
TYPES = ("DockerContainer", "DockerDaemon")
# ocf-tester passes a value inside single quotes: none in it.
COMMAND = '/bin/sh -c "trap exit TERM; while :; do sleep 1; done"'


@pytest.fixture(scope="module")
def ocf_dir() -> Iterator[Path]:
    """The wrappers, installed from this checkout into a private directory (never over
    another checkout's /usr/lib/ocf/resource.d/kvmguest); world-readable, as ocf-tester
    wants it (pytest's own temporary directories are 0700)."""
    d = Path(tempfile.mkdtemp(prefix="kvmguest-docker-ocf-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    r = subprocess.run([sys.executable, "-m", "kvmguest", "ocf", "install", "--python",
                        sys.executable, "--no-units", "--dir", str(d)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    for t in TYPES:
        assert (d / t).is_file()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _tools() -> None:
    for tool in ("ocf-tester", "xmllint"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (resource-agents, libxml2-utils)")


@pytest.mark.parametrize("type_name", TYPES)
def test_meta_data_is_valid(ocf_dir: Path, type_name: str, tmp_path: Path) -> None:
    _tools()
    xml = subprocess.run([str(ocf_dir / type_name), "meta-data"], capture_output=True,
                         text=True, timeout=60, check=True).stdout  # fmt: skip
    (tmp_path / "md.xml").write_text(xml)
    r = subprocess.run(["xmllint", "--noout", "--dtdvalid", str(DTD), str(tmp_path / "md.xml")],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f'<resource-agent name="{type_name}"' in xml


def _container_opts(box: Box) -> list[str]:
    return ["container_name=" + box.name, "image=" + IMAGE, "docker_host=" + box.engine.host,
            "engine=" + box.engine.kind, "network=none", "command=" + COMMAND,
            "stop_timeout=2"]  # fmt: skip


def _tester(agent: Path, opts: list[str], env: dict[str, str] | None = None) -> None:
    argv = ["ocf-tester", "-n", "kvmgtest"]
    for o in opts:
        argv += ["-o", o]
    r = subprocess.run([*argv, str(agent)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, **(env or {})})  # fmt: skip
    assert r.returncode == 0 and "passed all tests" in r.stdout, r.stdout + r.stderr


def test_ocf_tester_container(ocf_dir: Path, box: Box) -> None:
    _tools()
    _tester(ocf_dir / "DockerContainer", _container_opts(box))
    assert box.status() in ("exited", "stopped")  # ocf-tester ends with it stopped


def test_ocf_tester_daemon(ocf_dir: Path, engine: Engine, tmp_path: Path) -> None:
    """A second private engine of the same kind, started and stopped by the agent."""
    _tools()
    # A short path: containerd's socket lives under it (a Unix socket path has 107 bytes).
    base = Path(tempfile.mkdtemp(prefix="kvmguest-docker-", dir="/tmp"))
    own = Engine(engine.kind, base)
    own.dir.mkdir(parents=True)
    (own.dir / "tmp").mkdir()
    own.conf.write_text((engine.conf).read_text())
    argv = own.daemon_argv()
    opts = ["engine=" + own.kind, "docker_host=" + own.host, "daemon_command=" + argv[0],
            "daemon_options=" + shlex.join(argv[1:]), "delay_after_offline=30",
            f"daemon_env=CONTAINERS_CONF={own.conf}"]  # fmt: skip
    env = {"KVMGUEST_ENGINE_RUNDIR": str(tmp_path / "run")}
    try:
        _tester(ocf_dir / "DockerDaemon", opts, env)
        assert not own.answers()
    finally:
        from kvmguest.agents.docker.procs import socket_holder

        pid = socket_holder(own.host)
        if pid is not None:
            os.kill(pid, 15)
        own.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def _monitor(agent: Path, box: Box, *, full: bool, interval: int = 10000) -> int:
    env = {f"OCF_RESKEY_{o.partition('=')[0]}": o.partition("=")[2] for o in _container_opts(box)}
    env.update(OCF_ROOT="/usr/lib/ocf", OCF_RESOURCE_INSTANCE="kvmgtest",
               OCF_RESKEY_CRM_meta_interval=str(interval),
               OCF_RESKEY_CRM_meta_timeout="20000")  # fmt: skip
    if full:
        env["OCF_CHECK_LEVEL"] = "10"  # not the lean path: the Docker SDK's
    r = subprocess.run([str(agent), "monitor"], capture_output=True, text=True, timeout=120,
                       env={"PATH": os.environ["PATH"], **env})  # fmt: skip
    return r.returncode


def test_lean_monitor_answers_as_the_full_one(ocf_dir: Path, box: Box) -> None:
    agent = ocf_dir / "DockerContainer"

    def codes(interval: int = 10000) -> tuple[int, int]:
        return (_monitor(agent, box, full=False, interval=interval),
                _monitor(agent, box, full=True, interval=interval))  # fmt: skip

    assert codes() == (7, 7)
    env = {f"OCF_RESKEY_{k}": v for k, v in (o.split("=", 1) for o in _container_opts(box))}
    env.update(OCF_ROOT="/usr/lib/ocf", OCF_RESOURCE_INSTANCE="kvmgtest")
    r = subprocess.run([str(agent), "start"], capture_output=True, text=True, timeout=120,
                       env={"PATH": os.environ["PATH"], **env})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert codes() == (0, 0)
    box.sdk().api.pause(box.name)
    assert codes() == (7, 7)
    box.sdk().api.unpause(box.name)
    away = box.engine.sock.with_suffix(".away")
    shutil.move(box.engine.sock, away)
    try:
        # The engine does not answer: a recurring monitor keeps it (190), a probe errs.
        assert codes() == (190, 190)
        assert codes(interval=0) == (1, 1)
    finally:
        shutil.move(away, box.engine.sock)
    r = subprocess.run([str(agent), "stop"], capture_output=True, text=True, timeout=120,
                       env={"PATH": os.environ["PATH"], **env})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert codes() == (7, 7)


def _quick(box: Box, **extra: str) -> tuple[int, str] | None:
    """quick_ocf in a Python without site: what it imports is what the monitor pays."""
    env = {f"OCF_RESKEY_{k}": v for k, v in (o.split("=", 1) for o in _container_opts(box))}
    env.update({f"OCF_RESKEY_{k}": v for k, v in extra.items()}, OCF_RESOURCE_INSTANCE="t")
    code = (
        "import sys, os\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2] / 'src')!r})\n"
        "from kvmguest.agents.docker.lean import quick_ocf\n"
        "r = quick_ocf(os.environ)\n"
        "heavy = [m for m in ('enum', 'typing', 'kvmguest.agents.ocf_interface', 'docker',"
        " 'kvmguest.model.states') if m in sys.modules]\n"
        "print(repr((r, heavy)))\n"
    )
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                       timeout=60, env={"PATH": os.environ["PATH"], **env})  # fmt: skip
    assert r.returncode == 0, r.stderr
    result, heavy = ast.literal_eval(r.stdout.strip())
    assert heavy == [], heavy  # the point of the quick path
    return result  # type: ignore[no-any-return]


def test_the_quick_ocf_monitor_answers_running_and_stopped_only(box: Box) -> None:
    result = _quick(box)
    assert result is not None and result[0] == 7 and "no container" in result[1]
    box.engine.cli("run", "-d", "--name", box.name, "--label", "io.kvmguest.managed=1",
                   "--network", "none", IMAGE, "sleep", "300")  # fmt: skip
    result = _quick(box)
    assert result is not None and result[0] == 0 and "running" in result[1]
    # What needs judgement goes the usual way: a misspelt parameter (refused there), a
    # config file, a deep check, an engine that does not answer.
    assert _quick(box, contaner_name="x") is None
    assert _quick(box, config="/etc/kvmguest/main.cf") is None
    assert _quick(box, docker_host="unix:///nonexistent/engine.sock") is None


def test_the_quick_monitor_knows_every_container_parameter() -> None:
    from kvmguest.agents.docker.lean import CONTAINER_PARAM_NAMES
    from kvmguest.agents.docker.ocf_side import CONTAINER_PARAMS

    assert {p.name for p in CONTAINER_PARAMS} == CONTAINER_PARAM_NAMES
