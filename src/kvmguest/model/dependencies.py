"""The checks of ``requires`` statements: resources that exist, groups that exist, the
keyword combinations VCS defines for ``requires group``, and no cycle of any length.

Every walk is iterative: a configuration with a 1,000-deep chain is as ordinary as one with
two resources, and must not exhaust Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Iterable

from kvmguest.model.config import Config, Diagnostic, Pos
from kvmguest.model.excerpt import excerpt

# ``requires group G <category> <location> [<type>]``, as VCS defines group dependencies:
# online dependencies take a type (soft, firm, hard; hard only for online local), offline
# dependencies take none. An online dependency written without a type is firm, VCS's
# default.
GROUP_LINK_FORMS: frozenset[tuple[str, ...]] = frozenset(
    {
        ("online", "local"), ("online", "local", "soft"), ("online", "local", "firm"),
        ("online", "local", "hard"),
        ("online", "global"), ("online", "global", "soft"), ("online", "global", "firm"),
        ("online", "remote"), ("online", "remote", "soft"), ("online", "remote", "firm"),
        ("offline", "local"), ("offline", "global"), ("offline", "remote"),
    }
)  # fmt: skip


def describe_forms() -> str:
    return (
        "online local soft|firm|hard, online global soft|firm, online remote soft|firm, "
        "offline local|global|remote"
    )


def find_cycle(edges: dict[str, list[str]]) -> list[str]:
    """A cycle in a directed graph as [a, b, ..., a], or [] when there is none.

    Depth-first with an explicit stack, so the depth of the graph does not matter."""
    white, grey, black = 0, 1, 2
    color: dict[str, int] = {}
    for root in sorted(edges):
        if color.get(root, white) != white:
            continue
        path: list[str] = [root]
        color[root] = grey
        iters = [iter(edges.get(root, []))]
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                color[path.pop()] = black
                iters.pop()
                continue
            c = color.get(nxt, white)
            if c == grey:
                return [*path[path.index(nxt) :], nxt]
            if c == white:
                color[nxt] = grey
                path.append(nxt)
                iters.append(iter(edges.get(nxt, [])))
    return []


def _suggest(name: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def check(cfg: Config) -> list[Diagnostic]:
    """Every problem of ``cfg``'s ``requires`` statements, each with its position."""
    out: list[Diagnostic] = []
    res = cfg.resources
    edges: dict[str, list[str]] = {}
    first_pos: dict[str, Pos] = {}
    for link in cfg.links:
        missing = [n for n in (link.parent, link.child) if n not in res]
        for n in missing:
            why = f"requires: no resource named {excerpt(n)}" + _suggest(n, res)
            out.append(Diagnostic(link.pos, why))
        if missing:
            continue
        if link.parent == link.child:
            out.append(Diagnostic(link.pos, f"requires: {link.parent} cannot require itself"))
            continue
        if res[link.parent].group != res[link.child].group:
            out.append(Diagnostic(
                link.pos,
                f"requires: {link.parent} and {link.child} are in different groups "
                "(link groups with 'requires group')",
            ))  # fmt: skip
        edges.setdefault(link.parent, []).append(link.child)
        first_pos.setdefault(link.parent, link.pos)
    cycle = find_cycle(edges)
    if cycle:
        out.append(Diagnostic(first_pos[cycle[0]], "requires: dependency cycle " + _chain(cycle)))

    gedges: dict[str, list[str]] = {}
    gfirst: dict[str, Pos] = {}
    for glink in cfg.group_links:
        if glink.child_group not in cfg.groups:
            out.append(Diagnostic(
                glink.pos,
                f"requires group: no group named {excerpt(glink.child_group)}"
                + _suggest(glink.child_group, cfg.groups),
            ))  # fmt: skip
            continue
        if glink.child_group == glink.group:
            out.append(Diagnostic(glink.pos, f"group {glink.group} cannot require itself"))
            continue
        if glink.words not in GROUP_LINK_FORMS:
            out.append(Diagnostic(
                glink.pos,
                f"requires group {glink.child_group} {' '.join(glink.words)}: not a VCS "
                f"group dependency (use {describe_forms()})",
            ))  # fmt: skip
        gedges.setdefault(glink.group, []).append(glink.child_group)
        gfirst.setdefault(glink.group, glink.pos)
    gcycle = find_cycle(gedges)
    if gcycle:
        why = "requires group: dependency cycle " + _chain(gcycle)
        out.append(Diagnostic(gfirst[gcycle[0]], why))
    return out


def _chain(cycle: list[str]) -> str:
    # A cycle through 1,000 resources would make a 10 KB message; show its ends.
    if len(cycle) > 12:
        return " -> ".join([*cycle[:5], f"... ({len(cycle) - 10} more) ...", *cycle[-5:]])
    return " -> ".join(cycle)
