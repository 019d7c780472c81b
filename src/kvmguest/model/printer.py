"""Printer for the configuration language: the inverse of the parser.

``parse(print(cfg)) == cfg`` for every configuration the parser accepts (the round trip
the tests check, with hypothesis among others).
"""

from __future__ import annotations

import re

from kvmguest.model.attributes import AttrDef, AttrType, Dimension, Value
from kvmguest.model.config import Block, Config, TypeDef

# What may stand unquoted; anything else (and the grammar's keywords) is quoted.
_BARE = re.compile(r"[A-Za-z0-9_.:+\-]+")
_KEYWORDS = {
    "include", "cluster", "system", "group", "type", "requires", "static", "temp",
    "str", "int", "boolean", "keylist",
}  # fmt: skip


def _string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote(text: str) -> str:
    return text if _BARE.fullmatch(text) and text not in _KEYWORDS else _string(text)


def format_value(value: Value) -> str:
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, list):
        return "{ " + ", ".join(quote(v) for v in value) + " }" if value else "{}"
    if not value:
        return "{}"
    return "{ " + ", ".join(f"{quote(k)} = {quote(v)}" for k, v in value.items()) + " }"


def _block(block: Block, head: str, indent: str = "") -> list[str]:
    lines = [f"{indent}{head} {block.name} ("]
    for name, value in block.attrs.items():
        lines.append(f"{indent}    {name} = {format_value(value)}")
    for name, per_system in block.local.items():
        for system, value in per_system.items():
            lines.append(f"{indent}    {name}@{system} = {format_value(value)}")
    lines.append(f"{indent}    )")
    return lines


def format_decl(adef: AttrDef) -> str:
    words = []
    if adef.static:
        words.append("static")
    if adef.temp:
        words.append("temp")
    if adef.dimension is Dimension.KEYLIST:
        words.append("keylist")
        words.append(adef.name)
    else:
        words.append(adef.type.value if adef.type is not AttrType.STR else "str")
        suffix = {Dimension.VECTOR: "[]", Dimension.ASSOCIATION: "{}"}.get(adef.dimension, "")
        words.append(adef.name + suffix)
    text = " ".join(words)
    if adef.default is not None:
        text += f" = {format_value(adef.default)}"
    return text


def format_type(tdef: TypeDef) -> str:
    lines = [f"type {tdef.name} ("]
    lines += [f"    {format_decl(a)}" for a in tdef.attrs.values()]
    lines.append(")")
    return "\n".join(lines) + "\n"


def format_config(cfg: Config) -> str:
    out: list[str] = [f"include {_string(inc)}" for inc in cfg.includes]
    if out:
        out.append("")
    for tdef in cfg.types.values():
        out.append(format_type(tdef))
    if cfg.cluster is not None:
        out += [*_block(cfg.cluster, "cluster"), ""]
    for system in cfg.systems.values():
        out += [*_block(system, "system"), ""]
    for group in cfg.groups.values():
        out += [*_block(group, "group"), ""]
        for glink in (g for g in cfg.group_links if g.group == group.name):
            out.append(" ".join(["    requires group", glink.child_group, *glink.words]))
        for res in cfg.group_resources(group.name):
            out += [*_block(res, res.kind, "    "), ""]
        names = {r.name for r in cfg.group_resources(group.name)}
        for link in (lk for lk in cfg.links if lk.parent in names):
            out.append(f"    {link.parent} requires {link.child}")
        out.append("")
    # Links whose parent is unknown still round-trip (validate reports them).
    known = set(cfg.resources)
    for link in (lk for lk in cfg.links if lk.parent not in known):
        out.append(f"{link.parent} requires {link.child}")
    return "\n".join(out).rstrip() + "\n"
