"""The DockerContainer and DockerDaemon agents as the registry knows them. Cheap to
import: every method imports what it needs when it is called (the OCF monitor of every
interval comes through here), and nothing here imports the Docker SDK."""

from __future__ import annotations

import os

from kvmguest.agents.registry import Agent

TYPE_CHECKING = False  # not typing's: importing typing costs the lean monitor path
if TYPE_CHECKING:
    from collections.abc import Mapping

    from kvmguest.agents.base import Env
    from kvmguest.agents.docker.runtime import ContainerRuntime, DaemonRuntime
    from kvmguest.agents.ocf_interface import OcfSide
    from kvmguest.model.attributes import AttrDef, Typed
    from kvmguest.model.config import Block, Config, Diagnostic
    from kvmguest.model.resolver import Loaded
    from kvmguest.model.states import MonitorResult


def _text(name: str) -> str:
    with open(os.path.join(os.path.dirname(__file__), name), encoding="utf-8") as f:
        return f.read()


class DockerContainerAgent(Agent):
    type_name = "DockerContainer"

    def type_text(self) -> str:
        return _text("dockercontainer.cf")

    def check(self, cfg: Config, block: Block, attrs: dict[str, AttrDef]) -> list[Diagnostic]:
        from kvmguest.agents.docker.checks import check_container

        return check_container(cfg, block, attrs)

    def identity(self, values: dict[str, Typed]) -> str | None:
        from kvmguest.agents.docker.params import default_host
        from kvmguest.model.excerpt import excerpt

        name = str(values.get("ContainerName", ""))
        host = default_host(str(values.get("Engine", "docker")), str(values.get("DockerHost", "")))
        return f"container {excerpt(name)} of the engine at {excerpt(host)}" if name else None

    def ocf_quick_monitor(self, environ: Mapping[str, str]) -> tuple[int, str] | None:
        from kvmguest.agents.docker.lean import quick_ocf

        return quick_ocf(environ)

    def runtime(self, env: Env, *, shared: bool = False) -> ContainerRuntime:
        from kvmguest.agents.docker.runtime import ContainerRuntime

        return ContainerRuntime(env, shared=shared)

    def ocf(self) -> OcfSide:
        from kvmguest.agents.docker.ocf_side import CONTAINER_SIDE

        return CONTAINER_SIDE

    def oneshot_recipe(self, loaded: Loaded, resource: str, env: Env) -> dict[str, str] | None:
        from kvmguest.agents.docker.params import container_params

        p = container_params(loaded, resource, env.system)
        return {"type": self.type_name, "host": p.host, "name": p.container_name,
                "engine": p.engine, "timeout": str(p.timeout("Monitor"))}  # fmt: skip

    def oneshot_monitor(self, recipe: dict[str, str]) -> MonitorResult:
        # The lean probe (standard library, no Docker SDK): the same table as the full one.
        from kvmguest.agents.docker.lean import probe

        return probe(recipe["host"], recipe["name"], float(recipe["timeout"]),
                     recipe.get("engine", "docker"))  # fmt: skip


class DockerDaemonAgent(Agent):
    type_name = "DockerDaemon"

    def type_text(self) -> str:
        return _text("dockerdaemon.cf")

    def check(self, cfg: Config, block: Block, attrs: dict[str, AttrDef]) -> list[Diagnostic]:
        from kvmguest.agents.docker.checks import check_daemon

        return check_daemon(cfg, block, attrs)

    def identity(self, values: dict[str, Typed]) -> str | None:
        from kvmguest.agents.docker.params import default_host
        from kvmguest.model.excerpt import excerpt

        host = default_host(str(values.get("Engine", "docker")), str(values.get("DockerHost", "")))
        return f"the engine at {excerpt(host)}"

    def runtime(self, env: Env, *, shared: bool = False) -> DaemonRuntime:
        from kvmguest.agents.docker.runtime import DaemonRuntime

        return DaemonRuntime(env, shared=shared)

    def ocf(self) -> OcfSide:
        from kvmguest.agents.docker.ocf_side import DAEMON_SIDE

        return DAEMON_SIDE


CONTAINER_AGENT = DockerContainerAgent()
DAEMON_AGENT = DockerDaemonAgent()
