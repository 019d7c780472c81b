"""How a resource's fault spreads through its service group (pure): VCS's Critical.

VCS, when a resource faults, takes the resources that depend on it (its parents, up the
``requires`` tree) offline; the group faults — and VCS fails it over — only when a
*critical* resource is on that path: the faulted resource itself or one of its ancestors.
A fault that meets only resources with Critical = 0 leaves the group where it runs:
the faulted resource stays FAULTED, its parents are offline, the rest keeps running.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from kvmguest.framework.decision import State


class _Spec(Protocol):
    """What of a group this needs (groups.GroupSpec, which imports this module)."""

    @property
    def resources(self) -> tuple[str, ...]: ...

    @property
    def non_critical(self) -> frozenset[str]: ...

    def parents(self, resource: str) -> tuple[str, ...]: ...


def ancestors(spec: _Spec, resource: str) -> list[str]:
    """Every resource that requires ``resource``, directly or through others."""
    seen: list[str] = []
    todo = list(spec.parents(resource))
    while todo:
        r = todo.pop()
        if r not in seen:
            seen.append(r)
            todo += spec.parents(r)
    return seen


def faults_group(spec: _Spec, resource: str) -> bool:
    """Whether a fault of ``resource`` faults its group (a critical resource on its path)."""
    return any(r not in spec.non_critical for r in (resource, *ancestors(spec, resource)))


def group_faulted(spec: _Spec, states: Mapping[str, State]) -> bool:
    return any(states.get(r) is State.FAULTED and faults_group(spec, r) for r in spec.resources)


def parents_to_offline(spec: _Spec, states: Mapping[str, State]) -> tuple[str, ...]:
    """The resources to take offline now because something they require has FAULTED:
    ONLINE ancestors of a FAULTED resource whose own parents are already down (the
    offline order, parents first)."""
    down = {State.OFFLINE, State.INTENTIONAL_OFFLINE, State.FAULTED}
    hit: set[str] = set()
    for r in spec.resources:
        if states.get(r) is State.FAULTED:
            hit.update(ancestors(spec, r))
    return tuple(
        r
        for r in spec.resources
        if r in hit
        and states.get(r) is State.ONLINE
        and all(states.get(p) in down for p in spec.parents(r))
    )
