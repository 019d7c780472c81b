"""Critical and Enabled in a service group (VCS): where a resource's fault spreads, when
it faults the group, and which resources the framework manages at all."""

from __future__ import annotations

from kvmguest.agents.loader import Loaded
from kvmguest.framework import GroupSpec, GroupState, State, group_status
from kvmguest.framework.faults import faults_group, parents_to_offline
from kvmguest.model.parser import parse_text

ON, OFF, FLT = State.ONLINE, State.OFFLINE, State.FAULTED

# vm requires ip and fs; ip requires nic. nic and logs (which nothing requires) are not
# critical.
SPEC = GroupSpec(
    "app",
    ("vm", "ip", "fs", "nic", "logs"),
    (("vm", "ip"), ("vm", "fs"), ("ip", "nic")),
    non_critical=frozenset({"nic", "logs"}),
)


def states(**kw: State) -> dict[str, State]:
    return dict.fromkeys(SPEC.resources, ON) | kw


def test_a_non_critical_resource_fault_does_not_fault_its_group() -> None:
    st = states(logs=FLT)
    assert not faults_group(SPEC, "logs")
    assert group_status(SPEC, st).state is GroupState.PARTIAL
    assert parents_to_offline(SPEC, st) == ()


def test_a_non_critical_fault_under_a_critical_parent_faults_the_group() -> None:
    # VCS: the fault takes ip offline, a critical resource: the group faults.
    assert faults_group(SPEC, "nic")
    assert group_status(SPEC, states(nic=FLT)).state is GroupState.FAULTED


def test_a_critical_resource_fault_faults_the_group() -> None:
    assert group_status(SPEC, states(fs=FLT)).state is GroupState.FAULTED


def test_the_parents_of_a_faulted_resource_go_offline_parents_first() -> None:
    assert parents_to_offline(SPEC, states(nic=FLT)) == ("vm",)
    assert parents_to_offline(SPEC, states(nic=FLT, vm=OFF)) == ("ip",)
    assert parents_to_offline(SPEC, states(nic=FLT, vm=OFF, ip=OFF)) == ()
    # The resources the fault does not reach keep running.
    assert "fs" not in parents_to_offline(SPEC, states(nic=FLT, vm=OFF))


def test_from_config_reads_critical_and_leaves_disabled_resources_out() -> None:
    text = """\
group g ( SystemList = { a = 0 } )
    KVMGuest vm ( GuestName = vm )
    KVMGuest side ( GuestName = side
        Critical = 0 )
    KVMGuest old ( GuestName = old
        Enabled = 0 )
    vm requires old
"""
    cfg, diags, _ = parse_text(text, "main.cf")
    assert not diags
    spec = GroupSpec.from_config(Loaded(cfg), "g")
    # Enabled = 0: not managed, as if absent — its links with it.
    assert spec.resources == ("vm", "side")
    assert spec.requires == ()
    assert spec.non_critical == frozenset({"side"})
    st = {"vm": ON, "side": FLT}
    assert group_status(spec, st).state is GroupState.PARTIAL
