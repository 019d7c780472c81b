"""The built-in KVMGuest type is the seed's definition, attribute for attribute."""

from __future__ import annotations

import re
from pathlib import Path

from kvmguest.agents.loader import builtin_types
from kvmguest.model.attributes import AttrType, Dimension
from kvmguest.model.parser import parse_text
from kvmguest.model.printer import format_type
from kvmguest.model.types import effective_attrs, framework_type

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT.parent / "shared" / "seed" / "000_dd86f7481afe80a9.txt"
SEED_COPY = ROOT / "tests" / "data" / "seed-kvmguest-type.txt"


def seed_type_text() -> str:
    """The `type KVMGuest (...)` text, cut from the seed itself when it is beside us."""
    text = SEED.read_text() if SEED.exists() else SEED_COPY.read_text()
    match = re.search(r"type KVMGuest \(.*?DROpts\{\} = \{[^}]*\} \)", text, re.S)
    assert match, "the seed has no type KVMGuest definition"
    return match.group(0)


def test_builtin_type_equals_the_seed() -> None:
    cfg, diags, _ = parse_text(seed_type_text(), "seed")
    assert diags == []
    seed = cfg.types["KVMGuest"]
    ours = builtin_types()["KVMGuest"]
    assert list(ours.attrs) == list(seed.attrs)
    for name, adef in seed.attrs.items():
        assert ours.attrs[name] == adef, name


def test_seed_values_spot_checks() -> None:
    attrs = builtin_types()["KVMGuest"].attrs
    assert attrs["IntentionalOffline"].static and attrs["IntentionalOffline"].default == "1"
    assert attrs["AEPTimeout"].type is AttrType.BOOLEAN
    assert attrs["MigrateTimeout"].default == "300"
    assert attrs["SupportedActions"].dimension is Dimension.KEYLIST
    assert attrs["SupportedActions"].default == ["guestmigrated", "vmconfigsync", "DevScan"]
    assert attrs["ArgList"].dimension is Dimension.VECTOR
    assert attrs["DROpts"].dimension is Dimension.ASSOCIATION
    assert attrs["DROpts"].keys[0] == "ConfigureNetwork"
    assert attrs["GuestName"].default is None and not attrs["GuestName"].static
    assert attrs["DelayAfterGuestOffline"].default == "30"


def test_framework_statics_have_vcs_defaults_and_type_overrides_win() -> None:
    fw = framework_type().attrs
    assert fw["MonitorInterval"].default == "60"
    assert fw["OfflineMonitorInterval"].default == "300"
    assert fw["OnlineWaitLimit"].default == "2"
    assert fw["ToleranceLimit"].default == "0"
    assert fw["ConfInterval"].default == "600"
    assert fw["FaultOnMonitorTimeouts"].default == "4"
    eff = effective_attrs(builtin_types()["KVMGuest"])
    assert eff["MigrateTimeout"].default == "300"  # the type's, not the framework's 600
    assert eff["IntentionalOffline"].default == "1"
    assert eff["MonitorTimeout"].default == "60"


def test_printed_type_parses_back_identical() -> None:
    text = format_type(builtin_types()["KVMGuest"])
    cfg, diags, _ = parse_text(text, "printed")
    assert diags == []
    assert cfg.types["KVMGuest"].attrs == builtin_types()["KVMGuest"].attrs
