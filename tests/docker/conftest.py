"""Fixtures for the container agents' tests: a private dockerd and a private Podman API
service for the session (tests/docker/engines.py), and per test a resource on each engine.

Missing engines skip the tests with the reason, or fail them under
KVMGUEST_REQUIRE_SYSTEM=1 (CI)."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from kvmguest.agents.base import Env
from kvmguest.agents.loader import Loaded

from .engines import IMAGE, SLEEPER, Engine, missing

REPO = Path(__file__).resolve().parents[2]
KINDS = ("docker", "podman")
_seq = itertools.count(1)


def unavailable(reason: str) -> None:
    """Skip, or fail under KVMGUEST_REQUIRE_SYSTEM=1 (CI: a skip would hide a broken setup)."""
    if os.environ.get("KVMGUEST_REQUIRE_SYSTEM") == "1":
        pytest.fail(reason + " (KVMGUEST_REQUIRE_SYSTEM=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engine_base() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="kvmguest-docker-", dir="/tmp"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def engines(engine_base: Path) -> Iterator[dict[str, Engine]]:
    reasons = missing()
    if reasons:
        unavailable("container engines unavailable: " + "; ".join(reasons))
    started: dict[str, Engine] = {}
    try:
        for kind in KINDS:
            e = Engine(kind, engine_base)
            started[kind] = e
            e.start()
            e.images(engine_base)
        yield started
    finally:
        for e in started.values():
            e.cleanup()


@pytest.fixture(params=KINDS)
def engine(request: pytest.FixtureRequest, engines: dict[str, Engine]) -> Engine:
    e = engines[str(request.param)]
    if not e.answers():  # a test stopped it and failed before starting it again
        e.start()
    return e


def _value(v: object) -> str:
    if isinstance(v, list):
        return "{ " + ", ".join(f'"{x}"' for x in v) + " }"
    if isinstance(v, dict):
        return "{ " + ", ".join(f'{k} = "{x}"' for k, x in v.items()) + " }"
    if isinstance(v, int):
        return str(v)
    return f'"{v}"'


@dataclass
class Box:
    """One DockerContainer resource on one engine, in its own main.cf."""

    engine: Engine
    dir: Path
    res: str
    name: str
    attrs: dict[str, object] = field(default_factory=dict)
    extra: str = ""  # more blocks in the group (a DockerDaemon, links)
    autostart: bool = False

    @property
    def cfg(self) -> Path:
        return self.dir / "main.cf"

    def block(self) -> str:
        attrs: dict[str, object] = {
            "ContainerName": self.name, "Image": IMAGE, "DockerHost": self.engine.host,
            "Engine": self.engine.kind, "Network": "none", "Command": SLEEPER,
            "StopTimeout": 5, "DelayAfterOnline": 20, **self.attrs,
        }  # fmt: skip
        body = "\n".join(f"        {k} = {_value(v)}" for k, v in attrs.items())
        return f"    DockerContainer {self.res} (\n{body}\n        )\n"

    def write(self, **attrs: object) -> None:
        self.attrs.update(attrs)
        self.cfg.write_text(
            "cluster c ( )\nsystem host1 ( )\n"
            "group g (\n    SystemList = { host1 = 0 }\n"
            + ("    AutoStartList = { host1 }\n" if self.autostart else "")
            + "    )\n"
            + self.block()
            + self.extra
        )

    def handle(self, shared: bool = False) -> Any:
        from kvmguest.agents import registry

        loaded = Loaded.from_file(str(self.cfg))
        runtime = registry.require("DockerContainer").runtime(Env(str(self.cfg), "host1"),
                                                               shared=shared)  # fmt: skip
        return runtime.bind(loaded, self.res)

    def sdk(self) -> Any:
        return docker.DockerClient(base_url=self.engine.host, version="1.41", timeout=30)

    def inspect(self) -> dict[str, Any] | None:
        try:
            doc = self.sdk().api.inspect_container(self.name)
        except docker.errors.NotFound:
            return None
        return doc if isinstance(doc, dict) else None

    def status(self) -> str:
        doc = self.inspect()
        return str(doc["State"]["Status"]) if doc else "absent"

    def pid(self) -> int:
        doc = self.inspect()
        return int(doc["State"]["Pid"]) if doc else 0


@pytest.fixture
def box(engine: Engine, tmp_path: Path) -> Iterator[Box]:
    n = next(_seq)
    b = Box(engine, tmp_path, f"ct{n}", f"kvmg-ct{n}-{os.getpid()}")
    b.write()
    yield b
    if engine.answers():
        engine.cli("rm", "-f", b.name, check=False)
