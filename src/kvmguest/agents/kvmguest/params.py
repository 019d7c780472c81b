"""A KVMGuest resource's attribute values, typed and resolved for one system by the one
resolver (:mod:`kvmguest.model.resolver`), as the entry points use them."""

from __future__ import annotations

from dataclasses import dataclass, field

from kvmguest.agents.kvmguest.type_name import KVMGUEST
from kvmguest.model.attributes import Typed
from kvmguest.model.resolver import Loaded, unset_to_none
from kvmguest.model.types import effective_attrs


def _assoc(value: Typed) -> dict[str, str]:
    assert isinstance(value, dict)
    return {k: str(v) for k, v in value.items()}


def _int(value: Typed) -> int:
    assert isinstance(value, int)
    return value


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


def guest_params(loaded: Loaded, resource: str, system: str | None) -> GuestParams:
    """The resource's KVMGuest attributes as they are on ``system``, from the resolver."""
    block = loaded.cfg.resource(resource)
    if block.kind != KVMGUEST:
        raise KeyError(f"resource {resource} is a {block.kind}, not a KVMGuest")
    values = loaded.resource_values(resource, system)
    attrs = effective_attrs(loaded.types[KVMGUEST])
    statics = {name: values[name] for name, adef in attrs.items() if adef.static}
    return GuestParams(
        resource=resource,
        group=block.group,
        system=system,
        site=loaded.system(system).site if system else None,
        guest_name=str(values["GuestName"]),
        delay_online=_int(values["DelayAfterGuestOnline"]),
        delay_offline=_int(values["DelayAfterGuestOffline"]),
        sync_dir=unset_to_none(str(values["SyncDir"])),
        config_file=unset_to_none(str(values["GuestConfigFilePath"])),
        resync=bool(values["ResyncVMCfg"]),
        ce_info=_assoc(values["CEInfo"]),
        rhevm_info=_assoc(values["RHEVMInfo"]),
        dr_opts=_assoc(values["DROpts"]),
        statics=statics,
        dr_dir=loaded.cluster_attr("DRPayloadDir") or "/var/lib/kvmguest/dr",
    )
