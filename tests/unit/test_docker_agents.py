"""The container agents without an engine: their types come from the registry (one folder,
two agents), the validate hook with positions, the container state table, the export
(DockerDaemon as a clone, its containers after it), the lean path's imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvmguest.agents import registry
from kvmguest.agents.docker.table import container_state
from kvmguest.agents.loader import builtin_types, validate
from kvmguest.model.parser import parse_text
from kvmguest.model.states import ResourceState
from kvmguest.ocf.export import export, render_crm, render_xml

CF = """\
cluster c ( )
system node1 ( )
system node2 ( )
group web (
    SystemList = { node1 = 0, node2 = 1 }
    AutoStartList = { node1 }
    )
    DockerDaemon engine (
        Engine = podman
        DockerHost = "unix:///run/podman/podman.sock"
        )
    DockerContainer app (
        ContainerName = app
        Image = "localhost/app:1"
        Command = { "/bin/sh", "-c", "exec httpd -f" }
        Volumes = { "/shared/app:/data:ro" }
        Ports = { "8080:80/tcp" }
        Env = { MODE = prod }
        Labels = { "org.example.team" = web }
        Network = none
        )
    app requires engine
"""


def test_one_folder_registers_two_agents() -> None:
    assert registry.get("DockerContainer") is not None
    assert registry.get("DockerDaemon") is not None
    types = builtin_types()
    assert types["DockerContainer"].attrs["StopTimeout"].default == "10"
    assert types["DockerDaemon"].attrs["Engine"].default == "docker"


def test_a_valid_configuration() -> None:
    cfg, diags = parse_text(CF, "main.cf")[:2]
    assert diags == [] and validate(cfg) == []


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("ContainerName = app", 'ContainerName = "a b"', "ContainerName 'a b'"),
        ("ContainerName = app\n", "", "ContainerName is required"),
        ('"/shared/app:/data:ro"', '"/shared/app:data"', "is not SOURCE:TARGET"),
        ('"/shared/app:/data:ro"', '"/shared/app:/data:rx"', "must be ro or rw"),
        ('"8080:80/tcp"', '"8080:80/icmp"', "is not HOSTPORT:PORT"),
        ('"8080:80/tcp"', '"70000:80"', "a port is 1..65535"),
        ("MODE = prod", '"1MODE" = prod', "'1MODE' is not a valid key"),
        ("Engine = podman", "Engine = lxc", "Engine must be one of docker, podman"),
        ('"unix:///run/podman/podman.sock"', '"unix://run/p.sock"', "absolute socket path"),
        ('"unix:///run/podman/podman.sock"', '"ftp://h"', "must be unix:///PATH or tcp://"),
        ("Network = none", "Network = none\n        StopTimeout = 99999", "StopTimeout must be"),
    ],
)
def test_validate_reports_each_error_with_its_position(old: str, new: str, message: str) -> None:
    cfg, diags = parse_text(CF.replace(old, new, 1), "main.cf")[:2]
    assert diags == []
    found = [str(d) for d in validate(cfg)]
    assert any(message in f and f.startswith("main.cf:") for f in found), found


def _doc(status: str, health: str | None = None, managed: bool = True) -> dict[str, object]:
    state: dict[str, object] = {"Status": status, "Pid": 42, "ExitCode": 137}
    if health:
        state["Health"] = {"Status": health}
    labels = {"io.kvmguest.managed": "1"} if managed else {}
    return {"State": state, "Config": {"Labels": labels}}


@pytest.mark.parametrize(
    ("doc", "state", "confidence"),
    [
        (_doc("running"), ResourceState.ONLINE, 100),
        (_doc("running", "healthy"), ResourceState.ONLINE, 100),
        (_doc("running", "starting"), ResourceState.ONLINE, 50),
        (_doc("running", "unhealthy"), ResourceState.OFFLINE, 0),
        (_doc("paused"), ResourceState.INTENTIONAL_OFFLINE, 0),
        (_doc("exited"), ResourceState.OFFLINE, 0),
        (_doc("dead"), ResourceState.OFFLINE, 0),
        (_doc("created"), ResourceState.OFFLINE, 0),
        (_doc("restarting"), ResourceState.UNKNOWN, 0),
        (None, ResourceState.OFFLINE, 0),
        (_doc("running", managed=False), ResourceState.OFFLINE, 0),
    ],
)
def test_the_state_table(
    doc: dict[str, object] | None, state: ResourceState, confidence: int
) -> None:
    r = container_state("c", doc)
    assert (r.state, r.confidence) == (state, confidence)


def test_the_export_makes_the_engine_a_clone_and_orders_the_group_after_it() -> None:
    cfg = parse_text(CF, "main.cf")[0]
    e = export(cfg)
    crm = render_crm(e)
    assert "primitive engine ocf:kvmguest:DockerDaemon" in crm
    assert "clone engine-clone engine" in crm and "interleave=true" in crm
    assert "order app-after-engine-clone Mandatory: engine-clone app" in crm
    assert "colocation app-after-engine-clone-colocation inf: app engine-clone" in crm
    assert "command=\"/bin/sh -c 'exec httpd -f'\"" in crm
    xml = render_xml(e)
    assert '<clone id="engine-clone">' in xml and 'type="DockerDaemon"' in xml
    assert not any(g.members and "engine" in g.members for g in e.groups)


def test_the_lean_monitor_does_not_import_the_docker_sdk(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from kvmguest.agents.docker.agent import CONTAINER_AGENT as a\n"
        "r = a.oneshot_monitor({'host': 'unix:///nonexistent/x.sock', 'name': 'c',"
        " 'timeout': '2', 'engine': 'docker'})\n"
        "assert 'docker' not in sys.modules and 'requests' not in sys.modules\n"
        "print(r.state.value)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OFFLINE"  # no engine process there, and none of its containers


def test_validate_says_when_the_docker_sdk_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)  # type: ignore[arg-type]
    cfg = parse_text(CF, "main.cf")[0]
    found = [str(d) for d in validate(cfg)]
    assert any("needs the Docker SDK for Python: pip install docker" in f for f in found), found


STORAGE_CF = """\
type Mount (
    static str ArgList[] = { MountPoint, BlockDevice, FSType }
    str MountPoint
    str BlockDevice
    str FSType
)
system n1 ( )
system n2 ( )
group engine ( SystemList = { n1 = 0, n2 = 1 } Parallel = 1 )
    DockerDaemon podman ( Engine = podman )
group web ( SystemList = { n1 = 0, n2 = 1 } )
    Mount data ( MountPoint = "/srv/web" BlockDevice = "/dev/vdb" FSType = ext4 )
    DockerContainer app ( ContainerName = app Image = "busybox:latest"
                          Volumes = { "/srv/web:/data" } )
    app requires data
    requires group engine online local firm
"""


def test_the_export_starts_a_container_after_its_storage_and_its_engine() -> None:
    cfg, diags, _ = parse_text(STORAGE_CF, "main.cf")
    assert not diags and not [d for d in validate(cfg) if d.severity == "error"]
    e = export(cfg)
    kinds = {p.id: (p.provider, p.kind) for p in e.primitives}
    assert kinds["data"] == (("ocf", "heartbeat"), "Filesystem")
    # The group starts its members in order: the file system, then the container.
    assert [(g.id, g.members) for g in e.groups] == [("web", ["data", "app"])]
    crm = render_crm(e)
    assert "clone podman-clone podman" in crm
    assert "order web-online-local-podman-clone-order Mandatory: podman-clone web" in crm
    assert "colocation web-online-local-podman-clone-colocation inf: web podman-clone" in crm


def _errors(text: str) -> list[str]:
    cfg, diags, _ = parse_text(text, "main.cf")
    return [str(d) for d in diags + validate(cfg) if d.severity == "error"]


def test_two_resources_on_one_container_or_one_engine_are_refused() -> None:
    twin = CF + (
        "group other ( SystemList = { node2 = 0 } )\n"
        '    DockerContainer app2 ( ContainerName = app Image = "x:1" )\n'
        "    DockerDaemon engine2 ( Engine = podman\n"
        '        DockerHost = "unix:///run/podman/podman.sock" )\n'
    )
    found = _errors(twin)
    docker_sock = "'unix:///var/run/docker.sock'"
    assert any(
        f"DockerContainer app2: manages container 'app' of the engine at {docker_sock} "
        "on system node2" in f
        for f in found
    ), found
    assert any("DockerDaemon engine2: manages the engine at" in f for f in found), found
    # The same name on another engine is another container; a disabled engine manages none.
    apart = twin.replace('Image = "x:1"', 'Image = "x:1" DockerHost = "unix:///srv/b.sock"')
    apart = apart.replace("DockerDaemon engine2 (", "DockerDaemon engine2 ( Enabled = 0")
    assert _errors(apart) == []


def test_the_quick_monitor_defaults_are_the_agents() -> None:
    from kvmguest.agents.docker import lean, params

    assert lean.DEFAULT_HOSTS == params.DEFAULT_HOSTS
