"""Type definitions: the agent-framework statics, the attributes of cluster, system and
group blocks, and how a type text (an agent's, or a file's) is read and layered.

The built-ins are written in the configuration language itself (``*.cf`` beside this
module, and each agent's type text beside its agent) and read with the same parser as the
operator's files, so the printer, the parser and the definitions cannot drift apart. Which
resource types exist is the agents' registry's business, not this module's.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from functools import cache

from kvmguest.model.attributes import AttrDef, AttrType, Dimension
from kvmguest.model.cache import cache_dir, read_cache, write_cache
from kvmguest.model.config import ConfigInvalid, TypeDef

FRAMEWORK = "_Framework"


def parse_types(text: str, label: str) -> dict[str, TypeDef]:
    """The types a built-in type text defines (cached: see below)."""
    cached = _from_cache(text)
    if cached is not None:
        return cached
    from kvmguest.model.parser import parse_text  # lark: only when the cache cannot serve

    cfg, diags, _ = parse_text(text, label)
    if diags:  # a packaging bug, not an operator error
        raise ConfigInvalid(diags)
    _to_cache(text, cfg.types)
    return cfg.types


def read_builtin(name: str) -> dict[str, TypeDef]:
    """The types of a built-in ``.cf`` file beside this module."""
    # A plain open, not importlib.resources: it costs a one-shot command ~3 ms to import.
    with open(os.path.join(os.path.dirname(__file__), name), encoding="utf-8") as f:
        text = f.read()
    return parse_types(text, f"<built-in {name}>")


# Parsing the built-in definitions costs a one-shot command ~10-20 ms; their parsed form is
# kept as JSON beside the cached parser (keyed by the text, so an upgrade never reads a
# stale one).


def _cache_file(text: str) -> str:
    name = f"types-{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"
    return os.path.join(cache_dir(), name)


def _from_cache(text: str) -> dict[str, TypeDef] | None:
    try:
        raw = read_cache(_cache_file(text))
        if raw is None:
            return None
        data = json.loads(raw)
        return {
            tname: TypeDef(
                tname,
                {
                    a["name"]: AttrDef(
                        name=a["name"],
                        type=AttrType(a["type"]),
                        dimension=Dimension(a["dimension"]),
                        default=a["default"],
                        static=a["static"],
                        temp=a["temp"],
                        keys=tuple(a["keys"]),
                    )
                    for a in attrs
                },
            )
            for tname, attrs in data.items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _to_cache(text: str, types: dict[str, TypeDef]) -> None:
    data = {
        tname: [
            {
                "name": a.name,
                "type": a.type.value,
                "dimension": a.dimension.value,
                "default": a.default,
                "static": a.static,
                "temp": a.temp,
                "keys": list(a.keys),
            }
            for a in tdef.attrs.values()
        ]
        for tname, tdef in types.items()
    }
    write_cache(_cache_file(text), json.dumps(data).encode())


@cache
def framework_type() -> TypeDef:
    return read_builtin("framework.cf")[FRAMEWORK]


@cache
def object_types() -> dict[str, TypeDef]:
    """Schemas of the cluster, system and group blocks, keyed by block kind."""
    types = read_builtin("objects.cf")
    return {"cluster": types["_Cluster"], "system": types["_System"], "group": types["_Group"]}


def effective_attrs(tdef: TypeDef) -> dict[str, AttrDef]:
    """All attributes a resource of this type has: framework statics, overridden by the type."""
    attrs = dict(framework_type().attrs)
    attrs.update(tdef.attrs)
    return attrs


def _layered(base: AttrDef | None, adef: AttrDef) -> AttrDef:
    """``adef`` as it redefines ``base``: an association with fixed keys keeps the built-in
    keys and their defaults (an older types.cf that lacks a key must not take it away from
    the agent that reads it)."""
    if (
        base is None
        or not base.keys
        or adef.dimension is not base.dimension
        or not isinstance(base.default, dict)
        or not isinstance(adef.default, dict)
    ):
        return adef
    keys = base.keys + tuple(k for k in adef.keys if k not in base.keys)
    return replace(adef, default={**base.default, **adef.default}, keys=keys)


def merged_types(file_types: dict[str, TypeDef], builtin: dict[str, TypeDef]) -> dict[str, TypeDef]:
    """The types in force: the built-ins, with types.cf definitions layered over them.

    A types.cf that defines a built-in type again (a VCS installation's own types.cf) may
    add attributes or change defaults; the built-in attributes it leaves out stay. Whether
    a redefinition is compatible is :mod:`kvmguest.model.typecheck`'s business.
    """
    out = {name: TypeDef(t.name, dict(t.attrs), t.pos) for name, t in builtin.items()}
    for name, tdef in file_types.items():
        if name.startswith("_"):
            continue
        if name in out:
            base = out[name].attrs
            for aname, adef in tdef.attrs.items():
                base[aname] = _layered(base.get(aname), adef)
            out[name].pos = tdef.pos
        else:
            out[name] = tdef
    return out
