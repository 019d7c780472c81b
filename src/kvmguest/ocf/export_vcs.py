"""What ``kvmguest export pacemaker`` does with a VCS main.cf's own resources: the types of
VCS's bundled agents that resource-agents has a peer for, and the resource attributes
Critical and Enabled (docs/pacemaker.md, "kvmguest export pacemaker").

* Mount -> ``ocf:heartbeat:Filesystem`` and IP -> ``ocf:heartbeat:IPaddr2``, with the
  attributes below as their parameters; every other attribute written is reported. The
  other types (NIC, DiskGroup, Application ...) are not exported.
* Critical = 0, when no critical resource requires it (VCS then does not fault the group):
  ``on-fail=stop`` on its monitors — a failed monitor stops it where it runs, stopping
  what comes after it in the group, and nothing moves to another node.
* Enabled = 0: not exported (VCS does not manage it: as if absent).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from kvmguest.framework.faults import faults_group
from kvmguest.framework.groups import GroupSpec
from kvmguest.model.attributes import Value
from kvmguest.model.config import Block
from kvmguest.model.resolver import Loaded

HEARTBEAT = ("ocf", "heartbeat")


@dataclass(frozen=True)
class HeartbeatAgent:
    agent: str  # its type under ocf:heartbeat
    params: dict[str, str]  # VCS attribute -> the agent's parameter


MAPPED = {
    "Mount": HeartbeatAgent(
        "Filesystem",
        {
            "MountPoint": "directory",
            "BlockDevice": "device",
            "FSType": "fstype",
            "MountOpt": "options",
        },
    ),
    "IP": HeartbeatAgent("IPaddr2", {"Address": "ip", "NetMask": "cidr_netmask", "Device": "nic"}),
}
# The resource attributes the export maps for every primitive, whatever its type.
RESOURCE_ATTRS = {"Critical", "Enabled"}


def heartbeat(kind: str) -> HeartbeatAgent | None:
    return MAPPED.get(kind)


def _netmask(value: str) -> str:
    """IPaddr2 takes the prefix length: 255.255.255.0 -> 24 (a length stays as it is)."""
    try:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{value}").prefixlen)
    except ValueError:
        return value


def heartbeat_params(block: Block, mapping: HeartbeatAgent) -> dict[str, str]:
    """The agent's parameters from ``block`` (resource-wide values)."""
    params: dict[str, str] = {}
    for attr, value in block.attrs.items():
        name = mapping.params.get(attr)
        if name is not None and isinstance(value, str):
            params[name] = _netmask(value) if name == "cidr_netmask" else value
    return params


def heartbeat_notes(block: Block, mapping: HeartbeatAgent, statics: dict[str, bool]) -> list[str]:
    """What of ``block`` has no form in the primitive ("not exported" notes); ``statics``:
    the type's static attributes, each True when the export maps it to ops or meta."""
    agent = f"ocf:heartbeat:{mapping.agent}"
    notes = []
    for attr, value in block.attrs.items():
        if attr in mapping.params or attr in RESOURCE_ATTRS or statics.get(attr):
            continue
        why = "a static the export does not map" if attr in statics else f"no {agent} parameter"
        notes.append(f"resource {block.name}: {attr} = {fmt(value)} ({why})")
    for attr, per in block.local.items():
        for system in per:
            notes.append(
                f"resource {block.name}: {attr}@{system} (the {agent} primitive takes "
                "one value for every node)"
            )
    return notes


def fmt(value: Value) -> str:
    """A value as the notes show it (the main.cf's braces, no quoting)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "{ " + ", ".join(value) + " }"
    return "{ " + ", ".join(f"{k} = {v}" for k, v in value.items()) + " }"


def contained_faults(loaded: Loaded, group: str) -> set[str]:
    """The group's resources whose fault does not fault the group (Critical = 0, and no
    critical resource requires them)."""
    spec = GroupSpec.from_config(loaded, group)
    return {r for r in spec.resources if not faults_group(spec, r)}
