"""Service groups on one host (pure): dependency order, plans, AutoStart, state.

Membership and placement across hosts are Pacemaker's job; this module only answers, for
the groups of *this* system: in which order do resources go online or offline, which
groups start at boot, what does an operator command amount to, and what state is a
group in. Resource states come in as ``{name: State}`` from the resource machines.

A group is driven wave by wave: :func:`next_to_online` names the resources whose
children are all ONLINE (ask the machines to online them; call again as their states
change), :func:`next_to_offline` the resources whose parents are all offline. The
:class:`Plan` functions give the whole order up front, for display and for refusing an
operation early with a clear reason.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

from kvmguest.framework.decision import State
from kvmguest.framework.faults import group_faulted
from kvmguest.model.attributes import Typed
from kvmguest.model.config import Block
from kvmguest.model.resolver import Loaded

_DOWN = frozenset({State.OFFLINE, State.INTENTIONAL_OFFLINE, State.FAULTED})
_STARTING = frozenset({State.GOING_ONLINE, State.RESTARTING})
_STOPPING = frozenset({State.GOING_OFFLINE, State.MIGRATING, State.CLEANING})
_UNSURE = frozenset({State.UNKNOWN, State.PROBING})


class GroupError(ValueError):
    """An operation or a group definition the group logic refuses (message says why)."""


class DependencyCycle(GroupError):
    def __init__(self, group: str, cycle: tuple[str, ...]) -> None:
        self.group = group
        self.cycle = cycle
        chain = " requires ".join((*cycle, cycle[0]))
        super().__init__(f"group {group}: resources require each other in a cycle: {chain}")


class GroupState(enum.Enum):
    ONLINE = "ONLINE"
    PARTIAL = "PARTIAL"
    OFFLINE = "OFFLINE"
    FAULTED = "FAULTED"


@dataclass(frozen=True)
class GroupStatus:
    """The aggregate, with the VCS-style qualifiers shown as ``OFFLINE|STARTING``."""

    state: GroupState
    starting: bool = False
    stopping: bool = False
    admin_wait: bool = False
    unknown: bool = False

    def __str__(self) -> str:
        flags = [
            name
            for name, on in (
                ("STARTING", self.starting),
                ("STOPPING", self.stopping),
                ("ADMIN_WAIT", self.admin_wait),
                ("UNKNOWN", self.unknown),
            )
            if on
        ]
        return "|".join([self.state.value, *flags])


class Op(enum.Enum):
    ONLINE = "online"
    OFFLINE = "offline"
    CLEAR = "clear"


@dataclass(frozen=True)
class Step:
    resource: str
    op: Op
    wave: int  # steps of one wave may run together; wave n+1 waits for wave n


@dataclass(frozen=True)
class Plan:
    group: str
    operation: str  # "online", "offline", "switch", "clear"
    steps: tuple[Step, ...]
    target: str = ""  # switch: the system the group is to move to

    @property
    def empty(self) -> bool:
        return not self.steps

    def waves(self) -> tuple[tuple[str, ...], ...]:
        out: dict[int, list[str]] = {}
        for step in self.steps:
            out.setdefault(step.wave, []).append(step.resource)
        return tuple(tuple(out[w]) for w in sorted(out))

    def describe(self) -> str:
        if not self.steps:
            return f"{self.operation} {self.group}: nothing to do"
        waves = " then ".join(", ".join(w) for w in self.waves())
        to = f" to {self.target}" if self.target else ""
        return f"{self.operation} {self.group}{to}: {waves}"


@dataclass(frozen=True)
class GroupSpec:
    """One service group as this system sees it. ``requires`` holds (parent, child)."""

    name: str
    resources: tuple[str, ...]
    requires: tuple[tuple[str, str], ...] = ()
    system_list: tuple[str, ...] = ()  # in priority order
    auto_start_list: tuple[str, ...] = ()
    auto_start: bool = True
    parallel: bool = False
    frozen: bool = False
    # Critical = 0: their fault alone does not fault the group (framework/faults.py).
    non_critical: frozenset[str] = frozenset()
    _waves: tuple[tuple[str, ...], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        known = set(self.resources)
        if len(known) != len(self.resources):
            dup = next(r for r in self.resources if self.resources.count(r) > 1)
            raise GroupError(f"group {self.name}: resource {dup} is listed twice")
        for parent, child in self.requires:
            for res in (parent, child):
                if res not in known:
                    raise GroupError(
                        f"group {self.name}: {parent} requires {child}, but {res} is not "
                        "a resource of this group (links stay inside a group)"
                    )
            if parent == child:
                raise DependencyCycle(self.name, (parent,))
        object.__setattr__(self, "_waves", _waves(self.name, self.resources, self.requires))

    @cached_property
    def _children(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {r: [] for r in self.resources}
        for parent, child in self.requires:
            out[parent].append(child)
        return {r: tuple(sorted(set(c))) for r, c in out.items()}

    @cached_property
    def _parents(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {r: [] for r in self.resources}
        for parent, child in self.requires:
            out[child].append(parent)
        return {r: tuple(sorted(set(p))) for r, p in out.items()}

    def children(self, resource: str) -> tuple[str, ...]:
        """What ``resource`` requires (comes online before it, goes offline after it)."""
        return self._children[resource]

    def parents(self, resource: str) -> tuple[str, ...]:
        return self._parents[resource]

    def online_waves(self) -> tuple[tuple[str, ...], ...]:
        """Children first: each wave needs only resources of earlier waves."""
        return self._waves

    def offline_waves(self) -> tuple[tuple[str, ...], ...]:
        """Parents first: the online order reversed, wave by wave."""
        return tuple(reversed(self._waves))

    def with_frozen(self, frozen: bool) -> GroupSpec:
        return replace(self, frozen=frozen)

    @classmethod
    def from_config(cls, loaded: Loaded, name: str) -> GroupSpec:
        """The group as the one resolver types its attributes (and its resources'
        Enabled and Critical)."""
        cfg = loaded.cfg
        block = cfg.groups[name]

        def attr(attr_name: str) -> Typed:
            return loaded.object_attr("group", block, attr_name)

        def flag(resource: Block, attr_name: str) -> bool:
            return bool(loaded.resource_value(resource.name, attr_name))

        # Enabled = 0: not managed, as if absent (its links with it).
        members = [r for r in cfg.group_resources(name) if flag(r, "Enabled")]
        resources = tuple(r.name for r in members)
        inside = set(resources)
        links = tuple(
            (lk.parent, lk.child) for lk in cfg.links if lk.parent in inside and lk.child in inside
        )
        auto_start_list = attr("AutoStartList")
        return cls(
            name=name,
            resources=resources,
            requires=links,
            system_list=tuple(loaded.system_list(name)) if "SystemList" in block.attrs else (),
            auto_start_list=tuple(str(s) for s in auto_start_list)
            if isinstance(auto_start_list, list)
            else (),
            auto_start=bool(attr("AutoStart")),
            parallel=bool(attr("Parallel")),
            frozen=bool(attr("Frozen")) or bool(attr("TFrozen")),
            non_critical=frozenset(r.name for r in members if not flag(r, "Critical")),
        )


def _waves(
    group: str, resources: tuple[str, ...], requires: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, ...], ...]:
    """Kahn's algorithm by levels; what is left over holds a cycle, which is named."""
    children: dict[str, set[str]] = {r: set() for r in resources}
    for parent, child in requires:
        children[parent].add(child)
    placed: set[str] = set()
    waves: list[tuple[str, ...]] = []
    while len(placed) < len(resources):
        wave = tuple(sorted(r for r in resources if r not in placed and children[r] <= placed))
        if not wave:
            raise DependencyCycle(group, _find_cycle(children, set(resources) - placed))
        waves.append(wave)
        placed.update(wave)
    return tuple(waves)


def _find_cycle(children: Mapping[str, set[str]], left: set[str]) -> tuple[str, ...]:
    # Every leftover resource requires at least one other leftover one, so walking down
    # from any of them must come back to a resource already on the path.
    path: list[str] = []
    node = min(left)
    while node not in path:
        path.append(node)
        node = min(c for c in children[node] if c in left)
    return tuple(path[path.index(node) :])


# --- state ------------------------------------------------------------------------------


def _states(spec: GroupSpec, states: Mapping[str, State]) -> dict[str, State]:
    missing = [r for r in spec.resources if r not in states]
    if missing:
        raise GroupError(f"group {spec.name}: no state for {', '.join(missing)}")
    return {r: states[r] for r in spec.resources}


def group_status(spec: GroupSpec, states: Mapping[str, State]) -> GroupStatus:
    """FAULTED if a resource is whose fault faults the group (Critical); ONLINE if all
    are; OFFLINE if none is; else PARTIAL."""
    mine = _states(spec, states).values()
    online = sum(1 for s in mine if s is State.ONLINE)
    if group_faulted(spec, states):
        agg = GroupState.FAULTED
    elif online and online == len(mine):
        agg = GroupState.ONLINE
    elif online:
        agg = GroupState.PARTIAL
    else:
        agg = GroupState.OFFLINE
    return GroupStatus(
        agg,
        starting=any(s in _STARTING for s in mine),
        stopping=any(s in _STOPPING for s in mine),
        admin_wait=any(s.admin_wait for s in mine),
        unknown=any(s in _UNSURE for s in mine),
    )


# --- driving ----------------------------------------------------------------------------


def next_to_online(spec: GroupSpec, states: Mapping[str, State]) -> tuple[str, ...]:
    """Resources to ask for online now: down (not FAULTED), every child ONLINE."""
    if spec.frozen:
        return ()
    mine = _states(spec, states)
    return tuple(
        r
        for wave in spec.online_waves()
        for r in wave
        if mine[r] in (State.OFFLINE, State.INTENTIONAL_OFFLINE)
        and all(mine[c] is State.ONLINE for c in spec.children(r))
    )


def next_to_offline(spec: GroupSpec, states: Mapping[str, State]) -> tuple[str, ...]:
    """Resources to ask for offline now: ONLINE or UNKNOWN, every parent down."""
    if spec.frozen:
        return ()
    mine = _states(spec, states)
    return tuple(
        r
        for wave in spec.offline_waves()
        for r in wave
        if mine[r] in (State.ONLINE, State.UNKNOWN)
        and all(mine[p] in _DOWN for p in spec.parents(r))
    )


# --- plans ------------------------------------------------------------------------------


def _refuse_if_frozen(spec: GroupSpec, operation: str) -> None:
    if spec.frozen:
        raise GroupError(f"{operation} {spec.name} refused: the group is frozen")


def plan_online(spec: GroupSpec, states: Mapping[str, State]) -> Plan:
    """hagrp -online: every resource not yet online, children first."""
    _refuse_if_frozen(spec, "online")
    mine = _states(spec, states)
    blockers = {
        State.FAULTED: "FAULTED (clear it first)",
        State.UNKNOWN: "UNKNOWN (probe it first)",
        State.PROBING: "not probed yet",
    }
    for r, s in mine.items():
        why = blockers.get(s) or ("in ADMIN_WAIT" if s.admin_wait else None)
        if why is None and s in _STOPPING:
            why = f"{s.value} in progress"
        if why:
            raise GroupError(f"online {spec.name} refused: {r} is {why}")
    steps = tuple(
        Step(r, Op.ONLINE, n)
        for n, wave in enumerate(spec.online_waves())
        for r in wave
        if mine[r] in (State.OFFLINE, State.INTENTIONAL_OFFLINE)
    )
    return Plan(spec.name, "online", _renumber(steps))


def plan_offline(spec: GroupSpec, states: Mapping[str, State], operation: str = "offline") -> Plan:
    """hagrp -offline: every resource still up, parents first."""
    _refuse_if_frozen(spec, operation)
    mine = _states(spec, states)
    for r, s in mine.items():
        if s.admin_wait or s in (State.PROBING, State.CLEANING) or s in _STARTING:
            why = "in ADMIN_WAIT" if s.admin_wait else f"{s.value}"
            raise GroupError(f"{operation} {spec.name} refused: {r} is {why}")
    steps = tuple(
        Step(r, Op.OFFLINE, n)
        for n, wave in enumerate(spec.offline_waves())
        for r in wave
        if mine[r] in (State.ONLINE, State.UNKNOWN)
    )
    return Plan(spec.name, operation, _renumber(steps))


def plan_switch(
    spec: GroupSpec, states: Mapping[str, State], this_system: str, to_system: str
) -> Plan:
    """hagrp -switch on one host: the offline half here, in order; the target is noted.

    Starting the group on ``to_system`` is the cluster's business (Pacemaker, or the
    operator there).
    """
    if spec.parallel:
        raise GroupError(f"switch {spec.name} refused: a parallel group is not switched")
    if spec.system_list and to_system not in spec.system_list:
        raise GroupError(
            f"switch {spec.name} refused: {to_system} is not in its SystemList "
            f"({', '.join(spec.system_list)})"
        )
    if to_system == this_system:
        raise GroupError(f"switch {spec.name} refused: {to_system} is this system")
    plan = plan_offline(spec, states, "switch")
    return replace(plan, target=to_system)


def plan_clear(spec: GroupSpec, states: Mapping[str, State]) -> Plan:
    """hagrp -clear: clear every FAULTED resource (allowed on a frozen group)."""
    mine = _states(spec, states)
    steps = tuple(Step(r, Op.CLEAR, 0) for r in spec.resources if mine[r] is State.FAULTED)
    return Plan(spec.name, "clear", steps)


def _renumber(steps: tuple[Step, ...]) -> tuple[Step, ...]:
    """Close the gaps left by waves with nothing to do."""
    order = sorted({s.wave for s in steps})
    index = {w: n for n, w in enumerate(order)}
    return tuple(Step(s.resource, s.op, index[s.wave]) for s in steps)


def autostart_groups(
    specs: Iterable[GroupSpec], system: str, states: Mapping[str, State] | None = None
) -> tuple[str, ...]:
    """Groups to bring online at start-up: AutoStart=1, AutoStartList names ``system``
    (which SystemList must hold too), not frozen, and (given states) no FAULTED resource."""
    out = []
    for spec in specs:
        if not spec.auto_start or spec.frozen or system not in spec.auto_start_list:
            continue
        if spec.system_list and system not in spec.system_list:
            continue
        if states is not None and any(states.get(r) is State.FAULTED for r in spec.resources):
            continue
        out.append(spec.name)
    return tuple(sorted(out))
