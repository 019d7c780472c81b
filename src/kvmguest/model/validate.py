"""Semantic checks of a parsed configuration. Each problem is one ``file:line:col`` line.

Nothing is started from a configuration that has any of these errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from kvmguest.model import dependencies, ranges, vcs_stock
from kvmguest.model.attributes import AttrDef, Typed, ValueError_, coerce
from kvmguest.model.config import WARNING, Block, Config, Diagnostic, Pos, TypeDef, errors_of
from kvmguest.model.excerpt import excerpt
from kvmguest.model.resolver import Loaded
from kvmguest.model.typecheck import check_types
from kvmguest.model.types import effective_attrs, merged_types, object_types

# A type's own checks of one resource (its agent's validate hook).
Hook = Callable[[Config, Block, dict[str, AttrDef]], list[Diagnostic]]


@dataclass(frozen=True)
class TypeRules:
    """What a type's agent adds to the model's checks of its resources."""

    hook: Hook | None = None
    # Bounds of the type's integer attributes (the framework's are in model.ranges).
    ranges: Mapping[str, ranges.Range] = field(default_factory=dict)
    # The object a resource manages, from its values on one system (a guest, a container):
    # two resources with the same identity on one system would fight over it.
    identity: Callable[[dict[str, Typed]], str | None] | None = None


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


class _Validator:
    def __init__(
        self, cfg: Config, builtin: dict[str, TypeDef], rules: dict[str, TypeRules]
    ) -> None:
        self.cfg = cfg
        self.diags: list[Diagnostic] = []
        self.builtin = builtin
        self.types = merged_types(cfg.types, builtin)
        self.rules = rules

    def error(self, pos: Pos, message: str) -> None:
        self.diags.append(Diagnostic(pos, message))

    def value(self, block: Block, adef: AttrDef, value: object, where: str) -> None:
        pos = block.position(adef.name)
        try:
            coerce(adef, value)  # type: ignore[arg-type]
        except ValueError_ as e:
            self.error(pos, f"{block.kind} {block.name}: {e}")

    def attributes(
        self, block: Block, attrs: dict[str, AttrDef], resource: bool, hook: bool = True
    ) -> None:
        systems = self.cfg.systems
        kind = "resource" if resource else block.kind
        for name in block.attrs.keys() | block.local.keys():
            adef = attrs.get(name)
            if adef is None:
                adef = self.stock(block, name, kind)
            if adef is None:
                self.error(
                    block.position(name),
                    f"{block.kind} {block.name}: unknown attribute {excerpt(name)}"
                    + _suggest(name, [*attrs, *vcs_stock.unused_names(kind)]),
                )
                continue
            if name in block.attrs:
                self.value(block, adef, block.attrs[name], "")
            for system, val in block.local.get(name, {}).items():
                if adef.static:
                    self.error(
                        block.position(name),
                        f"{block.kind} {block.name}: {name} is static and cannot be local "
                        f"({name}@{system})",
                    )
                if systems and system not in systems:
                    self.error(
                        block.position(name),
                        f"{block.kind} {block.name}: {name}@{system}: "
                        f"no system named {excerpt(system)}" + _suggest(system, systems),
                    )
                self.value(block, adef, val, f"{name}@{system}: ")
        if resource and hook:
            self.semantic(block, attrs)

    def stock(self, block: Block, name: str, kind: str) -> AttrDef | None:
        """A stock VCS attribute kvmguest does not use: checked, with one warning."""
        adef = vcs_stock.unused(kind, name)
        if adef is not None:
            self.diags.append(
                Diagnostic(
                    block.position(name),
                    f"{block.kind} {block.name}: {vcs_stock.warning_text(kind, name)}",
                    WARNING,
                )
            )
        return adef

    def semantic(self, block: Block, attrs: dict[str, AttrDef]) -> None:
        hook = self.rules.get(block.kind, TypeRules()).hook
        if hook is not None:
            self.diags.extend(hook(self.cfg, block, attrs))

    def groups(self) -> None:
        systems = self.cfg.systems
        for group in self.cfg.groups.values():
            sl = group.attrs.get("SystemList")
            if isinstance(sl, dict) and systems:
                for name in sl:
                    if name not in systems:
                        self.error(
                            group.position("SystemList"),
                            f"group {group.name}: SystemList names {excerpt(name)}, "
                            "which is not a system" + _suggest(name, systems),
                        )
            asl = group.attrs.get("AutoStartList")
            if isinstance(asl, list) and isinstance(sl, dict):
                for name in asl:
                    if name not in sl:
                        self.error(
                            group.position("AutoStartList"),
                            f"group {group.name}: AutoStartList names {excerpt(name)}, "
                            "which is not in its SystemList",
                        )
            schema = object_types()["group"].attrs
            for name in (*ranges.GROUP_ENUMS, *ranges.GROUP_RANGES):
                raw = group.attrs.get(name)
                if raw is None or name not in schema:
                    continue
                try:
                    typed = coerce(schema[name], raw)
                except ValueError_:
                    continue  # reported with the attribute's type
                why = ranges.not_in_enum(name, typed) or ranges.out_of_range(
                    name, typed, ranges.GROUP_RANGES, {}
                )
                if why:
                    self.error(group.position(name), f"group {group.name}: {why}")

    def systems_of(self, block: Block) -> list[str | None]:
        """The systems a resource may run on: its group's SystemList, else every system."""
        group = self.cfg.groups.get(block.group or "")
        sl = group.attrs.get("SystemList") if group is not None else None
        if isinstance(sl, dict) and sl:
            return list(sl)
        return list(self.cfg.systems) or [None]

    def resolved(self, clean: list[Block]) -> None:
        """Checks of the values as the resolver gives them on each system: the ranges of
        the framework's statics and the type's attributes, and two resources that manage
        one object on one system."""
        loaded = Loaded(self.cfg, self.builtin)
        seen: set[tuple[Pos, str]] = set()
        owners: dict[tuple[str | None, str], Block] = {}
        for block in clean:
            rules = self.rules.get(block.kind, TypeRules())
            attrs = effective_attrs(self.types[block.kind])
            for system in self.systems_of(block):
                values: dict[str, Typed] = {}
                for name, adef in attrs.items():
                    try:
                        values[name] = loaded.resolve(block, adef, system)
                    except ValueError_:
                        continue  # a bad type default: reported at the type
                    why = (ranges.out_of_range(name, values[name]) if adef.static else None) or (
                        ranges.out_of_range(name, values[name], rules.ranges, {})
                    )
                    if not why:
                        continue
                    written = name in block.attrs or name in block.local
                    if not written and adef.static:
                        continue  # a static type default: reported at the type
                    where = "" if written else " (the type's default)"
                    diag = (block.position(name), f"{block.kind} {block.name}: {why}{where}")
                    if diag not in seen:
                        seen.add(diag)
                        self.error(*diag)
                # A disabled resource manages nothing: it cannot fight over its object.
                complete = len(values) == len(attrs) and values.get("Enabled") is not False
                ident = rules.identity(values) if rules.identity and complete else None
                if ident is None:
                    continue
                other = owners.setdefault((system, ident), block)
                if other is not block:
                    on = f" on system {system}" if system else ""
                    self.error(
                        block.pos,
                        f"{block.kind} {block.name}: manages {ident}{on}, as {other.kind} "
                        f"{other.name} ({other.pos}) does: two agents would fight over it",
                    )

    def run(self) -> list[Diagnostic]:
        type_errors = check_types(self.cfg.types, self.builtin)
        for found in type_errors.values():
            self.diags.extend(found)
        # A resource of a type whose definition is wrong is not checked further: its
        # agent's checks and the resolver would read attributes as the type misstates them.
        broken = set(type_errors)
        objects = object_types()
        if self.cfg.cluster is not None:
            self.attributes(self.cfg.cluster, objects["cluster"].attrs, resource=False)
        for system in self.cfg.systems.values():
            self.attributes(system, objects["system"].attrs, resource=False)
        for group in self.cfg.groups.values():
            self.attributes(group, objects["group"].attrs, resource=False)
        self.groups()
        clean: list[Block] = []
        for block in self.cfg.resources.values():
            tdef = self.types.get(block.kind)
            if tdef is None:
                self.error(
                    block.pos,
                    f"resource {block.name}: unknown type {excerpt(block.kind)}"
                    + _suggest(block.kind, self.types),
                )
                continue
            before = len(self.diags)
            self.attributes(
                block, effective_attrs(tdef), resource=True, hook=block.kind not in broken
            )
            if not errors_of(self.diags[before:]) and block.kind not in broken:
                clean.append(block)
        self.resolved(clean)
        self.diags.extend(dependencies.check(self.cfg))
        return sorted(self.diags, key=lambda d: (d.pos.file, d.pos.line, d.pos.col))


def validate(
    cfg: Config, builtin: dict[str, TypeDef], rules: dict[str, TypeRules] | None = None
) -> list[Diagnostic]:
    """Every problem of ``cfg`` with its position; ``builtin``: the types the agents define,
    ``rules``: each type's own checks (the agents' registry passes both)."""
    return _Validator(cfg, builtin, rules or {}).run()
