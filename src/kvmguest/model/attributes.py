"""Attribute definitions and typed values, as the VCS configuration language has them.

Values are kept as the configuration language writes them (strings, lists of strings,
string-to-string maps); :func:`coerce` turns one into its typed Python value. Keeping the
raw form makes printing and re-parsing exact.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from kvmguest.model.excerpt import excerpt
from kvmguest.model.integers import parse_int

# The raw value of an attribute: scalar, vector/keylist, or association.
Value = str | list[str] | dict[str, str]
Typed = str | int | bool | list[str] | list[int] | list[bool] | dict[str, str] | dict[str, int]


class AttrType(enum.Enum):
    STR = "str"
    INT = "int"
    BOOLEAN = "boolean"


class Dimension(enum.Enum):
    SCALAR = "scalar"
    VECTOR = "vector"
    KEYLIST = "keylist"
    ASSOCIATION = "association"


@dataclass(frozen=True)
class AttrDef:
    name: str
    type: AttrType
    dimension: Dimension = Dimension.SCALAR
    default: Value | None = None
    static: bool = False
    temp: bool = False
    # Only for associations whose keys are fixed (CEInfo, RHEVMInfo, DROpts): the
    # keys a value may use. Empty means any key.
    keys: tuple[str, ...] = field(default=())

    def default_value(self) -> Value:
        if self.default is not None:
            return self.default
        if self.dimension is Dimension.SCALAR:
            return "0" if self.type is not AttrType.STR else ""
        if self.dimension is Dimension.ASSOCIATION:
            return {}
        return []


class ValueError_(Exception):
    """A value does not fit its attribute's type or dimension (message says how)."""


def _scalar(adef: AttrDef, raw: str, what: str) -> str | int | bool:
    if adef.type is AttrType.INT:
        try:
            return parse_int(raw)
        except ValueError as e:
            raise ValueError_(f"{what} must be {e}, not {excerpt(raw)}") from None
    if adef.type is AttrType.BOOLEAN:
        if raw in ("0", "1"):
            return raw == "1"
        raise ValueError_(f"{what} is a boolean: 0 or 1, not {excerpt(raw)}")
    return raw


def check_shape(adef: AttrDef, value: Value) -> None:
    """Raise ValueError_ when ``value`` has the wrong dimension for ``adef``."""
    dim = adef.dimension
    if dim is Dimension.SCALAR and not isinstance(value, str):
        raise ValueError_(f"{adef.name} takes a single value, not a list")
    if dim in (Dimension.VECTOR, Dimension.KEYLIST) and not isinstance(value, list):
        kind = "list" if isinstance(value, str) else "list of values, not an association"
        raise ValueError_(f"{adef.name} is a {dim.value}: write {{ a, b }} ({kind})")
    if dim is Dimension.ASSOCIATION and not isinstance(value, dict):
        raise ValueError_(f"{adef.name} is an association: write {{ Key = value, ... }}")


def coerce(adef: AttrDef, value: Value) -> Typed:
    """The typed value. Raises ValueError_ naming the attribute (and key) on bad input."""
    check_shape(adef, value)
    if isinstance(value, str):
        return _scalar(adef, value, adef.name)
    if isinstance(value, list):
        if adef.dimension is Dimension.KEYLIST and len(set(value)) != len(value):
            dup = next(v for v in value if value.count(v) > 1)
            raise ValueError_(f"{adef.name} is a keylist: {excerpt(dup)} appears twice")
        items = [_scalar(adef, v, f"{adef.name} element") for v in value]
        return items  # type: ignore[return-value]
    if adef.keys:
        for key in value:
            if key not in adef.keys:
                raise ValueError_(
                    f"{adef.name} has no key {excerpt(key)} (keys: {', '.join(adef.keys)})"
                )
    if adef.type is AttrType.STR:
        return dict(value)
    out: dict[str, int] = {}
    for key, raw in value.items():
        v = _scalar(adef, raw, f"{adef.name}[{key}]")
        out[key] = int(v)
    return out
