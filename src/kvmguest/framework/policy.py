"""The agent-framework parameters of one resource, and the VCS clean reasons.

:class:`ResourcePolicy` holds the static type attributes that drive the framework's
decisions (docs/framework.md explains each). Field names are the VCS attribute names in
snake case; :meth:`ResourcePolicy.from_attrs` takes the VCS spelling, so the daemon can
hand over a resource's typed attributes as they are.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields

from kvmguest.model.excerpt import excerpt
from kvmguest.model.integers import parse_int
from kvmguest.model.ranges import GROUP_ENUMS, not_in_enum, out_of_range
from kvmguest.model.states import ResourceState


class CleanReason(enum.IntEnum):
    """Why the framework calls clean: the number is the VCS ``clean_reason`` argument."""

    OFFLINE_HUNG = 0
    OFFLINE_INEFFECTIVE = 1
    ONLINE_HUNG = 2
    ONLINE_INEFFECTIVE = 3
    UNEXPECTED_OFFLINE = 4
    MONITOR_HUNG = 5

    @property
    def label(self) -> str:
        return _CLEAN_LABELS[self]


_CLEAN_LABELS = {
    CleanReason.OFFLINE_HUNG: "offline hung",
    CleanReason.OFFLINE_INEFFECTIVE: "offline ineffective",
    CleanReason.ONLINE_HUNG: "online hung",
    CleanReason.ONLINE_INEFFECTIVE: "online ineffective",
    CleanReason.UNEXPECTED_OFFLINE: "unexpected offline",
    CleanReason.MONITOR_HUNG: "monitor hung",
}

MANAGE_FAULTS = GROUP_ENUMS["ManageFaults"]

# FaultOnMonitorTimeouts counts timeouts for at most this long after the first one.
MONITOR_TIMEOUT_WINDOW = 3600.0

# VCS attribute name -> field name.
_VCS_NAMES = {
    "MonitorInterval": "monitor_interval",
    "OfflineMonitorInterval": "offline_monitor_interval",
    "MonitorTimeout": "monitor_timeout",
    "OnlineTimeout": "online_timeout",
    "OfflineTimeout": "offline_timeout",
    "CleanTimeout": "clean_timeout",
    "MigrateTimeout": "migrate_timeout",
    "OnlineRetryLimit": "online_retry_limit",
    "OnlineWaitLimit": "online_wait_limit",
    "OfflineWaitLimit": "offline_wait_limit",
    "RestartLimit": "restart_limit",
    "ToleranceLimit": "tolerance_limit",
    "ConfInterval": "conf_interval",
    "FaultOnMonitorTimeouts": "fault_on_monitor_timeouts",
    "CleanRetryLimit": "clean_retry_limit",
    "MigrateWaitLimit": "migrate_wait_limit",
    "IntentionalOffline": "intentional_offline",
    "ManageFaults": "manage_faults",
}


class PolicyError(ValueError):
    """A framework attribute has a value the framework cannot work with."""


@dataclass(frozen=True)
class ResourcePolicy:
    """Framework attributes of one resource, with the VCS (and KVMGuest type) defaults."""

    monitor_interval: int = 60
    offline_monitor_interval: int = 300  # 0: offline resources are not polled
    monitor_timeout: int = 60
    online_timeout: int = 300
    offline_timeout: int = 300
    clean_timeout: int = 60
    migrate_timeout: int = 300  # the KVMGuest type's value (the framework's is 600)
    online_retry_limit: int = 0
    online_wait_limit: int = 2
    offline_wait_limit: int = 0
    restart_limit: int = 0
    tolerance_limit: int = 0
    conf_interval: int = 600
    fault_on_monitor_timeouts: int = 4  # 0: monitor timeouts never fault
    clean_retry_limit: int = 0  # 0: clean is retried without end
    migrate_wait_limit: int = 2
    intentional_offline: int = 1  # the KVMGuest type's value (the framework's is 0)
    manage_faults: str = "ALL"  # a group attribute in VCS; per resource here

    def __post_init__(self) -> None:
        # The model's tables: the bounds ``validate`` enforces are the bounds checked here,
        # so a configuration that validate passed never stops the daemon.
        for f in fields(self):
            value = getattr(self, f.name)
            vcs = _vcs_name(f.name)
            if f.name == "manage_faults":
                why = not_in_enum(vcs, value)
            elif isinstance(value, bool) or not isinstance(value, int):
                why = f"{vcs} must be an integer, not {value!r}"
            else:
                why = out_of_range(vcs, value)
            if why:
                raise PolicyError(why)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, object]) -> ResourcePolicy:
        """Build from VCS attribute names (``MonitorInterval`` …); other names are ignored.

        Values may be ints, booleans or their decimal strings, as the config holds them.
        """
        kwargs: dict[str, object] = {}
        for vcs, name in _VCS_NAMES.items():
            if vcs not in attrs:
                continue
            raw = attrs[vcs]
            if name == "manage_faults":
                kwargs[name] = str(raw)
                continue
            if isinstance(raw, bool):
                kwargs[name] = int(raw)
            elif isinstance(raw, int):
                kwargs[name] = raw
            elif isinstance(raw, str):
                try:
                    kwargs[name] = parse_int(raw)
                except ValueError as e:
                    raise PolicyError(f"{vcs} must be {e}, not {excerpt(raw)}") from None
            else:
                raise PolicyError(f"{vcs} must be an integer, not {raw!r}")
        return cls(**kwargs)  # type: ignore[arg-type]

    @property
    def effective_conf_interval(self) -> int:
        """ConfInterval, raised to the VCS floor (MI + MT) x TL + MI + 10.

        The floor keeps the window long enough for ToleranceLimit offline reports to be
        counted at all; VCS ignores a lower configured value.
        """
        floor = (
            (self.monitor_interval + self.monitor_timeout) * self.tolerance_limit
            + self.monitor_interval
            + 10
        )
        return max(self.conf_interval, floor)

    @property
    def manages_faults(self) -> bool:
        return self.manage_faults == "ALL"

    def offline_means_fault(self, state: ResourceState) -> bool:
        """Whether a monitor report counts as 'not running' for fault detection.

        INTENTIONAL OFFLINE is a fault only when the type does not support it
        (IntentionalOffline=0): then it is read as a plain OFFLINE.
        """
        if state is ResourceState.OFFLINE:
            return True
        return state is ResourceState.INTENTIONAL_OFFLINE and not self.intentional_offline


def _vcs_name(field_name: str) -> str:
    for vcs, name in _VCS_NAMES.items():
        if name == field_name:
            return vcs
    return field_name
