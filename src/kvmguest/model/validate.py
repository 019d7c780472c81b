"""Semantic checks of a parsed configuration. Each problem is one ``file:line:col`` line.

Nothing is started from a configuration that has any of these errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

from kvmguest.model import vcs_stock
from kvmguest.model.attributes import AttrDef, ValueError_, coerce
from kvmguest.model.config import WARNING, Block, Config, Diagnostic, Pos, TypeDef
from kvmguest.model.types import effective_attrs, merged_types, object_types

# A type's own checks of one resource (its agent's validate hook).
Hook = Callable[[Config, Block, dict[str, AttrDef]], list[Diagnostic]]


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


class _Validator:
    def __init__(self, cfg: Config, builtin: dict[str, TypeDef], hooks: dict[str, Hook]) -> None:
        self.cfg = cfg
        self.diags: list[Diagnostic] = []
        self.types = merged_types(cfg.types, builtin)
        self.hooks = hooks

    def error(self, pos: Pos, message: str) -> None:
        self.diags.append(Diagnostic(pos, message))

    def value(self, block: Block, adef: AttrDef, value: object, where: str) -> None:
        pos = block.position(adef.name)
        try:
            coerce(adef, value)  # type: ignore[arg-type]
        except ValueError_ as e:
            self.error(pos, f"{block.kind} {block.name}: {e}")

    def attributes(self, block: Block, attrs: dict[str, AttrDef], resource: bool) -> None:
        systems = self.cfg.systems
        kind = "resource" if resource else block.kind
        for name in block.attrs.keys() | block.local.keys():
            adef = attrs.get(name)
            if adef is None:
                adef = self.stock(block, name, kind)
            if adef is None:
                self.error(
                    block.position(name),
                    f"{block.kind} {block.name}: unknown attribute {name!r}"
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
                        f"{block.kind} {block.name}: {name}@{system}: no system named {system!r}"
                        + _suggest(system, systems),
                    )
                self.value(block, adef, val, f"{name}@{system}: ")
        if resource:
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
        hook = self.hooks.get(block.kind)
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
                            f"group {group.name}: SystemList names {name!r}, "
                            "which is not a system" + _suggest(name, systems),
                        )
            asl = group.attrs.get("AutoStartList")
            if isinstance(asl, list) and isinstance(sl, dict):
                for name in asl:
                    if name not in sl:
                        self.error(
                            group.position("AutoStartList"),
                            f"group {group.name}: AutoStartList names {name!r}, "
                            "which is not in its SystemList",
                        )
            asp = group.attrs.get("AutoStartPolicy")
            if isinstance(asp, str) and asp not in ("Order", "Priority", "Load"):
                self.error(
                    group.position("AutoStartPolicy"),
                    f"group {group.name}: AutoStartPolicy is Order, Priority or Load, not {asp!r}",
                )
            mf = group.attrs.get("ManageFaults")
            if isinstance(mf, str) and mf not in ("ALL", "NONE"):
                self.error(
                    group.position("ManageFaults"),
                    f"group {group.name}: ManageFaults is ALL or NONE, not {mf!r}",
                )

    def links(self) -> None:
        res = self.cfg.resources
        edges: dict[str, list[str]] = {}
        for link in self.cfg.links:
            missing = [n for n in (link.parent, link.child) if n not in res]
            for n in missing:
                self.error(link.pos, f"requires: no resource named {n!r}" + _suggest(n, res))
            if missing:
                continue
            if link.parent == link.child:
                self.error(link.pos, f"requires: {link.parent} cannot require itself")
                continue
            if res[link.parent].group != res[link.child].group:
                self.error(
                    link.pos,
                    f"requires: {link.parent} and {link.child} are in different groups "
                    "(link groups with 'requires group')",
                )
            edges.setdefault(link.parent, []).append(link.child)
        cycle = find_cycle(edges)
        if cycle:
            first = next(lk for lk in self.cfg.links if lk.parent == cycle[0])
            self.error(first.pos, "requires: dependency cycle " + " -> ".join(cycle))
        for glink in self.cfg.group_links:
            if glink.child_group not in self.cfg.groups:
                self.error(glink.pos, f"requires group: no group named {glink.child_group!r}")

    def run(self) -> list[Diagnostic]:
        objects = object_types()
        if self.cfg.cluster is not None:
            self.attributes(self.cfg.cluster, objects["cluster"].attrs, resource=False)
        for system in self.cfg.systems.values():
            self.attributes(system, objects["system"].attrs, resource=False)
        for group in self.cfg.groups.values():
            self.attributes(group, objects["group"].attrs, resource=False)
        self.groups()
        for block in self.cfg.resources.values():
            tdef = self.types.get(block.kind)
            if tdef is None:
                self.error(
                    block.pos,
                    f"resource {block.name}: unknown type {block.kind!r}"
                    + _suggest(block.kind, self.types),
                )
                continue
            self.attributes(block, effective_attrs(tdef), resource=True)
        self.links()
        return sorted(self.diags, key=lambda d: (d.pos.file, d.pos.line, d.pos.col))


def find_cycle(edges: dict[str, list[str]]) -> list[str]:
    """A cycle in a directed graph as [a, b, ..., a], or [] when there is none."""
    white, grey, black = 0, 1, 2
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        color[node] = grey
        stack.append(node)
        for nxt in edges.get(node, []):
            c = color.get(nxt, white)
            if c == grey:
                return [*stack[stack.index(nxt) :], nxt]
            if c == white:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        color[node] = black
        return []

    for node in sorted(edges):
        if color.get(node, white) == white:
            found = visit(node)
            if found:
                return found
    return []


def validate(
    cfg: Config, builtin: dict[str, TypeDef], hooks: dict[str, Hook] | None = None
) -> list[Diagnostic]:
    """Every problem of ``cfg`` with its position; ``builtin``: the types the agents define,
    ``hooks``: each type's own checks (the agents' registry passes both)."""
    return _Validator(cfg, builtin, hooks or {}).run()
