"""The one registry of resource types: how everything above ``agents/`` finds an agent.

Each folder under ``agents/`` is one agent package; importing it registers its agents
(:func:`register`). The registry finds the folders itself, so a new type is one new folder
and nothing above it changes. Importing this module and discovering the agents stays
cheap: an agent package's ``__init__`` imports no driver, and the OCF monitor of every
interval goes through here.
"""

from __future__ import annotations

import os

# Not typing.TYPE_CHECKING: importing typing costs the OCF monitor of every interval ~5 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Mapping

    from kvmguest.agents.base import Env, Runtime
    from kvmguest.agents.ocf_interface import OcfSide
    from kvmguest.model.attributes import AttrDef, Typed
    from kvmguest.model.config import Block, Config, Diagnostic
    from kvmguest.model.ranges import Range
    from kvmguest.model.resolver import Loaded
    from kvmguest.model.states import MonitorResult


class Agent:
    """One resource type: its type text (types.cf syntax) and its entry points.

    Subclasses override what their type has; the defaults say "nothing of that kind".
    Methods import their drivers when called, never at import time.
    """

    type_name: str = ""
    # The agent an OCF call that names no type means, when there are several (the first
    # type, for `python -m kvmguest.ocf ACTION` as it always was).
    ocf_default = False

    def type_text(self) -> str:
        """The type's definition in types.cf syntax."""
        raise NotImplementedError

    def check(self, cfg: Config, block: Block, attrs: dict[str, AttrDef]) -> list[Diagnostic]:
        """The validate hook: this type's own checks of one resource, with positions."""
        return []

    def ranges(self) -> dict[str, Range]:
        """Bounds of the type's own integer attributes, which ``validate`` enforces on the
        resolved values (the framework's statics are bounded by the model)."""
        return {}

    def identity(self, values: dict[str, Typed]) -> str | None:
        """What a resource with these values (resolved on one system) manages, as a short
        phrase ("guest 'web'"); two resources with the same identity on one system are
        refused by ``validate``. None: nothing that could clash."""
        return None

    def runtime(self, env: Env, *, shared: bool = False) -> Runtime:
        """The agent's per-process state, from which resources are bound; ``shared``: one
        process runs many resources and feeds them events (the daemon)."""
        raise NotImplementedError

    def prepare_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called once by the daemon on its loop, before any connection is opened."""

    def ocf(self) -> OcfSide | None:
        """The Pacemaker side of the type (parameters, lean monitor, actions), if any."""
        return None

    def ocf_quick_monitor(self, environ: Mapping[str, str]) -> tuple[int, str] | None:
        """The OCF monitor from the environment alone, as (OCF code, reason), before the
        OCF interface is even imported (every interval's cost); None: the usual path."""
        return None

    def oneshot_recipe(self, loaded: Loaded, resource: str, env: Env) -> dict[str, str] | None:
        """What :meth:`oneshot_monitor` needs to monitor ``resource`` on ``env``'s system,
        as strings (kept in the validated-configuration cache); None when only the full
        entry point can (a one-shot then binds the resource)."""
        return None

    def oneshot_monitor(self, recipe: dict[str, str]) -> MonitorResult:
        """The resource's monitor from its recipe alone: the one-shot command's lean path
        (no configuration model), the same state table as the full monitor."""
        raise NotImplementedError

    def demo(self, workdir: str | None) -> int | None:
        """Run the type's demonstration; None when it has none."""
        return None

    def dr_payload(self, loaded: Loaded, resource: str, system: str | None, path: str) -> str:
        """Write the DR payload image online would attach; returns what the image holds."""
        raise KeyError(f"resources of type {self.type_name} have no DR payload")


_AGENTS: dict[str, Agent] = {}
_discovered = False
_generation = 0  # bumped at every change: what is derived from the agents is rebuilt


def register(agent: Agent) -> Agent:
    global _generation
    if not agent.type_name:
        raise ValueError(f"{agent!r} has no type name")
    _AGENTS[agent.type_name] = agent
    _generation += 1
    return agent


def unregister(type_name: str) -> None:
    global _generation
    if _AGENTS.pop(type_name, None) is not None:
        _generation += 1


def generation() -> int:
    """Changes whenever an agent is registered or unregistered."""
    _discover()
    return _generation


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    here = os.path.dirname(__file__)
    for entry in sorted(os.listdir(here)):
        if os.path.isfile(os.path.join(here, entry, "__init__.py")):
            __import__(f"{__package__}.{entry}")  # importlib costs every monitor ~1 ms


def agents() -> list[Agent]:
    """Every registered agent, in a stable order."""
    _discover()
    return [_AGENTS[name] for name in sorted(_AGENTS)]


def get(type_name: str) -> Agent | None:
    _discover()
    return _AGENTS.get(type_name)


def require(type_name: str) -> Agent:
    """The agent of ``type_name``; KeyError naming the known types otherwise."""
    agent = get(type_name)
    if agent is None:
        known = ", ".join(sorted(_AGENTS)) or "none"
        raise KeyError(f"kvmguest has no agent for type {type_name!r} (agents: {known})")
    return agent


def ocf_agents() -> list[Agent]:
    """The agents with a Pacemaker side."""
    return [a for a in agents() if a.ocf() is not None]


def default_ocf_agent() -> Agent:
    """The agent an OCF call that names no type means: the only one there is, or the one
    that says it is the default."""
    found = ocf_agents()
    if len(found) > 1:
        found = [a for a in found if a.ocf_default] or found
    if len(found) != 1:
        names = ", ".join(a.type_name for a in found) or "none"
        raise KeyError(f"name the resource type (OCF_RESOURCE_TYPE): agents: {names}")
    return found[0]


def code_stamp() -> str:
    """What a cached validation depends on besides the files: the code that validated it
    (the model and every agent, their type texts and hooks), by name, size and mtime."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts: list[str] = []
    for sub in ("model", "agents"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, sub)):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith((".py", ".cf", ".lark")):
                    st = os.stat(os.path.join(dirpath, name))
                    parts.append(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns}")
    parts += sorted(a.type_name for a in agents())
    from kvmguest.model.cache import sha256_hex

    return sha256_hex("\n".join(parts).encode())
