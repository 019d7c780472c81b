"""The parsed configuration: cluster, systems, groups, resources, links and types.

Positions are kept beside the values (``compare=False``) so that two configurations that
say the same thing compare equal whatever their layout — which is what a round trip
through the printer must preserve.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvmguest.model.attributes import AttrDef, Value


@dataclass(frozen=True)
class Pos:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


NOWHERE = Pos("<built-in>", 0, 0)


ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    pos: Pos
    message: str
    # "error" makes a configuration invalid; a "warning" is reported and starts nothing less.
    severity: str = ERROR

    def __str__(self) -> str:
        if self.severity == WARNING:
            return f"{self.pos}: warning: {self.message}"
        return f"{self.pos}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.pos.file, "line": self.pos.line, "col": self.pos.col,
                "severity": self.severity, "message": self.message}  # fmt: skip


def errors_of(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """The diagnostics that make a configuration invalid (warnings do not)."""
    return [d for d in diagnostics if d.severity == ERROR]


class ConfigInvalid(Exception):
    """The configuration has errors; ``diagnostics`` lists each with its position."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__("\n".join(str(d) for d in diagnostics))
        self.diagnostics = diagnostics


@dataclass
class TypeDef:
    name: str
    attrs: dict[str, AttrDef] = field(default_factory=dict)
    pos: Pos = field(default=NOWHERE, compare=False)
    attr_pos: dict[str, Pos] = field(default_factory=dict, compare=False)


@dataclass
class Block:
    """An attribute block: a cluster, system, group or resource."""

    kind: str  # "cluster", "system", "group" or a resource type name
    name: str
    attrs: dict[str, Value] = field(default_factory=dict)
    # Attr -> system -> value: the `Attr@system = value` local values.
    local: dict[str, dict[str, Value]] = field(default_factory=dict)
    pos: Pos = field(default=NOWHERE, compare=False)
    attr_pos: dict[str, Pos] = field(default_factory=dict, compare=False)
    # Only for resources: the group whose block came last before this one.
    group: str | None = None

    def raw(self, attr: str, system: str | None = None) -> Value | None:
        """The value written for ``attr`` (the system's local one first), or None."""
        if system is not None and system in self.local.get(attr, {}):
            return self.local[attr][system]
        return self.attrs.get(attr)

    def position(self, attr: str) -> Pos:
        return self.attr_pos.get(attr, self.pos)


@dataclass(frozen=True)
class Link:
    """``parent requires child``: the child comes online first, goes offline last."""

    parent: str
    child: str
    pos: Pos = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class GroupLink:
    """``requires group G online global soft`` inside a group (kept, printed, not acted on)."""

    group: str
    child_group: str
    words: tuple[str, ...]
    pos: Pos = field(default=NOWHERE, compare=False)


@dataclass
class Config:
    path: str = "<memory>"
    includes: list[str] = field(default_factory=list)
    types: dict[str, TypeDef] = field(default_factory=dict)  # defined in the files
    cluster: Block | None = None
    systems: dict[str, Block] = field(default_factory=dict)
    groups: dict[str, Block] = field(default_factory=dict)
    resources: dict[str, Block] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    group_links: list[GroupLink] = field(default_factory=list)
    # Every file read for it (main.cf and its includes, resolved): what a cache checks.
    files: list[str] = field(default_factory=list, compare=False)

    def resource(self, name: str) -> Block:
        try:
            return self.resources[name]
        except KeyError:
            known = ", ".join(sorted(self.resources)) or "none"
            raise KeyError(
                f"{self.path}: no resource named {name!r} (resources: {known})"
            ) from None

    def group_resources(self, group: str) -> list[Block]:
        return [r for r in self.resources.values() if r.group == group]
