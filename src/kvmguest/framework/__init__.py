"""The VCS agent framework, pure: per-resource state machine and service-group logic.

No I/O and no clock reads: the daemon feeds inputs with the current time and runs the
entry points that the decisions name. See docs/framework.md for the rules.
"""

from kvmguest.framework.decision import (
    Action,
    Decision,
    Outcome,
    RunClean,
    RunMigrate,
    RunMonitor,
    RunOffline,
    RunOnline,
    State,
)
from kvmguest.framework.groups import (
    DependencyCycle,
    GroupError,
    GroupSpec,
    GroupState,
    GroupStatus,
    Op,
    Plan,
    Step,
    autostart_groups,
    group_status,
    next_to_offline,
    next_to_online,
    plan_clear,
    plan_offline,
    plan_online,
    plan_switch,
)
from kvmguest.framework.machine import ResourceMachine
from kvmguest.framework.policy import CleanReason, PolicyError, ResourcePolicy

__all__ = [
    "Action",
    "CleanReason",
    "Decision",
    "DependencyCycle",
    "GroupError",
    "GroupSpec",
    "GroupState",
    "GroupStatus",
    "Op",
    "Outcome",
    "Plan",
    "PolicyError",
    "ResourceMachine",
    "ResourcePolicy",
    "RunClean",
    "RunMigrate",
    "RunMonitor",
    "RunOffline",
    "RunOnline",
    "State",
    "Step",
    "autostart_groups",
    "group_status",
    "next_to_offline",
    "next_to_online",
    "plan_clear",
    "plan_offline",
    "plan_online",
    "plan_switch",
]
