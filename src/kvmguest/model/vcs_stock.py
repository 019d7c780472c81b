"""The stock VCS attributes kvmguest accepts but does not act on (``vcs_stock.cf``).

An operator's VCS main.cf sets many cluster, system, group and resource attributes that
only the VCS engine has a use for (notification, the Java console, statistics,
triggers...). They load with a warning each, so the file needs no editing and nobody
believes kvmguest honours them; a misspelt name stays an error.
"""

from __future__ import annotations

from functools import cache

from kvmguest.model.attributes import AttrDef
from kvmguest.model.types import read_builtin

_TYPES = {
    "cluster": "_ClusterStock",
    "system": "_SystemStock",
    "group": "_GroupStock",
    "resource": "_ResourceStock",
}


@cache
def _stock() -> dict[str, dict[str, AttrDef]]:
    types = read_builtin("vcs_stock.cf")
    return {kind: types[name].attrs for kind, name in _TYPES.items()}


def unused(kind: str, name: str) -> AttrDef | None:
    """The definition of ``name`` if it is a stock VCS attribute of a ``kind`` block
    ("cluster", "system", "group" or "resource") that kvmguest does not use."""
    return _stock().get(kind, {}).get(name)


def unused_names(kind: str) -> list[str]:
    return sorted(_stock().get(kind, {}))


def warning_text(kind: str, name: str) -> str:
    return f"{name} is a VCS {kind} attribute that is accepted but not used by kvmguest"
