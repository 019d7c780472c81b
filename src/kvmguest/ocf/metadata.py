"""An OCF agent's meta-data: parameters and descriptions from the agent's OCF side,
advertised timeouts from its type (OnlineTimeout -> start, OfflineTimeout -> stop,
MonitorTimeout/MonitorInterval -> monitor, MigrateTimeout -> migrate_to/migrate_from).

It validates against the OCF DTD that Debian ships (``ra-api-1.dtd``). That DTD predates
OCF 1.1, so two OCF 1.1 items are left out on purpose: the ``reload-agent`` action and the
``reloadable`` attribute. The legacy ``reload`` action is advertised instead; Pacemaker then
reloads (rather than restarts) the resource when only parameters not marked ``unique``
change — which is right for this agent, since it keeps no state between actions and reads
its parameters anew each time.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata as pkg_metadata
from xml.sax.saxutils import escape, quoteattr

from kvmguest.agents import registry
from kvmguest.agents.loader import builtin_types
from kvmguest.agents.ocf_interface import OcfSide
from kvmguest.model.resolver import type_defaults


@dataclass(frozen=True)
class Timeouts:
    """Advertised op timeouts (seconds) and the monitor interval, from the type."""

    start: int
    stop: int
    monitor: int
    monitor_interval: int
    migrate: int

    @classmethod
    def from_type(cls, type_name: str | None = None) -> Timeouts:
        name = type_name or registry.default_ocf_agent().type_name
        values = type_defaults(builtin_types()[name])

        def value(name: str) -> int:
            typed = values[name]
            assert isinstance(typed, int)
            return typed

        return cls(
            start=value("OnlineTimeout"),
            stop=value("OfflineTimeout"),
            monitor=value("MonitorTimeout"),
            monitor_interval=value("MonitorInterval"),
            migrate=value("MigrateTimeout"),
        )


def version() -> str:
    try:
        return pkg_metadata.version("kvmguest")
    except pkg_metadata.PackageNotFoundError:
        return "0"


def _side(type_name: str) -> OcfSide:
    side = registry.require(type_name).ocf()
    if side is None:
        raise KeyError(f"type {type_name} has no OCF agent")
    return side


def render(timeouts: Timeouts | None = None, type_name: str | None = None) -> str:
    """The meta-data XML of ``type_name``'s agent (default: the only OCF agent)."""
    name = type_name or registry.default_ocf_agent().type_name
    side = _side(name)
    t = timeouts or Timeouts.from_type(name)
    out = [
        '<?xml version="1.0"?>',
        '<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">',
        f"<resource-agent name={quoteattr(name)} version={quoteattr(version())}>",
        "<version>1.1</version>",
        f'<longdesc lang="en">{escape(side.longdesc)}</longdesc>',
        f'<shortdesc lang="en">{escape(side.shortdesc)}</shortdesc>',
        "<parameters>",
    ]
    for p in side.params:
        out += [
            f'<parameter name="{p.name}" unique="{int(p.unique)}" required="0">',
            f'<longdesc lang="en">{escape(p.longdesc)}</longdesc>',
            f'<shortdesc lang="en">{escape(p.shortdesc)}</shortdesc>',
            f'<content type="{p.kind}" default={quoteattr(p.default)}/>',
            "</parameter>",
        ]
    out += [
        "</parameters>",
        "<actions>",
        f'<action name="start" timeout="{t.start}s"/>',
        f'<action name="stop" timeout="{t.stop}s"/>',
        f'<action name="monitor" timeout="{t.monitor}s" interval="{t.monitor_interval}s" '
        'depth="0"/>',
    ]
    if side.migrate:
        out += [
            f'<action name="migrate_to" timeout="{t.migrate}s"/>',
            f'<action name="migrate_from" timeout="{t.migrate}s"/>',
        ]
    out += [
        '<action name="reload" timeout="30s"/>',
        '<action name="validate-all" timeout="30s"/>',
        '<action name="meta-data" timeout="5s"/>',
        "</actions>",
        "</resource-agent>",
    ]
    return "\n".join(out) + "\n"
