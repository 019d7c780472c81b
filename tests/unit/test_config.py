"""The configuration language: valid files, every invalid case with its position, the
round trip through the printer, and a fuzz that never ends in an unhandled exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmguest.agents.loader import validate
from kvmguest.model.config import Block, Config, Link
from kvmguest.model.parser import load, parse_text
from kvmguest.model.printer import format_config

GOOD = """\
include "types.cf"

cluster prod (
    LibvirtURITemplate = "qemu+ssh://{system}/system"
    )

system hostA ( Site = east )
system hostB ( Site = west )

group vmgrp (
    SystemList = { hostA = 0, hostB = 1 }
    AutoStartList = { hostA }
    )
    KVMGuest vm1 (
        GuestName = vm1
        GuestConfigFilePath = "/etc/kvmguest/vm1.xml"
        SyncDir@hostA = "/sync/a"
        SyncDir@hostB = "/sync/b"
        DelayAfterGuestOnline = 10
        DROpts = { ConfigureNetwork = 1, IPAddress = "192.0.2.10", Netmask = "255.255.255.0",
                   Gateway = "192.0.2.1", DNSServers = "192.0.2.53 192.0.2.54",
                   DNSSearchPath = "example.com corp.example.com", Device = eth0 }
        DROpts@hostB = { ConfigureNetwork = 1, IPAddress = "198.51.100.10", Netmask = 24,
                         Gateway = "198.51.100.1" }
        )
    KVMGuest vm2 (
        GuestName = "vm two"   // quoted, with a space
        CEInfo = { Enabled = 0 }
        )
    vm1 requires vm2
"""


def write(tmp_path: Path, text: str, name: str = "main.cf", types: str = "") -> Path:
    (tmp_path / "types.cf").write_text(types)
    path = tmp_path / name
    path.write_text(text)
    return path


def errors(tmp_path: Path, text: str, types: str = "") -> list[str]:
    path = write(tmp_path, text, types=types)
    cfg, diags = load(path)
    diags = diags or validate(cfg)
    return [str(d).replace(str(tmp_path) + "/", "") for d in diags]


def test_valid_file(tmp_path: Path) -> None:
    assert errors(tmp_path, GOOD) == []
    cfg, _ = load(write(tmp_path, GOOD))
    vm1 = cfg.resources["vm1"]
    assert vm1.group == "vmgrp"
    assert vm1.raw("SyncDir", "hostB") == "/sync/b"
    assert vm1.raw("SyncDir") is None
    assert cfg.resources["vm2"].attrs["GuestName"] == "vm two"
    assert cfg.links == [Link("vm1", "vm2")]
    assert cfg.groups["vmgrp"].attrs["SystemList"] == {"hostA": "0", "hostB": "1"}


BAD = [
    # (text, expected "line:col: message" fragment)
    ("group g (\n  SystemList = { a = 0 \n", "main.cf:2:22: unexpected end of file"),
    (
        "group g ( )\n  KVMGuest vm1 ( GuestName = vm1 Foo = 1 = 2 )\n",
        "main.cf:2:42: unexpected '='",
    ),
    (
        'group g ( )\nKVMGuest vm1 ( GuestName = "unterminated )\n',
        "main.cf:2:28: unexpected character",
    ),
    (
        "group g ( )\nKVMGeust vm1 ( GuestName = vm1 )\n",
        "main.cf:2:1: resource vm1: unknown type 'KVMGeust' (did you mean KVMGuest?)",
    ),
    (
        "group g ( )\nKVMGuest vm1 (\n GuestName = vm1\n DelayAfterGuestOnlin = 5 )\n",
        "main.cf:4:2: KVMGuest vm1: unknown attribute 'DelayAfterGuestOnlin'"
        " (did you mean DelayAfterGuestOnline?)",
    ),
    (
        "group g ( )\nKVMGuest vm1 ( GuestName = vm1\n  DelayAfterGuestOnline = soon )\n",
        "main.cf:3:3: KVMGuest vm1: DelayAfterGuestOnline must be an integer, not 'soon'",
    ),
    (
        "group g ( )\nKVMGuest vm1 ( GuestName = vm1\n  ResyncVMCfg = 2 )\n",
        "main.cf:3:3: KVMGuest vm1: ResyncVMCfg is a boolean: 0 or 1, not '2'",
    ),
    (
        "group g ( )\nKVMGuest vm1 ( GuestName = vm1\n  DROpts = { Foo = 1 } )\n",
        "main.cf:3:3: KVMGuest vm1: DROpts has no key 'Foo'",
    ),
    (
        "group g ( )\nKVMGuest vm1 ( GuestName = vm1\n  SyncDir = { a, b } )\n",
        "main.cf:3:3: KVMGuest vm1: SyncDir takes a single value, not a list",
    ),
    (
        "group g ( )\nKVMGuest vm1 ( DelayAfterGuestOnline = 5 )\n",
        "main.cf:2:1: KVMGuest vm1: GuestName is required",
    ),
    ('include "missing.cf"\ngroup g ( )\n', "main.cf:1:9: cannot read missing.cf"),
    ("KVMGuest vm1 ( GuestName = vm1 )\n", "main.cf:1:1: resource vm1 is not inside a group"),
    (
        "group g ( )\nKVMGuest vm1 ( GuestName = vm1 )\nKVMGuest vm1 ( GuestName = x )\n",
        "main.cf:3:1: resource vm1 is defined twice",
    ),
    (
        "group g ( )\nKVMGuest vm1 ( GuestName = vm1\n GuestName = vm2 )\n",
        "main.cf:3:2: GuestName is set twice in KVMGuest vm1",
    ),
    (
        "group g ( )\nKVMGuest vm1 ( GuestName = vm1 )\nvm1 requires vm9\n",
        "main.cf:3:1: requires: no resource named 'vm9'",
    ),
    (
        "group g ( )\nKVMGuest a ( GuestName = a )\nKVMGuest b ( GuestName = b )\n"
        "a requires b\nb requires a\n",
        "requires: dependency cycle a -> b -> a",
    ),
    (
        "system s1 ( )\ngroup g ( SystemList = { s1 = 0, s2 = 1 } )\n",
        "main.cf:2:11: group g: SystemList names 's2', which is not a system",
    ),
    (
        "system s1 ( )\ngroup g ( SystemList = { s1 = 0 } )\nKVMGuest v ( GuestName = v\n"
        "  SyncDir@s3 = x )\n",
        "main.cf:4:3: KVMGuest v: SyncDir@s3: no system named 's3'",
    ),
    (
        "group g ( )\nKVMGuest v ( GuestName = v\n  MonitorInterval@x = 5 )\n",
        "MonitorInterval is static and cannot be local",
    ),
    (
        'group g ( )\nKVMGuest v ( GuestName = v\n  RHEVMInfo = { Enabled = 1, URL = "http://m/api",'
        " User = u, Password = p, Cluster = c } )\n",
        "RHEVMInfo.URL must be https://",
    ),
    ("group g ( ManageFaults = SOME )\n", "ManageFaults is ALL or NONE"),
    (
        "group g ( )\nKVMGuest v ( GuestName = v\n  CEInfo = { Enabled = yes } )\n",
        "CEInfo.Enabled must be 0 or 1",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_invalid_cases_name_the_problem_and_where(tmp_path: Path, text: str, expected: str) -> None:
    found = errors(tmp_path, text)
    assert any(expected in e for e in found), found


def test_types_cf_defines_other_types(tmp_path: Path) -> None:
    text = 'include "types.cf"\ngroup g ( )\nMount m1 ( MountPoint = "/x" )\n'
    assert errors(tmp_path, text, types="type Mount ( str MountPoint )\n") == []
    assert (
        "unknown attribute 'Bogus'"
        in errors(
            tmp_path, text.replace("MountPoint", "Bogus"), types="type Mount ( str MountPoint )\n"
        )[0]
    )


def strip_positions(cfg: Config) -> Config:
    cfg.path = "-"
    return cfg


def test_round_trip(tmp_path: Path) -> None:
    cfg, diags = load(write(tmp_path, GOOD))
    assert diags == []
    text = format_config(cfg)
    again, diags2, _ = parse_text(text, "printed.cf")
    assert diags2 == []
    assert strip_positions(again) == strip_positions(cfg)
    assert format_config(again) == text


# --- hypothesis --------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z][A-Za-z0-9_\-]{0,8}", fullmatch=True).filter(
    lambda s: (
        s
        not in {
            "include",
            "cluster",
            "system",
            "group",
            "type",
            "requires",
            "static",
            "temp",
            "str",
            "int",
            "boolean",
            "keylist",
        }
    )
)
scalars = st.text(
    # Control characters and line separators are refused in values (test_config_inputs).
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\u2028\u2029"),
    max_size=12,
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(names, scalars, min_size=1, max_size=4),
)


@st.composite
def configs(draw: st.DrawFn) -> Config:
    cfg = Config(path="-")
    for g in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
        cfg.groups[g] = Block("group", g, attrs=draw(st.dictionaries(names, values, max_size=3)))
        for r in draw(st.lists(names, max_size=3, unique=True)):
            if r in cfg.resources:
                continue
            block = Block(draw(names), r, group=g)
            block.attrs = draw(st.dictionaries(names, values, max_size=4))
            local = draw(
                st.dictionaries(
                    names, st.dictionaries(names, values, min_size=1, max_size=2), max_size=2
                )
            )
            block.local = local
            cfg.resources[r] = block
    res = list(cfg.resources)
    if len(res) >= 2:
        cfg.links = sorted({Link(res[0], res[1])}, key=lambda lk: (lk.parent, lk.child))
    return cfg


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(configs())
def test_round_trip_property(cfg: Config) -> None:
    text = format_config(cfg)
    again, diags, _ = parse_text(text, "-")
    assert diags == [], text
    assert again == cfg


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_never_raises(text: str) -> None:
    cfg, diags, _ = parse_text(text, "fuzz.cf")
    if not diags:
        validate(cfg)


FRAGMENTS = [
    "group",
    "g",
    "(",
    ")",
    "{",
    "}",
    "=",
    ",",
    "@",
    "KVMGuest",
    "vm",
    "requires",
    '"x"',
    "GuestName",
    "type",
    "static",
    "int",
    "[",
    "]",
    "1",
    "\n",
    "include",
]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30))
def test_fuzz_token_soup_never_raises(parts: list[str]) -> None:
    cfg, diags, _ = parse_text(" ".join(parts), "fuzz.cf")
    if not diags:
        for d in validate(cfg):
            assert d.pos.line >= 0
