"""THE resolver: a resource's attribute values, typed, for one system.

Resolution order for each attribute: the system's local value (``Attr@sys``), the
resource's value, the type's default (types.cf over the built-in), the framework default.
A partial association keeps the type's other keys. Cluster and system attributes resolve
the same way against their block schemas (``objects.cf``).

Every layer takes a resource's values from here: the entry points, the daemon, the OCF
adapter and the export. The built-in types are given by the caller (the agents' registry),
so this module knows no resource type.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmguest.model.attributes import AttrDef, Typed, coerce
from kvmguest.model.config import Block, Config, TypeDef
from kvmguest.model.types import effective_attrs, merged_types, object_types

UNSET = ("", "NONE")


def unset_to_none(value: str | None) -> str | None:
    """The configuration language's "not set" ("" or NONE) as None."""
    return None if value is None or value in UNSET else value


@dataclass(frozen=True)
class SystemInfo:
    """A system's attributes that the agents use (ours: docs/configuration.md)."""

    name: str
    site: str | None
    libvirt_uri: str
    migrate_data_uri: str | None
    rhev_host: str | None


def type_defaults(tdef: TypeDef) -> dict[str, Typed]:
    """Every attribute of a resource of type ``tdef`` that sets nothing, typed: what an
    agent advertises (the OCF meta-data's timeouts) before any configuration exists."""
    attrs = effective_attrs(tdef)
    return {name: coerce(adef, adef.default_value()) for name, adef in attrs.items()}


class Loaded:
    """A configuration, with the types in force (the built-ins under the file's own)."""

    def __init__(self, cfg: Config, builtin: dict[str, TypeDef]) -> None:
        self.cfg = cfg
        self.types = merged_types(cfg.types, builtin)

    def require_system(self, system: str | None) -> None:
        """KeyError naming the declared systems when main.cf declares systems and
        ``system`` is not one of them: a host that is not in the cluster runs nothing, and
        must say so rather than silently run no group."""
        systems = self.cfg.systems
        if system is None or not systems or system in systems:
            return
        known = ", ".join(sorted(systems))
        raise KeyError(
            f"{self.cfg.path}: system {system!r} is not declared (systems: {known}); "
            "give --system with one of them"
        )

    def resolve(self, block: Block, adef: AttrDef, system: str | None) -> Typed:
        """One attribute of ``block`` on ``system``, typed (ValueError_ when it does not
        fit its type)."""
        return self._value(block, adef, system)

    def _value(self, block: Block, adef: AttrDef, system: str | None) -> Typed:
        raw = block.raw(adef.name, system)
        if raw is None:
            raw = adef.default_value()
        if isinstance(raw, dict) and isinstance(adef.default, dict):
            # A partial association keeps the type's other keys.
            raw = {**adef.default, **raw}
        return coerce(adef, raw)

    def resource_values(self, resource: str, system: str | None) -> dict[str, Typed]:
        """Every attribute of the resource (framework statics included), typed, as it is
        on ``system``. KeyError for an unknown resource, a type that is not defined, or a
        system that main.cf does not declare."""
        self.require_system(system)
        block = self.cfg.resource(resource)
        attrs = effective_attrs(self.types[block.kind])
        return {name: self._value(block, adef, system) for name, adef in attrs.items()}

    def value_sources(self, resource: str, system: str | None) -> dict[str, str]:
        """Where each of :meth:`resource_values` came from on ``system``: "local value"
        (``Attr@system``), "static override" (a static attribute the resource sets),
        "resource" (written in the resource's block) or "type default" (types.cf, the
        built-in type, or the framework's default). KeyError as resource_values."""
        block = self.cfg.resource(resource)
        attrs = effective_attrs(self.types[block.kind])
        sources: dict[str, str] = {}
        for name, adef in attrs.items():
            if system is not None and system in block.local.get(name, {}):
                sources[name] = "local value"
            elif name in block.attrs:
                sources[name] = "static override" if adef.static else "resource"
            else:
                sources[name] = "type default"
        return sources

    def resource_value(self, resource: str, name: str, system: str | None = None) -> Typed:
        """One attribute of a resource on ``system``, typed (KeyError as resource_values)."""
        block = self.cfg.resource(resource)
        return self._value(block, effective_attrs(self.types[block.kind])[name], system)

    def statics(self, resource: str) -> dict[str, Typed]:
        """The resource's static attributes (type statics and the framework's), typed."""
        block = self.cfg.resource(resource)
        attrs = effective_attrs(self.types[block.kind])
        return {n: self._value(block, a, None) for n, a in attrs.items() if a.static}

    def object_attr(self, kind: str, block: Block | None, name: str) -> Typed:
        adef = object_types()[kind].attrs[name]
        if block is None:
            return coerce(adef, adef.default_value())
        return self._value(block, adef, None)

    def system(self, name: str) -> SystemInfo:
        block = self.cfg.systems.get(name)
        cluster = self.cfg.cluster

        def sys_attr(attr: str) -> str | None:
            return unset_to_none(str(self.object_attr("system", block, attr)))

        template = str(self.object_attr("cluster", cluster, "LibvirtURITemplate"))
        data_template = unset_to_none(
            str(self.object_attr("cluster", cluster, "MigrateDataURITemplate"))
        )
        return SystemInfo(
            name=name,
            site=sys_attr("Site"),
            libvirt_uri=sys_attr("LibvirtURI") or template.replace("{system}", name),
            migrate_data_uri=sys_attr("MigrateDataURI")
            or (data_template.replace("{system}", name) if data_template else None),
            rhev_host=sys_attr("RHEVHost"),
        )

    def cluster_attr(self, name: str) -> str | None:
        return unset_to_none(str(self.object_attr("cluster", self.cfg.cluster, name)))

    def system_list(self, group: str | None) -> list[str]:
        """The group's SystemList, by priority (lowest number first)."""
        block = self.cfg.groups.get(group or "")
        if block is None or "SystemList" not in block.attrs:
            return list(self.cfg.systems)
        sl = self.object_attr("group", block, "SystemList")
        assert isinstance(sl, dict)
        return sorted(sl, key=lambda s: (int(sl[s]), s))
