"""A VCS main.cf loads: the stock VCS attributes are accepted (with one warning each for
those kvmguest does not use), checked against their VCS types, and the types of VCS's
bundled agents (from an included types.cf) load with their resources in the graph."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvmguest.agents.loader import builtin_types, validate
from kvmguest.model import vcs_stock
from kvmguest.model.config import WARNING, Diagnostic, errors_of
from kvmguest.model.parser import load, parse_text
from kvmguest.model.printer import format_config
from kvmguest.model.types import effective_attrs, object_types

VCS = Path(__file__).resolve().parents[1] / "data" / "vcs"

BASE = """\
cluster c ( {cluster} )
system hostA ( {system} )
group g (
    SystemList = {{ hostA = 0 }}
    {group}
    )
    KVMGuest vm ( GuestName = vm
        {resource} )
"""


def check(tmp_path: Path, **blocks: str) -> list[Diagnostic]:
    parts = {"cluster": "", "system": "", "group": "", "resource": ""} | blocks
    path = tmp_path / "main.cf"
    path.write_text(BASE.format(**parts))
    cfg, diags = load(path)
    assert not diags, diags
    return validate(cfg)


def warnings(diags: list[Diagnostic]) -> list[str]:
    return [d.message for d in diags if d.severity == WARNING]


def test_stock_cluster_attributes_load_with_one_warning_each(tmp_path: Path) -> None:
    diags = check(
        tmp_path,
        cluster="ClusterName = prod EngineShutdown = PromptClusStop "
        'Notifier = { State = 1, Host = "mail.example.com" } Stewards = { 192.0.2.9 }',
    )
    assert errors_of(diags) == []
    assert sorted(warnings(diags)) == [
        f"cluster c: {n} is a VCS cluster attribute that is accepted but not used by kvmguest"
        for n in ("ClusterName", "EngineShutdown", "Notifier", "Stewards")
    ]


def test_stock_system_attributes_load_with_one_warning_each(tmp_path: Path) -> None:
    diags = check(
        tmp_path,
        system="SystemOwner = ops CPUThresholdLevel = { Critical = 95 } ShutdownTimeout = 300",
    )
    assert errors_of(diags) == []
    assert len(warnings(diags)) == 3
    assert all("VCS system attribute" in w for w in warnings(diags))


def test_stock_group_attributes_load_with_one_warning_each(tmp_path: Path) -> None:
    diags = check(
        tmp_path,
        group="SystemZones = { hostA = 0 } Prerequisites = { GlobalCounter = 1 } "
        "TriggersEnabled = { RESFAULT } ContainerInfo = { Name = z1, Type = Zone, Enabled = 1 } "
        "AutoStartPolicy = Load",
    )
    assert errors_of(diags) == []
    # AutoStartPolicy is one kvmguest knows (objects.cf): no warning for it.
    assert len(warnings(diags)) == 4
    assert not any("AutoStartPolicy" in w for w in warnings(diags))


def test_stock_resource_attributes_load_and_critical_enabled_are_used(tmp_path: Path) -> None:
    diags = check(
        tmp_path,
        resource="Critical = 0 Enabled = 1 ResourceOwner = ops TriggerEvent = 1 "
        "ResourceRecipients = { admin = Warning } ComputeStats = 1",
    )
    assert errors_of(diags) == []
    assert sorted(w.split(": ")[1].split()[0] for w in warnings(diags)) == [
        "ComputeStats", "ResourceOwner", "ResourceRecipients", "TriggerEvent",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        ({"cluster": "PanicOnNoMem = 2"}, "PanicOnNoMem is a boolean: 0 or 1, not '2'"),
        ({"system": "LoadWarningLevel = high"}, "LoadWarningLevel must be an integer"),
        ({"group": "SystemZones = { hostA = x }"}, "SystemZones[hostA] must be an integer"),
        ({"group": "AutoStartPolicy = Random"}, "AutoStartPolicy is Order, Priority or Load"),
        ({"resource": "Critical = yes"}, "Critical is a boolean"),
        ({"resource": "ContainerInfo = { Name = z, Kind = Zone }"}, "ContainerInfo has no key"),
        ({"resource": "TriggerPath = { a }"}, "TriggerPath takes a single value"),
    ],
)
def test_a_stock_attribute_that_is_not_well_formed_is_an_error(
    tmp_path: Path, blocks: dict[str, str], expected: str
) -> None:
    errs = [d.message for d in errors_of(check(tmp_path, **blocks))]
    assert len(errs) == 1 and expected in errs[0], errs


def test_any_other_unknown_name_stays_an_error_with_did_you_mean(tmp_path: Path) -> None:
    errs = errors_of(check(tmp_path, cluster="EngineShutdwn = Enable", resource="Critcal = 0"))
    assert [d.message for d in errs] == [
        "cluster c: unknown attribute 'EngineShutdwn' (did you mean EngineShutdown?)",
        "KVMGuest vm: unknown attribute 'Critcal' (did you mean Critical?)",
    ]


def test_types_from_an_included_types_cf_load_and_stay_in_the_graph() -> None:
    cfg, diags = load(VCS / "main.cf")
    assert not diags
    assert {"Mount", "IP", "NIC", "Application", "DiskGroup"} <= cfg.types.keys()
    assert errors_of(validate(cfg)) == []
    assert [r.kind for r in cfg.group_resources("appsg")] == ["KVMGuest", "Mount", "IP", "NIC"]
    assert {(lk.parent, lk.child) for lk in cfg.links} == {
        ("appvm", "appfs"), ("appvm", "appip"), ("appip", "appnic"),
    }  # fmt: skip


def test_a_resource_of_a_file_type_is_checked_against_that_type(tmp_path: Path) -> None:
    shutil.copy(VCS / "types.cf", tmp_path / "types.cf")
    text = (VCS / "main.cf").read_text().replace("FsckOpt", "FsckOption")
    (tmp_path / "main.cf").write_text(text)
    cfg, _ = load(tmp_path / "main.cf")
    errs = [d.message for d in errors_of(validate(cfg))]
    assert errs == ["Mount appfs: unknown attribute 'FsckOption' (did you mean FsckOpt?)"]


def test_realistic_vcs_main_cf_validates_with_one_warning_per_unused_stock_attribute() -> None:
    cfg, diags = load(VCS / "main.cf")
    diags = diags or validate(cfg)
    assert errors_of(diags) == []
    assert sorted(w.split(": ", 1)[0] + ": " + w.split(": ")[1].split()[0]
                  for w in warnings(diags)) == [
        "KVMGuest appvm: ResourceOwner",
        "cluster prodclus: EngineShutdown",
        "cluster prodclus: PanicOnNoMem",
        "group appsg: ClusterFailOverPolicy",
        "group appsg: TriggersEnabled",
        "system hostA: SystemOwner",
        "system hostB: SystemOwner",
    ]  # fmt: skip


def test_the_realistic_main_cf_round_trips_through_the_printer() -> None:
    cfg, _ = load(VCS / "main.cf")
    again, diags, _ = parse_text(format_config(cfg), str(VCS / "main.cf"))
    assert diags == []
    assert again == cfg


def test_validate_command_accepts_it_with_warnings_only() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "kvmguest", "validate", "-c", str(VCS / "main.cf")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "valid (2 group(s), 5 resource(s))" in r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 7 and all(": warning: " in ln for ln in lines), r.stderr


# The stock VCS attributes issue #10 names, per block: each is known to kvmguest.
STOCK = {
    "cluster": "AdministratorGroups Administrators AutoAddSystemtoCSG AutoClearLimit "
    "AutoStartTimeout BackupInterval ClusterAddress ClusterLocation ClusterName ClusterOwner "
    "ClusterRecipients ClusterUUID CounterInterval CounterMissAction CounterMissTolerance "
    "CredRenewFrequency DeleteOnlineResource EnableFFDC EnableVMAutoDiscovery EnginePriority "
    "EngineShutdown FipsMode GroupLimit Guests HacliUserLevel LockMemory LogClusterUUID LogSize "
    "Notifier OperatorGroups Operators PanicOnNoMem PreferredFencingPolicy PrintMsg "
    "ProcessPriority ResourceLimit SecInfo SecInfoLevel SecureClus SiteAware Statistics "
    "Stewards SystemRebootAction TypeLimit UseFence UserNames WACPort",
    "system": "Capacity CPUThresholdLevel CPUUsageMonitoring DynamicLoad FencingWeight Limits "
    "LoadTimeThreshold LoadWarningLevel MemThresholdLevel NoAutoDisable PhysicalServer "
    "ReservedCapacity ShutdownTimeout SwapThresholdLevel SystemLocation SystemOwner "
    "SystemRecipients UserInt UserStr",
    "group": "AdministratorGroups Administrators Authority AutoFailOver AutoRestart AutoStart "
    "AutoStartIfPartial AutoStartList AutoStartPolicy ClusterFailOverPolicy ClusterList "
    "ContainerInfo DeferAutoStart Enabled Evacuate FailOverPolicy FaultPropagation Frozen "
    "GroupOwner GroupRecipients Load ManageFaults OnlineAtUnfreeze OnlineClearParent "
    "OnlineRetryInterval OnlineRetryLimit OperatorGroups Operators Parallel PolicyIntention "
    "Prerequisites PreOnline PreOnlineTimeout PreSwitch Priority PrintTree SysDownPolicy "
    "SystemList SystemZones TFrozen TriggerEvent TriggerPath TriggerResFault TriggerResRestart "
    "TriggerResStateChange TriggersEnabled TypeDependencies UserIntGlobal UserIntLocal "
    "UserStrGlobal UserStrLocal",
    "resource": "Critical Enabled ComputeStats ContainerInfo ResourceInfo ResourceOwner "
    "ResourceRecipients TriggerEvent TriggerPath TriggerResRestart TriggerResStateChange "
    "TriggersEnabled",
}


@pytest.mark.parametrize("kind", sorted(STOCK))
def test_every_stock_vcs_attribute_of_the_issue_is_known(kind: str) -> None:
    known = (
        effective_attrs(builtin_types()["KVMGuest"])
        if kind == "resource"
        else object_types()[kind].attrs
    )
    missing = [n for n in STOCK[kind].split() if n not in known and not vcs_stock.unused(kind, n)]
    assert missing == []


def test_a_vcs_main_cf_with_warnings_gets_the_cached_one_shot_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kvmguest.agents.loader import Loaded

    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    main_cf = VCS / "main.cf"
    cfg, diags = load(main_cf)
    assert [d for d in diags + validate(cfg) if d.severity == WARNING]  # stock attributes
    Loaded.from_file(str(main_cf))
    cached = Loaded.cached(str(main_cf))
    assert cached is not None and set(cached.cfg.resources) == set(cfg.resources)
