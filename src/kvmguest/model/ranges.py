"""The ranges and enumerations of the attributes whose values the framework acts on.

The configuration language types a value (int, str, boolean) but cannot bound it; a
``MonitorInterval = 0`` parses. These tables are the one place that says which values the
framework can work with: ``validate`` refuses anything outside them with its position, and
the framework's own policy object checks the same tables, so a configuration that
``validate`` passed can never be refused later by the daemon.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kvmguest.model.excerpt import excerpt
from kvmguest.model.integers import INT_MAX


@dataclass(frozen=True)
class Range:
    low: int
    high: int = INT_MAX

    def describe(self) -> str:
        if self.high == INT_MAX:
            return f"at least {self.low}"
        return f"from {self.low} to {self.high}"


ANY = Range(-INT_MAX)
NON_NEGATIVE = Range(0)
POSITIVE = Range(1)

# The framework's static attributes (framework.cf) and the type attributes the framework
# reads. A timeout or interval of 0 would make the framework spin; a negative limit has no
# meaning. NumThreads follows VCS's documented 1..30.
FRAMEWORK: dict[str, Range] = {
    "MonitorInterval": POSITIVE,
    "OfflineMonitorInterval": NON_NEGATIVE,  # 0: offline resources are not polled
    "MonitorTimeout": POSITIVE,
    "OnlineTimeout": POSITIVE,
    "OfflineTimeout": POSITIVE,
    "CleanTimeout": POSITIVE,
    "ActionTimeout": POSITIVE,
    "InfoTimeout": POSITIVE,
    "OpenTimeout": POSITIVE,
    "CloseTimeout": POSITIVE,
    "MigrateTimeout": POSITIVE,
    "OnlineRetryLimit": NON_NEGATIVE,
    "OnlineWaitLimit": NON_NEGATIVE,
    "OfflineWaitLimit": NON_NEGATIVE,
    "CleanRetryLimit": NON_NEGATIVE,
    "RestartLimit": NON_NEGATIVE,
    "ToleranceLimit": NON_NEGATIVE,
    "ConfInterval": NON_NEGATIVE,
    "FaultOnMonitorTimeouts": NON_NEGATIVE,
    "AlertOnMonitorTimeouts": NON_NEGATIVE,
    "MigrateWaitLimit": NON_NEGATIVE,
    "IntentionalOffline": Range(0, 1),
    "NumThreads": Range(1, 30),
    "AgentReplyTimeout": POSITIVE,
    "AgentStartTimeout": POSITIVE,
    "LevelTwoMonitorFreq": NON_NEGATIVE,
}

# Keys of integer associations: IMF's Mode is 0..3 in VCS (none, offline, online, both).
ASSOCIATION_KEYS: dict[str, dict[str, Range]] = {
    "IMF": {"Mode": Range(0, 3), "MonitorFreq": NON_NEGATIVE, "RegisterRetryLimit": NON_NEGATIVE},
}

# Group attributes with a fixed set of words.
GROUP_ENUMS: dict[str, tuple[str, ...]] = {
    "ManageFaults": ("ALL", "NONE"),
    "FailOverPolicy": ("Priority", "RoundRobin", "Load", "BiggestAvailable"),
    "AutoStartPolicy": ("Order", "Priority", "Load"),
}

# Group integer attributes the framework reads.
GROUP_RANGES: dict[str, Range] = {
    "OnlineRetryLimit": NON_NEGATIVE,
    "OnlineRetryInterval": NON_NEGATIVE,
    "Parallel": Range(0, 2),
    "Frozen": Range(0, 1),
    "TFrozen": Range(0, 1),
    "AutoFailOver": Range(0, 2),
    "AutoRestart": Range(0, 2),
    "Priority": NON_NEGATIVE,
    "Load": NON_NEGATIVE,
}


def out_of_range(
    name: str,
    value: object,
    bounds: Mapping[str, Range] = FRAMEWORK,
    keys: Mapping[str, Mapping[str, Range]] = ASSOCIATION_KEYS,
) -> str | None:
    """Why ``value`` (typed: an int, or a dict for an association) cannot be ``name``'s
    value under ``bounds``/``keys``, or None when it can (or is not bounded)."""
    bound = bounds.get(name)
    if bound is not None and isinstance(value, int) and not bound.low <= value <= bound.high:
        return f"{name} must be {bound.describe()}, not {value}"
    if isinstance(value, dict):
        for key, kbound in keys.get(name, {}).items():
            item = value.get(key)
            if isinstance(item, int) and not kbound.low <= item <= kbound.high:
                return f"{name}.{key} must be {kbound.describe()}, not {item}"
    return None


def not_in_enum(name: str, value: object) -> str | None:
    """Why ``value`` is not one of group attribute ``name``'s words, or None."""
    words = GROUP_ENUMS.get(name)
    if words is None or value in words:
        return None
    choices = f"{', '.join(words[:-1])} or {words[-1]}"
    return f"{name} is {choices}, not {excerpt(str(value))}"
