"""The checks of type definitions written in the configuration (a types.cf).

A type in the files may define a new type (one kvmguest has no agent for: Mount, IP, ...)
or define a built-in type again, as a VCS installation's own types.cf does. A definition
again may override defaults and statics and add attributes; it may never change an
attribute's type, dimension or static-ness, because the agent's code reads the attribute as
the built-in defines it. Every default must fit its own declaration, and a static default
must lie in the framework's range.
"""

from __future__ import annotations

from kvmguest.model.attributes import AttrDef, ValueError_, coerce
from kvmguest.model.config import Diagnostic, Pos, TypeDef
from kvmguest.model.ranges import out_of_range
from kvmguest.model.types import framework_type


def _shape(adef: AttrDef) -> str:
    static = "static " if adef.static else ""
    if adef.dimension.value == "keylist":
        return f"{static}keylist {adef.name}"
    suffix = {"scalar": "", "vector": "[]", "association": "{}"}[adef.dimension.value]
    return f"{static}{adef.type.value} {adef.name}{suffix}"


def _position(tdef: TypeDef, attr: str) -> Pos:
    return tdef.attr_pos.get(attr, tdef.pos)


def check_types(
    file_types: dict[str, TypeDef], builtin: dict[str, TypeDef]
) -> dict[str, list[Diagnostic]]:
    """The errors of each type the files define, by type name (types without errors are
    left out)."""
    found: dict[str, list[Diagnostic]] = {}
    for tname, tdef in file_types.items():
        errors = _check_type(tname, tdef, builtin.get(tname))
        if errors:
            found[tname] = errors
    return found


def _check_type(tname: str, tdef: TypeDef, base: TypeDef | None) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    framework = framework_type().attrs
    if tname.startswith("_"):
        return [Diagnostic(tdef.pos, f"type {tname}: names starting with '_' are reserved")]
    for name, adef in tdef.attrs.items():
        pos = _position(tdef, name)
        original = base.attrs.get(name) if base is not None else None
        where = f"the built-in type {tname}"
        if original is None:
            original = framework.get(name)
            where = "the agent framework"
        if original is not None and (
            original.type is not adef.type
            or original.dimension is not adef.dimension
            or original.static != adef.static
        ):
            out.append(Diagnostic(
                pos,
                f"type {tname}: '{_shape(adef)}' redefines '{_shape(original)}' of "
                f"{where} with another type or dimension (a redefinition may change "
                "defaults and add attributes only)",
            ))  # fmt: skip
            continue
        if adef.default is None:
            continue
        try:
            typed = coerce(adef, adef.default)
        except ValueError_ as e:
            out.append(Diagnostic(pos, f"type {tname}: default of {name}: {e}"))
            continue
        if adef.static:
            why = out_of_range(name, typed)
            if why:
                out.append(Diagnostic(pos, f"type {tname}: {why}"))
    return out
