"""DockerContainer and DockerDaemon attribute values, typed and resolved for one system by
the one resolver (:mod:`kvmguest.model.resolver`), as the entry points use them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from kvmguest.model.attributes import Typed
from kvmguest.model.resolver import Loaded
from kvmguest.model.types import effective_attrs

CONTAINER = "DockerContainer"
DAEMON = "DockerDaemon"
ENGINES = ("docker", "podman")
# An empty DockerHost: the engine's own default socket (rootful).
DEFAULT_HOSTS = {
    "docker": "unix:///var/run/docker.sock",
    "podman": "unix:///run/podman/podman.sock",
}
DEFAULT_UNITS = {"docker": "docker.service", "podman": "podman.service"}
DEFAULT_COMMANDS = {"docker": "dockerd", "podman": "podman system service --time=0"}


def default_host(engine: str, host: str) -> str:
    return host or DEFAULT_HOSTS.get(engine, DEFAULT_HOSTS["docker"])


def event_key(host: str, name: str) -> str:
    """The key a container's events carry: its name on its engine."""
    return f"{name}@{host}"


def _int(value: Typed) -> int:
    assert isinstance(value, int)
    return value


def _list(value: Typed) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _assoc(value: Typed) -> dict[str, str]:
    return {k: str(v) for k, v in value.items()} if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ContainerParams:
    resource: str
    container_name: str
    image: str
    host: str  # DockerHost, with the engine's default filled in
    engine: str = "docker"
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)
    ports: list[str] = field(default_factory=list)
    network: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    stop_timeout: int = 10
    remove_on_offline: bool = False
    allow_pull: bool = False
    delay_online: int = 30
    statics: Mapping[str, Typed] = field(default_factory=dict, repr=False)

    def timeout(self, entry_point: str) -> int:
        value = self.statics.get(f"{entry_point}Timeout", 60)
        return value if isinstance(value, int) else 60

    def definition(self) -> dict[str, object]:
        """What the container is created from; its hash is kept in a label, so that online
        can tell a stopped container whose definition changed."""
        return {"image": self.image, "command": self.command, "env": self.env,
                "volumes": self.volumes, "ports": self.ports, "network": self.network,
                "labels": self.labels, "stop_timeout": self.stop_timeout}  # fmt: skip

    def definition_hash(self) -> str:
        text = json.dumps(self.definition(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class DaemonParams:
    resource: str
    engine: str
    host: str
    unit: str
    command: str
    options: list[str] = field(default_factory=list)
    delay_online: int = 30
    delay_offline: int = 30
    env: dict[str, str] = field(default_factory=dict)  # DaemonEnv
    statics: Mapping[str, Typed] = field(default_factory=dict, repr=False)

    def timeout(self, entry_point: str) -> int:
        value = self.statics.get(f"{entry_point}Timeout", 60)
        return value if isinstance(value, int) else 60


def _values(
    loaded: Loaded, resource: str, system: str | None, kind: str
) -> tuple[dict[str, Typed], dict[str, Typed]]:
    block = loaded.cfg.resource(resource)
    if block.kind != kind:
        raise KeyError(f"resource {resource} is a {block.kind}, not a {kind}")
    values = loaded.resource_values(resource, system)
    attrs = effective_attrs(loaded.types[kind])
    return values, {name: values[name] for name, adef in attrs.items() if adef.static}


def container_params(loaded: Loaded, resource: str, system: str | None) -> ContainerParams:
    v, statics = _values(loaded, resource, system, CONTAINER)
    engine = str(v["Engine"]) or "docker"
    return ContainerParams(
        resource=resource,
        container_name=str(v["ContainerName"]),
        image=str(v["Image"]),
        host=default_host(engine, str(v["DockerHost"])),
        engine=engine,
        command=_list(v["Command"]),
        env=_assoc(v["Env"]),
        volumes=_list(v["Volumes"]),
        ports=_list(v["Ports"]),
        network=str(v["Network"]),
        labels=_assoc(v["Labels"]),
        stop_timeout=_int(v["StopTimeout"]),
        remove_on_offline=bool(v["RemoveOnOffline"]),
        allow_pull=bool(v["AllowPull"]),
        delay_online=_int(v["DelayAfterOnline"]),
        statics=statics,
    )


def daemon_params(loaded: Loaded, resource: str, system: str | None) -> DaemonParams:
    v, statics = _values(loaded, resource, system, DAEMON)
    engine = str(v["Engine"]) or "docker"
    return DaemonParams(
        resource=resource,
        engine=engine,
        host=default_host(engine, str(v["DockerHost"])),
        unit=str(v["Unit"]) or DEFAULT_UNITS.get(engine, "docker.service"),
        command=str(v["DaemonCommand"]) or DEFAULT_COMMANDS.get(engine, "dockerd"),
        options=_list(v["DaemonOptions"]),
        delay_online=_int(v["DelayAfterOnline"]),
        delay_offline=_int(v["DelayAfterOffline"]),
        env=_assoc(v["DaemonEnv"]),
        statics=statics,
    )
