"""Which service groups the agents can run whole, and why the others are not run.

A main.cf written for VCS puts a guest in one group with its storage and its address
(Mount, IP, NIC, DiskGroup ...). kvmguest has no agent for those types: running only the
guest of such a group would start it without its disks or its address, so the daemon
runs none of the group and says why (``agent --check``, ``status``). A resource with
Enabled = 0 is not managed and does not count.
"""

from __future__ import annotations

from kvmguest.agents import registry
from kvmguest.model.config import Block
from kvmguest.model.resolver import Loaded


def managed(loaded: Loaded, block: Block) -> bool:
    """Enabled = 0 takes a resource out of management (VCS: the agent ignores it); the
    value as the one resolver types it (a types.cf may change its default)."""
    return bool(loaded.resource_value(block.name, "Enabled"))


def without_agent(loaded: Loaded, group: str) -> list[Block]:
    """The group's managed resources whose type has no agent."""
    return [
        b
        for b in loaded.cfg.group_resources(group)
        if managed(loaded, b) and registry.get(b.kind) is None
    ]


def groups_not_run(loaded: Loaded) -> dict[str, str]:
    """Group name -> why no part of it is run here, for the groups that hold a resource
    of a type kvmguest has no agent for."""
    out: dict[str, str] = {}
    for group in loaded.cfg.groups:
        foreign = without_agent(loaded, group)
        if foreign:
            names = ", ".join(f"{b.name} ({b.kind})" for b in foreign)
            out[group] = (
                f"it holds {names}: kvmguest has no agent for "
                f"{'that type' if len({b.kind for b in foreign}) == 1 else 'those types'}, "
                "and its resources would start without them (their storage or address)"
            )
    return out
