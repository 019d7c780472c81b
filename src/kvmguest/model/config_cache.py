"""Validated configurations, cached for the one-shot commands (``kvmguest monitor``).

Parsing main.cf needs lark and its tables: most of a one-shot monitor's cost. A
configuration that parsed and validated without a single diagnostic is kept here as JSON,
keyed by its path and by ``stamp`` (the code that validated it); an entry is used only while
every file it was read from has the same inode, modification time, size and content hash,
so an edited, replaced or touched file is parsed and validated again.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from kvmguest.model.cache import cache_dir, read_cache, sha256_hex, write_cache
from kvmguest.model.files import main_cf, read_config_bytes

# The recipes' readers must not pay for dataclasses: the configuration's classes are only
# imported where a whole configuration is written or read.
if TYPE_CHECKING:
    from kvmguest.model.config import Block, Config, Pos, TypeDef

FORMAT = 1


def _entry(path: str, stamp: str) -> str:
    # A configuration directory and its main.cf are one entry (the parser reads the same).
    key = sha256_hex(f"{os.path.realpath(main_cf(path))}\0{stamp}".encode())[:24]
    return os.path.join(cache_dir(), f"config-{key}.json")


def _fingerprint(path: str) -> list[Any] | None:
    try:
        st = os.stat(path)
        # Not open(): a file replaced by a FIFO since it was validated must not hang the
        # one-shot monitor; the reader refuses it at once and the configuration is reloaded.
        digest = sha256_hex(read_config_bytes(path))
    except OSError:
        return None
    return [path, st.st_ino, st.st_mtime_ns, st.st_size, digest]


def _pos(p: Pos) -> list[Any]:
    return [p.file, p.line, p.col]


def _unpos(v: list[Any]) -> Pos:
    from kvmguest.model.config import Pos

    return Pos(str(v[0]), int(v[1]), int(v[2]))


def _block(b: Block) -> dict[str, Any]:
    return {"kind": b.kind, "name": b.name, "attrs": b.attrs, "local": b.local,
            "pos": _pos(b.pos), "attr_pos": {k: _pos(p) for k, p in b.attr_pos.items()},
            "group": b.group}  # fmt: skip


def _unblock(d: dict[str, Any]) -> Block:
    from kvmguest.model.config import Block

    return Block(d["kind"], d["name"], d["attrs"], d["local"], _unpos(d["pos"]),
                 {k: _unpos(p) for k, p in d["attr_pos"].items()}, d["group"])  # fmt: skip


def _type(t: TypeDef) -> dict[str, Any]:
    return {"name": t.name, "pos": _pos(t.pos), "attrs": [
        {"name": a.name, "type": a.type.value, "dimension": a.dimension.value,
         "default": a.default, "static": a.static, "temp": a.temp, "keys": list(a.keys)}
        for a in t.attrs.values()]}  # fmt: skip


def _untype(d: dict[str, Any]) -> TypeDef:
    from kvmguest.model.attributes import AttrDef, AttrType, Dimension
    from kvmguest.model.config import TypeDef

    attrs = {
        a["name"]: AttrDef(a["name"], AttrType(a["type"]), Dimension(a["dimension"]),
                           a["default"], a["static"], a["temp"], tuple(a["keys"]))
        for a in d["attrs"]
    }  # fmt: skip
    return TypeDef(d["name"], attrs, _unpos(d["pos"]))


def to_data(cfg: Config) -> dict[str, Any]:
    return {
        "path": cfg.path, "includes": cfg.includes, "files": cfg.files,
        "types": [_type(t) for t in cfg.types.values()],
        "cluster": _block(cfg.cluster) if cfg.cluster else None,
        "systems": [_block(b) for b in cfg.systems.values()],
        "groups": [_block(b) for b in cfg.groups.values()],
        "resources": [_block(b) for b in cfg.resources.values()],
        "links": [[lk.parent, lk.child, _pos(lk.pos)] for lk in cfg.links],
        "group_links": [[g.group, g.child_group, list(g.words), _pos(g.pos)]
                        for g in cfg.group_links],
    }  # fmt: skip


def from_data(d: dict[str, Any]) -> Config:
    from kvmguest.model.config import Config, GroupLink, Link

    return Config(
        path=d["path"], includes=list(d["includes"]),
        types={t["name"]: _untype(t) for t in d["types"]},
        cluster=_unblock(d["cluster"]) if d["cluster"] else None,
        systems={b["name"]: _unblock(b) for b in d["systems"]},
        groups={b["name"]: _unblock(b) for b in d["groups"]},
        resources={b["name"]: _unblock(b) for b in d["resources"]},
        links=[Link(p, c, _unpos(pos)) for p, c, pos in d["links"]],
        group_links=[GroupLink(g, cg, tuple(w), _unpos(pos)) for g, cg, w, pos in d["group_links"]],
        files=list(d["files"]),
    )  # fmt: skip


def store(cfg: Config, stamp: str) -> None:
    """Keep ``cfg``, which validated without a diagnostic (best effort)."""
    prints = [_fingerprint(f) for f in cfg.files]
    if not cfg.files or any(p is None for p in prints):
        return
    data = {"format": FORMAT, "files": prints, "config": to_data(cfg), "recipes": {}}
    write_cache(_entry(cfg.path, stamp), json.dumps(data).encode())


def _valid_entry(path: str, stamp: str) -> dict[str, Any] | None:
    raw = read_cache(_entry(path, stamp))
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        if data.get("format") != FORMAT or data["config"]["path"] != main_cf(path):
            return None
        for fp in data["files"]:
            if _fingerprint(str(fp[0])) != fp:
                return None
    except (ValueError, KeyError, TypeError, IndexError):
        return None
    return data if isinstance(data, dict) else None


def lookup(path: str, stamp: str) -> Config | None:
    """The cached configuration of ``path``, when every file it came from is unchanged."""
    data = _valid_entry(path, stamp)
    if data is None:
        return None
    try:
        return from_data(data["config"])
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def lookup_recipe(path: str, stamp: str, key: str) -> dict[str, str] | None:
    """A resource's monitor recipe kept beside the cached configuration of ``path`` (see
    :func:`store_recipe`), while every file is unchanged; no configuration is rebuilt."""
    data = _valid_entry(path, stamp)
    recipe = data.get("recipes", {}).get(key) if data is not None else None
    if not isinstance(recipe, dict) or not all(isinstance(v, str) for v in recipe.values()):
        return None
    return recipe


def store_recipe(path: str, stamp: str, key: str, recipe: dict[str, str]) -> None:
    """Keep a resource's monitor recipe (an agent's, strings only) in the entry of ``path``
    (best effort; an entry that no longer holds is left alone)."""
    data = _valid_entry(path, stamp)
    if data is None:
        return
    data.setdefault("recipes", {})[key] = recipe
    write_cache(_entry(path, stamp), json.dumps(data).encode())
