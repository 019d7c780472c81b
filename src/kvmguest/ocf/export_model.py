"""The Pacemaker configuration as :mod:`kvmguest.ocf.export` builds it: primitives with
their parameter sets and ops, groups, clones, constraints, and the notes of what was not
exported. Plain data; :mod:`kvmguest.ocf.export_render` writes it as crm shell commands or
CIB XML."""

from __future__ import annotations

from dataclasses import dataclass, field

PROVIDER = ("ocf", "kvmguest")


@dataclass
class ParamSet:
    values: dict[str, str]
    score: int = 1
    node: str | None = None  # only on this node (a rule #uname eq node)


@dataclass
class Op:
    name: str
    timeout: int
    interval: int = 0
    role: str | None = None
    check_level: int | None = None
    on_fail: str | None = None

    @property
    def id_suffix(self) -> str:
        parts = [self.name, f"{self.interval}s"] if self.interval else [self.name]
        if self.role:
            parts.append(self.role.lower())
        if self.check_level is not None:
            parts.append(f"level{self.check_level}")
        return "-".join(parts)


@dataclass
class Primitive:
    id: str
    params: list[ParamSet]
    meta: dict[str, str]
    ops: list[Op]
    kind: str  # the resource type: ocf:kvmguest:<kind>
    provider: tuple[str, str] = PROVIDER  # ocf:heartbeat for a VCS bundled type


@dataclass
class Group:
    id: str
    members: list[str]
    meta: dict[str, str]


@dataclass
class Clone:
    """A group or a lone primitive run on every node: a Parallel group, or an agent whose
    OCF side is ``per_node`` (a container engine)."""

    id: str
    child: str  # a group or a lone primitive
    meta: dict[str, str]


@dataclass
class Location:
    id: str
    rsc: str
    score: str
    node: str | None = None
    # A rule instead of a node: the score applies on every node not in this list.
    not_on: list[str] | None = None


@dataclass
class Order:
    id: str
    first: str
    then: str
    kind: str = "Mandatory"


@dataclass
class Colocation:
    id: str
    rsc: str
    with_rsc: str
    score: str


@dataclass
class Export:
    primitives: list[Primitive] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    clones: list[Clone] = field(default_factory=list)
    locations: list[Location] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    colocations: list[Colocation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The top-level resource (clone, group or lone primitive) of each exported VCS group.
    top: dict[str, str] = field(default_factory=dict)

    def not_exported(self, what: str) -> None:
        self.notes.append(f"not exported: {what}")

    def approximated(self, what: str) -> None:
        self.notes.append(f"approximated: {what}")
