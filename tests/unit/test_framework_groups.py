"""Service groups on one host: dependency order, plans, AutoStart, aggregate state."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmguest.agents.loader import Loaded
from kvmguest.framework import (
    DependencyCycle,
    GroupError,
    GroupSpec,
    GroupState,
    Op,
    State,
    autostart_groups,
    group_status,
    next_to_offline,
    next_to_online,
    plan_clear,
    plan_offline,
    plan_online,
    plan_switch,
)
from kvmguest.model.parser import parse_text

ON, OFF, FLT = State.ONLINE, State.OFFLINE, State.FAULTED

# web requires app, app requires db and disk, db requires disk.
STACK = GroupSpec(
    "stack",
    ("web", "app", "db", "disk"),
    (("web", "app"), ("app", "db"), ("app", "disk"), ("db", "disk")),
    system_list=("sys1", "sys2"),
    auto_start_list=("sys1",),
)


def states(**kw: State) -> dict[str, State]:
    out = dict.fromkeys(STACK.resources, OFF)
    out.update(kw)
    return out


# --- ordering ----------------------------------------------------------------------------


def test_online_waves_children_first() -> None:
    assert STACK.online_waves() == (("disk",), ("db",), ("app",), ("web",))
    assert STACK.offline_waves() == (("web",), ("app",), ("db",), ("disk",))


def test_independent_resources_share_a_wave() -> None:
    g = GroupSpec("g", ("vm1", "vm2", "vm3"), (("vm3", "vm1"),))
    assert g.online_waves() == (("vm1", "vm2"), ("vm3",))
    assert g.offline_waves() == (("vm3",), ("vm1", "vm2"))


def test_children_and_parents() -> None:
    assert STACK.children("app") == ("db", "disk")
    assert STACK.parents("disk") == ("app", "db")


def test_cycle_is_rejected_naming_the_cycle() -> None:
    with pytest.raises(DependencyCycle) as err:
        GroupSpec("g", ("a", "b", "c", "d"), (("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")))
    assert err.value.cycle == ("a", "b", "c")
    assert str(err.value) == (
        "group g: resources require each other in a cycle: a requires b requires c requires a"
    )


def test_self_link_is_a_cycle() -> None:
    with pytest.raises(DependencyCycle, match="a requires a"):
        GroupSpec("g", ("a",), (("a", "a"),))


def test_link_outside_the_group_is_rejected() -> None:
    with pytest.raises(GroupError, match="vm9 is not a resource of this group"):
        GroupSpec("g", ("vm1",), (("vm1", "vm9"),))


def test_duplicate_resource_is_rejected() -> None:
    with pytest.raises(GroupError, match="listed twice"):
        GroupSpec("g", ("vm1", "vm1"))


@st.composite
def dags(draw: st.DrawFn) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    n = draw(st.integers(1, 9))
    names = tuple(f"r{i}" for i in range(n))
    # Edges only from a higher index to a lower one: acyclic by construction.
    pairs = [(names[i], names[j]) for i in range(n) for j in range(i)]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True) if pairs else st.just([]))
    perm = draw(st.permutations(names))
    return tuple(perm), tuple(edges)


@given(dags())
def test_waves_respect_every_link(dag: tuple[tuple[str, ...], tuple[tuple[str, str], ...]]) -> None:
    resources, links = dag
    g = GroupSpec("g", resources, links)
    wave_of = {r: n for n, wave in enumerate(g.online_waves()) for r in wave}
    assert sorted(wave_of) == sorted(resources)
    for parent, child in links:
        assert wave_of[child] < wave_of[parent]
    for n, wave in enumerate(g.online_waves()):  # as early as possible
        for r in wave:
            assert n == 0 or any(wave_of[c] == n - 1 for c in g.children(r))


@given(dags(), st.data())
def test_any_back_link_makes_a_named_real_cycle(
    dag: tuple[tuple[str, ...], tuple[tuple[str, str], ...]], data: st.DataObject
) -> None:
    resources, links = dag
    if not links:
        return
    parent, child = data.draw(st.sampled_from(links))
    with pytest.raises(DependencyCycle) as err:
        GroupSpec("g", resources, (*links, (child, parent)))
    cycle = err.value.cycle
    all_links = {*links, (child, parent)}
    for i, r in enumerate(cycle):
        assert (r, cycle[(i + 1) % len(cycle)]) in all_links


# --- driving -----------------------------------------------------------------------------


def test_next_to_online_walks_up_the_tree() -> None:
    s = states()
    assert next_to_online(STACK, s) == ("disk",)
    s["disk"] = State.GOING_ONLINE
    assert next_to_online(STACK, s) == ()
    s["disk"] = ON
    assert next_to_online(STACK, s) == ("db",)
    s["db"] = ON
    assert next_to_online(STACK, s) == ("app",)


def test_next_to_online_skips_faulted() -> None:
    assert next_to_online(STACK, states(disk=FLT)) == ()


def test_next_to_offline_walks_down_the_tree() -> None:
    s = dict.fromkeys(STACK.resources, ON)
    assert next_to_offline(STACK, s) == ("web",)
    s["web"] = OFF
    assert next_to_offline(STACK, s) == ("app",)
    s["app"] = FLT  # a faulted parent is down: its children may go
    assert next_to_offline(STACK, s) == ("db",)


def test_frozen_group_is_not_driven() -> None:
    frozen = STACK.with_frozen(True)
    assert next_to_online(frozen, states()) == ()
    assert next_to_offline(frozen, dict.fromkeys(STACK.resources, ON)) == ()


def test_missing_state_is_an_error() -> None:
    with pytest.raises(GroupError, match="no state for web"):
        next_to_online(STACK, {"app": OFF, "db": OFF, "disk": OFF})


# --- plans -------------------------------------------------------------------------------


def test_plan_online_skips_what_is_up() -> None:
    plan = plan_online(STACK, states(disk=ON))
    assert plan.waves() == (("db",), ("app",), ("web",))
    assert all(step.op is Op.ONLINE for step in plan.steps)
    assert plan.describe() == "online stack: db then app then web"


def test_plan_online_of_online_group_is_empty() -> None:
    plan = plan_online(STACK, dict.fromkeys(STACK.resources, ON))
    assert plan.empty and plan.describe() == "online stack: nothing to do"


@pytest.mark.parametrize(
    ("state", "why"),
    [
        (FLT, "db is FAULTED (clear it first)"),
        (State.UNKNOWN, "db is UNKNOWN (probe it first)"),
        (State.PROBING, "db is not probed yet"),
        (State.ONLINE_ADMIN_WAIT, "db is in ADMIN_WAIT"),
        (State.GOING_OFFLINE, "db is GOING OFFLINE in progress"),
    ],
)
def test_plan_online_refused(state: State, why: str) -> None:
    with pytest.raises(GroupError, match=re.escape(why)):
        plan_online(STACK, states(db=state))


def test_plan_online_refused_when_frozen() -> None:
    with pytest.raises(GroupError, match="frozen"):
        plan_online(STACK.with_frozen(True), states())


def test_plan_offline_parents_first() -> None:
    plan = plan_offline(STACK, dict.fromkeys(STACK.resources, ON))
    assert plan.waves() == (("web",), ("app",), ("db",), ("disk",))
    plan = plan_offline(STACK, states(disk=ON, db=State.UNKNOWN))
    assert plan.waves() == (("db",), ("disk",))


def test_plan_offline_refused_while_starting() -> None:
    with pytest.raises(GroupError, match="app is GOING ONLINE"):
        plan_offline(STACK, states(app=State.GOING_ONLINE))


def test_plan_switch_is_the_offline_half_with_a_target() -> None:
    plan = plan_switch(STACK, dict.fromkeys(STACK.resources, ON), "sys1", "sys2")
    assert plan.operation == "switch" and plan.target == "sys2"
    assert plan.waves() == (("web",), ("app",), ("db",), ("disk",))
    assert plan.describe().startswith("switch stack to sys2: web then")


@pytest.mark.parametrize(
    ("spec", "to", "why"),
    [
        (STACK, "sys9", "not in its SystemList"),
        (STACK, "sys1", "is this system"),
        (GroupSpec("p", ("vm1",), parallel=True), "sys2", "parallel"),
    ],
)
def test_plan_switch_refused(spec: GroupSpec, to: str, why: str) -> None:
    with pytest.raises(GroupError, match=why):
        plan_switch(spec, dict.fromkeys(spec.resources, ON), "sys1", to)


def test_plan_clear_names_faulted_resources_even_when_frozen() -> None:
    plan = plan_clear(STACK.with_frozen(True), states(db=FLT, web=FLT))
    assert [(s.resource, s.op) for s in plan.steps] == [("web", Op.CLEAR), ("db", Op.CLEAR)]


# --- AutoStart ---------------------------------------------------------------------------


def test_autostart() -> None:
    other = GroupSpec("other", ("x",), system_list=("sys1",), auto_start_list=("sys2",))
    off = GroupSpec(
        "off", ("y",), system_list=("sys1",), auto_start_list=("sys1",), auto_start=False
    )
    frozen = GroupSpec("frz", ("z",), system_list=("sys1",), auto_start_list=("sys1",), frozen=True)
    stray = GroupSpec("stray", ("w",), system_list=("sys2",), auto_start_list=("sys1",))
    specs = [STACK, other, off, frozen, stray]
    assert autostart_groups(specs, "sys1") == ("stack",)
    assert autostart_groups(specs, "sys2") == ()
    assert autostart_groups(specs, "sys1", {**states(), "db": FLT}) == ()


# --- state -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "text"),
    [
        ({}, "OFFLINE"),
        ({r: ON for r in STACK.resources}, "ONLINE"),
        ({"disk": ON}, "PARTIAL"),
        ({"disk": ON, "db": State.GOING_ONLINE}, "PARTIAL|STARTING"),
        ({"disk": State.GOING_ONLINE}, "OFFLINE|STARTING"),
        ({"disk": ON, "db": FLT}, "FAULTED"),
        ({"web": State.GOING_OFFLINE, "app": ON}, "PARTIAL|STOPPING"),
        ({"disk": State.UNKNOWN}, "OFFLINE|UNKNOWN"),
        ({"disk": State.ONLINE_ADMIN_WAIT}, "OFFLINE|ADMIN_WAIT"),
        ({"disk": State.INTENTIONAL_OFFLINE}, "OFFLINE"),
    ],
)
def test_group_status(kw: dict[str, State], text: str) -> None:
    assert str(group_status(STACK, states(**kw))) == text


def test_empty_group_is_offline() -> None:
    assert group_status(GroupSpec("e", ()), {}).state is GroupState.OFFLINE


# --- from the configuration -----------------------------------------------------------------


MAIN_CF = """
system sysA ( )
system sysB ( )
group vmgrp (
    SystemList = { sysB = 0, sysA = 1 }
    AutoStartList = { sysB }
    Parallel = 0
)
KVMGuest vm1 ( GuestName = vm1 )
KVMGuest vm2 ( GuestName = vm2 )
vm1 requires vm2
group frz (
    SystemList = { sysA = 0 }
    Frozen = 1
)
KVMGuest vm3 ( GuestName = vm3 )
"""


def test_from_config() -> None:
    cfg, diags, _ = parse_text(MAIN_CF, "main.cf")
    assert not diags, diags
    g = GroupSpec.from_config(Loaded(cfg), "vmgrp")
    assert g.resources == ("vm1", "vm2")
    assert g.requires == (("vm1", "vm2"),)
    assert g.system_list == ("sysB", "sysA")
    assert g.auto_start_list == ("sysB",)
    assert not g.parallel and not g.frozen and g.auto_start
    assert g.online_waves() == (("vm2",), ("vm1",))
    frz = GroupSpec.from_config(Loaded(cfg), "frz")
    assert frz.frozen and frz.resources == ("vm3",)
