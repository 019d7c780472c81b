"""A KVMGuest resource's attribute values, typed and resolved for one system.

Resolution order for each attribute: the system's local value (``Attr@sys``), the
resource's value, the type's default (types.cf over the built-in), the framework default.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from kvmguest.model.attributes import AttrDef, Typed, coerce
from kvmguest.model.config import Block, Config, ConfigInvalid
from kvmguest.model.parser import load
from kvmguest.model.types import KVMGUEST, effective_attrs, merged_types, object_types
from kvmguest.model.validate import validate

UNSET = ("", "NONE")


def _assoc(value: Typed) -> dict[str, str]:
    assert isinstance(value, dict)
    return {k: str(v) for k, v in value.items()}


def _int(value: Typed) -> int:
    assert isinstance(value, int)
    return value


def _set(value: str | None) -> str | None:
    return None if value is None or value in UNSET else value


@dataclass(frozen=True)
class SystemInfo:
    name: str
    site: str | None
    libvirt_uri: str
    migrate_data_uri: str | None
    rhev_host: str | None


@dataclass(frozen=True)
class GuestParams:
    resource: str
    group: str | None
    system: str | None
    site: str | None  # this system's DR site
    guest_name: str
    delay_online: int
    delay_offline: int
    sync_dir: str | None
    config_file: str | None
    resync: bool
    ce_info: dict[str, str]
    rhevm_info: dict[str, str]
    dr_opts: dict[str, str]
    # Type statics and framework attributes, typed (MonitorTimeout, AEPTimeout, ...).
    statics: dict[str, Typed] = field(repr=False)
    dr_dir: str = "/var/lib/kvmguest/dr"

    def static_int(self, name: str) -> int:
        value = self.statics[name]
        assert isinstance(value, int)
        return int(value)

    @property
    def aep_timeout(self) -> bool:
        return bool(self.statics["AEPTimeout"])

    @property
    def rhev(self) -> bool:
        return self.rhevm_info.get("Enabled") == "1"

    @property
    def dr_enabled(self) -> bool:
        return self.dr_opts.get("ConfigureNetwork") == "1"

    def timeout(self, entry_point: str) -> int:
        """OnlineTimeout, OfflineTimeout, MonitorTimeout, CleanTimeout, MigrateTimeout..."""
        return self.static_int(f"{entry_point}Timeout")


def local_system(explicit: str | None = None) -> str:
    """This host's system name: --system, KVMGUEST_SYSTEM, or the short host name."""
    if explicit:
        return explicit
    env = os.environ.get("KVMGUEST_SYSTEM")
    if env:
        return env
    return socket.gethostname().split(".")[0]


class Loaded:
    """A validated configuration and the helpers the entry points need from it."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.types = merged_types(cfg.types)

    @classmethod
    def from_file(cls, path: str) -> Loaded:
        cfg, diags = load(path)
        diags = diags or validate(cfg)
        if diags:
            raise ConfigInvalid(diags)
        return cls(cfg)

    def _value(self, block: Block, adef: AttrDef, system: str | None) -> Typed:
        raw = block.raw(adef.name, system)
        if raw is None:
            raw = adef.default_value()
        if isinstance(raw, dict) and isinstance(adef.default, dict):
            # A partial association keeps the type's other keys.
            raw = {**adef.default, **raw}
        return coerce(adef, raw)

    def object_attr(self, kind: str, block: Block | None, name: str) -> Typed:
        adef = object_types()[kind].attrs[name]
        if block is None:
            return coerce(adef, adef.default_value())
        return self._value(block, adef, None)

    def system(self, name: str) -> SystemInfo:
        block = self.cfg.systems.get(name)
        cluster = self.cfg.cluster

        def sys_attr(attr: str) -> str | None:
            value = self.object_attr("system", block, attr)
            return _set(str(value))

        template = str(self.object_attr("cluster", cluster, "LibvirtURITemplate"))
        data_template = _set(str(self.object_attr("cluster", cluster, "MigrateDataURITemplate")))
        return SystemInfo(
            name=name,
            site=sys_attr("Site"),
            libvirt_uri=sys_attr("LibvirtURI") or template.replace("{system}", name),
            migrate_data_uri=sys_attr("MigrateDataURI")
            or (data_template.replace("{system}", name) if data_template else None),
            rhev_host=sys_attr("RHEVHost"),
        )

    def cluster_attr(self, name: str) -> str | None:
        return _set(str(self.object_attr("cluster", self.cfg.cluster, name)))

    def guest(self, resource: str, system: str | None) -> GuestParams:
        block = self.cfg.resource(resource)
        if block.kind != KVMGUEST:
            raise KeyError(f"resource {resource} is a {block.kind}, not a KVMGuest")
        attrs = effective_attrs(self.types[KVMGUEST])
        values = {name: self._value(block, adef, system) for name, adef in attrs.items()}
        statics = {name: values[name] for name, adef in attrs.items() if adef.static}
        return GuestParams(
            resource=resource,
            group=block.group,
            system=system,
            site=self.system(system).site if system else None,
            guest_name=str(values["GuestName"]),
            delay_online=_int(values["DelayAfterGuestOnline"]),
            delay_offline=_int(values["DelayAfterGuestOffline"]),
            sync_dir=_set(str(values["SyncDir"])),
            config_file=_set(str(values["GuestConfigFilePath"])),
            resync=bool(values["ResyncVMCfg"]),
            ce_info=_assoc(values["CEInfo"]),
            rhevm_info=_assoc(values["RHEVMInfo"]),
            dr_opts=_assoc(values["DROpts"]),
            statics=statics,
            dr_dir=self.cluster_attr("DRPayloadDir") or "/var/lib/kvmguest/dr",
        )

    def system_list(self, group: str | None) -> list[str]:
        """The group's SystemList, by priority (lowest number first)."""
        block = self.cfg.groups.get(group or "")
        sl = block.attrs.get("SystemList") if block else None
        if not isinstance(sl, dict):
            return list(self.cfg.systems)
        return sorted(sl, key=lambda s: (int(sl[s]), s))
