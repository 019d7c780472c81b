"""The validate hooks of DockerContainer and DockerDaemon: each resource's checks beyond its
attributes' types, each with its position (``file:line:col``)."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from kvmguest.agents.docker.params import ENGINES
from kvmguest.model.attributes import AttrDef
from kvmguest.model.config import Block, Config, Diagnostic

# Docker's own rules: a container name, an environment variable and a label key.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*$")
# [registry[:port]/]path[:tag][@digest], loosely: no spaces, no empty parts.
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._\-/:@]*$", re.IGNORECASE)
_PORT = re.compile(
    r"^(?:(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):)?(\d+):(\d+)(?:/(tcp|udp|sctp))?$"
)
RANGES = {"StopTimeout": (0, 3600), "DelayAfterOnline": (0, 3600), "DelayAfterOffline": (0, 3600)}

Check = Callable[[object], list[str]]


def check_host(value: object) -> list[str]:
    if not isinstance(value, str) or value == "":
        return []
    parts = urlsplit(value)
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            return [f"DockerHost {value!r}: a unix:// URL needs an absolute socket path"]
        return []
    if parts.scheme in ("tcp", "http", "https"):
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            return [f"DockerHost {value!r}: a tcp:// URL needs a host and a port"]
        return []
    return [f"DockerHost {value!r} must be unix:///PATH or tcp://HOST:PORT"]


def check_engine(value: object) -> list[str]:
    if isinstance(value, str) and value not in ENGINES:
        return [f"Engine must be one of {', '.join(ENGINES)}, not {value!r}"]
    return []


def check_name(value: object) -> list[str]:
    if isinstance(value, str) and value and not _NAME.match(value):
        return [f"ContainerName {value!r}: letters, digits, '_', '.', '-' (first a letter "
                "or digit)"]  # fmt: skip
    return []


def check_image(value: object) -> list[str]:
    if isinstance(value, str) and value and not _IMAGE.match(value):
        return [f"Image {value!r} is not an image reference"]
    return []


def check_volumes(value: object) -> list[str]:
    out = []
    for item in value if isinstance(value, list) else []:
        parts = str(item).split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
            out.append(f"Volumes: {item!r} is not SOURCE:TARGET[:ro] (TARGET absolute)")
        elif len(parts) == 3 and parts[2] not in ("ro", "rw"):
            out.append(f"Volumes: {item!r}: the option must be ro or rw")
    return out


def check_ports(value: object) -> list[str]:
    out = []
    for item in value if isinstance(value, list) else []:
        m = _PORT.match(str(item))
        if m is None:
            out.append(f"Ports: {item!r} is not HOSTPORT:PORT[/tcp|udp]")
        elif not all(1 <= int(p) <= 65535 for p in m.group(1, 2)):
            out.append(f"Ports: {item!r}: a port is 1..65535")
    return out


def _keys(attr: str, pattern: re.Pattern[str]) -> Check:
    def check(value: object) -> list[str]:
        keys = value if isinstance(value, dict) else {}
        return [f"{attr}: {k!r} is not a valid key" for k in keys if not pattern.match(str(k))]

    return check


def _range(attr: str) -> Check:
    low, high = RANGES[attr]

    def check(value: object) -> list[str]:
        try:
            n = int(str(value))
        except ValueError:
            return []  # the model reports a non-integer
        return [] if low <= n <= high else [f"{attr} must be {low}..{high}, not {n}"]

    return check


CONTAINER_CHECKS: dict[str, Check] = {
    "Engine": check_engine, "DockerHost": check_host, "ContainerName": check_name,
    "Image": check_image, "Volumes": check_volumes, "Ports": check_ports,
    "Env": _keys("Env", _ENV_KEY), "Labels": _keys("Labels", _LABEL_KEY),
    "StopTimeout": _range("StopTimeout"), "DelayAfterOnline": _range("DelayAfterOnline"),
}  # fmt: skip
DAEMON_CHECKS: dict[str, Check] = {
    "Engine": check_engine, "DockerHost": check_host, "DaemonEnv": _keys("DaemonEnv", _ENV_KEY),
    "DelayAfterOnline": _range("DelayAfterOnline"),
    "DelayAfterOffline": _range("DelayAfterOffline"),
}  # fmt: skip


def _have_docker_sdk() -> bool:
    try:
        return importlib.util.find_spec("docker") is not None
    except (ImportError, ValueError):  # ValueError: a module blocked in sys.modules
        return False


def _systems_of(cfg: Config, block: Block) -> list[str]:
    group = cfg.groups.get(block.group or "")
    sl = group.attrs.get("SystemList") if group else None
    return list(sl) if isinstance(sl, dict) else list(cfg.systems)


def _run(
    block: Block, checks: dict[str, Check], required: tuple[str, ...], cfg: Config
) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for attr, fn in checks.items():
        values = [("", block.attrs.get(attr))]
        values += [(f"@{s}", v) for s, v in block.local.get(attr, {}).items()]
        for where, value in values:
            if value is None:
                continue
            for msg in fn(value):
                out.append(
                    Diagnostic(block.position(attr), f"{block.kind} {block.name}{where}: {msg}")
                )
    for attr in required:
        if block.attrs.get(attr) not in (None, ""):
            continue
        local = block.local.get(attr, {})
        needed = _systems_of(cfg, block)
        if not needed or any(local.get(s) in (None, "") for s in needed):
            out.append(Diagnostic(block.pos, f"{block.kind} {block.name}: {attr} is required"))
    # The package runs without the SDK (a KVM-only host); these resources do not.
    if not _have_docker_sdk():
        out.append(Diagnostic(block.pos, f"{block.kind} {block.name}: needs the Docker SDK for "
                              "Python: pip install docker (Debian: python3-docker)"))  # fmt: skip
    return out


def check_container(cfg: Config, block: Block, attrs: dict[str, AttrDef]) -> list[Diagnostic]:
    return _run(block, CONTAINER_CHECKS, ("ContainerName", "Image"), cfg)


def check_daemon(cfg: Config, block: Block, attrs: dict[str, AttrDef]) -> list[Diagnostic]:
    return _run(block, DAEMON_CHECKS, (), cfg)
