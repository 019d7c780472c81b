"""The built-in types: KVMGuest (the seed's definition), the agent-framework statics, and
the attributes of cluster, system and group blocks.

They are written in the configuration language itself (``*.cf`` beside this module) and
read with the same parser as the operator's files, so the printer, the parser and the
definitions cannot drift apart.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from kvmguest.model.attributes import AttrDef
from kvmguest.model.config import ConfigInvalid, TypeDef
from kvmguest.model.parser import parse_text

KVMGUEST = "KVMGuest"
FRAMEWORK = "_Framework"


def _read(name: str) -> dict[str, TypeDef]:
    text = resources.files("kvmguest.model").joinpath(name).read_text()
    cfg, diags, _ = parse_text(text, f"<built-in {name}>")
    if diags:  # a packaging bug, not an operator error
        raise ConfigInvalid(diags)
    return cfg.types


@cache
def builtin_types() -> dict[str, TypeDef]:
    """KVMGuest as the seed defines it (type-specific attributes only)."""
    return _read("kvmguest.cf")


@cache
def framework_type() -> TypeDef:
    return _read("framework.cf")[FRAMEWORK]


@cache
def object_types() -> dict[str, TypeDef]:
    """Schemas of the cluster, system and group blocks, keyed by block kind."""
    types = _read("objects.cf")
    return {"cluster": types["_Cluster"], "system": types["_System"], "group": types["_Group"]}


def effective_attrs(tdef: TypeDef) -> dict[str, AttrDef]:
    """All attributes a resource of this type has: framework statics, overridden by the type."""
    attrs = dict(framework_type().attrs)
    attrs.update(tdef.attrs)
    return attrs


def merged_types(file_types: dict[str, TypeDef]) -> dict[str, TypeDef]:
    """The types in force: built-ins, with types.cf definitions layered over them.

    A types.cf that defines KVMGuest again (a VCS installation's own types.cf) may add
    attributes or change defaults; the built-in attributes it leaves out stay.
    """
    out = {name: TypeDef(t.name, dict(t.attrs), t.pos) for name, t in builtin_types().items()}
    for name, tdef in file_types.items():
        if name.startswith("_"):
            continue
        if name in out:
            out[name].attrs.update(tdef.attrs)
            out[name].pos = tdef.pos
        else:
            out[name] = tdef
    return out
