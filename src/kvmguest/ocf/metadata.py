"""The agent's OCF meta-data: parameters from :mod:`kvmguest.ocf.params`, advertised
timeouts from the KVMGuest type (OnlineTimeout -> start, OfflineTimeout -> stop,
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

from kvmguest.model.types import KVMGUEST, builtin_types, effective_attrs
from kvmguest.ocf.params import PARAMS

LONGDESC = (
    "Keeps a KVM guest (through libvirt) or a RHEV/oVirt VM (through the RHV-M REST API) "
    "running on one node of the cluster: the KVMGuest agent of Veritas Cluster Server, "
    "re-implemented by kvmguest, behind the OCF interface. Start defines the guest from its "
    "XML file when needed and starts it; stop shuts it down gracefully and forces it off "
    "after DelayAfterGuestOffline; migrate_to/migrate_from live-migrate it (set "
    "allow-migrate=true). The guest is described either by the parameters below or by a "
    "resource of a VCS main.cf (config + resource).\n\n"
    "monitor never reports a guest whose QEMU process runs here as stopped: with libvirtd "
    "down or restarting it answers 190 (degraded: running, libvirt unreachable), and stop "
    "still stops the guest (it kills the QEMU through libvirt's pid file). "
    "OCF_CHECK_LEVEL: 0 (default) reads the guest's state, plus the CEInfo heartbeat when "
    "ce_enabled; 10 also checks that every disk and CD-ROM source of the guest is present "
    "and readable on this node (DevScan). Exit codes and details: kvmguest's "
    "docs/pacemaker.md."
)
SHORTDESC = "KVM guest or RHEV VM (kvmguest, the VCS KVMGuest agent)"


@dataclass(frozen=True)
class Timeouts:
    """Advertised op timeouts (seconds) and the monitor interval, from the type."""

    start: int
    stop: int
    monitor: int
    monitor_interval: int
    migrate: int

    @classmethod
    def from_type(cls) -> Timeouts:
        attrs = effective_attrs(builtin_types()[KVMGUEST])

        def value(name: str) -> int:
            default = attrs[name].default
            assert isinstance(default, str)
            return int(default)

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


def render(timeouts: Timeouts | None = None) -> str:
    t = timeouts or Timeouts.from_type()
    out = [
        '<?xml version="1.0"?>',
        '<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">',
        f'<resource-agent name="KVMGuest" version={quoteattr(version())}>',
        "<version>1.1</version>",
        f'<longdesc lang="en">{escape(LONGDESC)}</longdesc>',
        f'<shortdesc lang="en">{escape(SHORTDESC)}</shortdesc>',
        "<parameters>",
    ]
    for p in PARAMS:
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
        f'<action name="migrate_to" timeout="{t.migrate}s"/>',
        f'<action name="migrate_from" timeout="{t.migrate}s"/>',
        '<action name="reload" timeout="30s"/>',
        '<action name="validate-all" timeout="30s"/>',
        '<action name="meta-data" timeout="5s"/>',
        "</actions>",
        "</resource-agent>",
    ]
    return "\n".join(out) + "\n"
