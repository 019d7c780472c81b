"""What `validate` refuses because it would fail or misbehave at run time: each case with
its position, and the same values accepted by the framework when `validate` accepts them.

One test per case of the configuration-truth issue (ranges, redefined types, two resources
on one guest, requires problems, bad values, an undeclared system)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kvmguest.agents.loader import Loaded, validate
from kvmguest.framework.policy import ResourcePolicy
from kvmguest.model.config import errors_of
from kvmguest.model.parser import load
from kvmguest.model.ranges import FRAMEWORK

HEAD = """\
system n1 ( )
system n2 ( )
group g ( SystemList = { n1 = 0, n2 = 1 } )
"""


def check(tmp_path: Path, text: str) -> list[str]:
    """Every error of ``text`` as ``main.cf:L:C: message``."""
    path = tmp_path / "main.cf"
    path.write_text(text)
    cfg, diags = load(path)
    diags = diags or validate(cfg)
    return [f"{d.pos.file.rsplit('/', 1)[-1]}:{d.pos.line}:{d.pos.col}: {d.message}"
            for d in errors_of(diags)]  # fmt: skip


def one(tmp_path: Path, text: str) -> str:
    found = check(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


# -- the framework's ranges ---------------------------------------------------------------


def test_monitor_interval_zero_is_refused_at_its_position(tmp_path: Path) -> None:
    msg = one(tmp_path, HEAD + "KVMGuest r ( GuestName = a\n  MonitorInterval = 0 )\n")
    assert msg == "main.cf:5:3: KVMGuest r: MonitorInterval must be at least 1, not 0"


def test_negative_tolerance_limit_is_refused(tmp_path: Path) -> None:
    msg = one(tmp_path, HEAD + "KVMGuest r ( GuestName = a ToleranceLimit = -1 )\n")
    assert msg.startswith("main.cf:4:28: ") and "ToleranceLimit must be at least 0" in msg


@pytest.mark.parametrize("name", sorted(FRAMEWORK))
def test_every_framework_static_below_its_range_is_refused(tmp_path: Path, name: str) -> None:
    low = FRAMEWORK[name].low - 1
    msg = one(tmp_path, HEAD + f"KVMGuest r ( GuestName = a {name} = {low} )\n")
    assert msg.startswith("main.cf:4:") and f"{name} must be" in msg


def test_num_threads_above_its_range_is_refused(tmp_path: Path) -> None:
    assert "NumThreads must be from 1 to 30, not 31" in one(
        tmp_path, HEAD + "KVMGuest r ( GuestName = a NumThreads = 31 )\n"
    )


def test_imf_mode_out_of_range_is_refused(tmp_path: Path) -> None:
    assert "IMF.Mode must be from 0 to 3, not 7" in one(
        tmp_path, HEAD + "KVMGuest r ( GuestName = a IMF = { Mode = 7 } )\n"
    )


def test_static_out_of_range_in_a_types_file_is_refused_at_the_type(tmp_path: Path) -> None:
    text = "type KVMGuest (\n    static int MonitorTimeout = 0\n)\n" + HEAD
    text += "KVMGuest r ( GuestName = a )\n"
    assert one(tmp_path, text) == (
        "main.cf:2:16: type KVMGuest: MonitorTimeout must be at least 1, not 0"
    )


def test_negative_delay_local_value_is_refused(tmp_path: Path) -> None:
    msg = one(tmp_path, HEAD + "KVMGuest r ( GuestName = a DelayAfterGuestOnline@n2 = -5 )\n")
    assert "DelayAfterGuestOnline must be at least 0, not -5" in msg


def test_group_manage_faults_word_is_refused(tmp_path: Path) -> None:
    text = "group g ( ManageFaults = SOME )\nKVMGuest r ( GuestName = a )\n"
    assert one(tmp_path, text) == "main.cf:1:11: group g: ManageFaults is ALL or NONE, not 'SOME'"


def test_values_validate_accepts_are_accepted_by_the_framework(tmp_path: Path) -> None:
    """The daemon builds its policy from the resolved statics: at the lowest value validate
    accepts for every bounded static, it must not refuse."""
    settings = " ".join(f"{n} = {r.low}" for n, r in sorted(FRAMEWORK.items()))
    path = tmp_path / "main.cf"
    path.write_text(HEAD + f"KVMGuest r ( GuestName = a {settings} )\n")
    loaded = Loaded.from_file(str(path))
    policy = ResourcePolicy.from_attrs(loaded.statics("r"))
    assert policy.monitor_interval == 1 and policy.tolerance_limit == 0


# -- redefined types ----------------------------------------------------------------------


def test_redefined_int_default_that_is_not_an_integer_is_refused(tmp_path: Path) -> None:
    text = "type KVMGuest (\n    int DelayAfterGuestOnline = x\n)\n" + HEAD
    text += "KVMGuest r ( GuestName = a )\n"
    msg = one(tmp_path, text)
    assert msg.startswith("main.cf:2:33: type KVMGuest: default: ")
    assert "DelayAfterGuestOnline must be an integer" in msg


def test_association_redefined_as_scalar_names_both_definitions(tmp_path: Path) -> None:
    text = "type KVMGuest (\n    str RHEVMInfo = x\n)\n" + HEAD + "KVMGuest r ( GuestName = a )\n"
    msg = one(tmp_path, text)
    assert msg.startswith("main.cf:2:9: type KVMGuest: 'str RHEVMInfo' redefines")
    assert "'str RHEVMInfo{}' of the built-in type KVMGuest" in msg


def test_framework_static_redefined_with_another_type_is_refused(tmp_path: Path) -> None:
    text = "type KVMGuest (\n    static str MonitorInterval = often\n)\n" + HEAD
    text += "KVMGuest r ( GuestName = a )\n"
    msg = one(tmp_path, text)
    assert "'static str MonitorInterval' redefines 'static int MonitorInterval'" in msg
    assert "of the agent framework" in msg


def test_static_redefined_as_non_static_is_refused(tmp_path: Path) -> None:
    text = "type KVMGuest (\n    int MonitorInterval = 30\n)\n" + HEAD
    text += "KVMGuest r ( GuestName = a )\n"
    assert "redefines 'static int MonitorInterval'" in one(tmp_path, text)


def test_compatible_redefinition_overrides_defaults_and_adds(tmp_path: Path) -> None:
    """A VCS types.cf for KVMGuest: new defaults, a new attribute, an association written
    with fewer keys (the agent still gets the built-in keys)."""
    text = (
        "type KVMGuest (\n    static int MonitorInterval = 30\n    int DelayAfterGuestOnline = 7\n"
        "    str Owner = ops\n    str RHEVMInfo{} = { Enabled = 0 }\n)\n"
        + HEAD + "KVMGuest r ( GuestName = a )\n"
    )  # fmt: skip
    assert check(tmp_path, text) == []
    loaded = Loaded.from_file(str(tmp_path / "main.cf"))
    values = loaded.resource_values("r", "n1")
    assert values["MonitorInterval"] == 30 and values["DelayAfterGuestOnline"] == 7
    assert values["Owner"] == "ops"
    assert isinstance(values["RHEVMInfo"], dict) and values["RHEVMInfo"]["URL"] == "NONE"


def test_a_type_defined_twice_is_refused(tmp_path: Path) -> None:
    text = "type Mount ( str MountPoint )\ntype Mount ( str BlockDevice )\n" + HEAD
    text += "KVMGuest r ( GuestName = a )\n"
    assert (
        one(tmp_path, text)
        == "main.cf:2:6: type Mount is defined twice (first at "
        + str(tmp_path / "main.cf")
        + ":1:6)"
    )


# -- two resources, one guest -------------------------------------------------------------


def test_two_resources_on_one_guest_are_refused(tmp_path: Path) -> None:
    text = HEAD + "KVMGuest r1 ( GuestName = web )\ngroup h ( SystemList = { n2 = 0 } )\n"
    text += "KVMGuest r2 ( GuestName = web )\n"
    msg = one(tmp_path, text)
    assert msg.startswith("main.cf:6:1: KVMGuest r2: manages guest 'web' on system n2")
    assert "as KVMGuest r1" in msg


def test_the_same_guest_name_on_disjoint_systems_is_accepted(tmp_path: Path) -> None:
    text = "system n1 ( )\nsystem n2 ( )\ngroup g ( SystemList = { n1 = 0 } )\n"
    text += "KVMGuest r1 ( GuestName = web )\ngroup h ( SystemList = { n2 = 0 } )\n"
    text += "KVMGuest r2 ( GuestName = web )\n"
    assert check(tmp_path, text) == []


def test_a_local_guest_name_that_clashes_is_refused(tmp_path: Path) -> None:
    text = HEAD + "KVMGuest r1 ( GuestName = web )\ngroup h ( SystemList = { n1 = 0, n2 = 1 } )\n"
    text += "KVMGuest r2 ( GuestName = db GuestName@n2 = web )\n"
    assert "manages guest 'web' on system n2" in one(tmp_path, text)


def _rhev(url: str, name: str, ciphertext: str) -> str:
    return (
        f'KVMGuest {name} ( GuestName = vm1 RHEVMInfo = {{ Enabled = 1, URL = "{url}", '
        f'User = "admin@internal", Password = "{ciphertext}", Cluster = Default }} )\n'
    )


@pytest.fixture
def ciphertext(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from kvmguest.secrets import encrypt

    monkeypatch.setenv("KVMGUEST_KEY_FILE", str(tmp_path / "secret.key"))
    return encrypt("s3cret")


def test_two_resources_on_one_rhev_vm_are_refused(tmp_path: Path, ciphertext: str) -> None:
    text = HEAD + _rhev("https://rhvm.example.com/ovirt-engine/api", "r1", ciphertext)
    text += "group h ( SystemList = { n1 = 0 } )\n"
    text += _rhev("https://RHVM.example.com:443/ovirt-engine/api/", "r2", ciphertext)
    msg = one(tmp_path, text)
    assert "manages VM 'vm1' of RHV-M rhvm.example.com:443/ovirt-engine/api" in msg


def test_one_vm_name_on_two_rhev_engines_is_accepted(tmp_path: Path, ciphertext: str) -> None:
    text = HEAD + _rhev("https://east.example.com/ovirt-engine/api", "r1", ciphertext)
    text += "group h ( SystemList = { n1 = 0 } )\n"
    text += _rhev("https://west.example.com/ovirt-engine/api", "r2", ciphertext)
    assert check(tmp_path, text) == []


# -- requires -----------------------------------------------------------------------------


def test_requires_group_with_undefined_keywords_is_refused(tmp_path: Path) -> None:
    text = HEAD + "KVMGuest r ( GuestName = a )\nrequires group h online sideways firm\n"
    text += "group h ( SystemList = { n1 = 0 } )\nKVMGuest s ( GuestName = b )\n"
    msg = one(tmp_path, text)
    assert msg.startswith("main.cf:5:1: requires group h online sideways firm: not a VCS")


@pytest.mark.parametrize(
    "words", ["online local soft", "online local hard", "online global firm", "offline remote"]
)
def test_requires_group_forms_vcs_defines_are_accepted(tmp_path: Path, words: str) -> None:
    text = HEAD + f"KVMGuest r ( GuestName = a )\nrequires group h {words}\n"
    text += "group h ( SystemList = { n1 = 0 } )\nKVMGuest s ( GuestName = b )\n"
    assert check(tmp_path, text) == []


def test_a_group_that_requires_itself_is_refused(tmp_path: Path) -> None:
    text = HEAD + "KVMGuest r ( GuestName = a )\nrequires group g online local firm\n"
    assert one(tmp_path, text) == "main.cf:5:1: group g cannot require itself"


def test_a_group_dependency_cycle_is_refused(tmp_path: Path) -> None:
    text = ""
    for i, nxt in ((0, 1), (1, 2), (2, 0)):
        text += f"group g{i} ( SystemList = {{ n1 = 0 }} )\nKVMGuest r{i} ( GuestName = v{i} )\n"
        text += f"requires group g{nxt} online local firm\n"
    assert "requires group: dependency cycle g0 -> g1 -> g2 -> g0" in one(tmp_path, text)


def test_a_resource_dependency_cycle_is_refused(tmp_path: Path) -> None:
    text = HEAD + "".join(f"KVMGuest r{i} ( GuestName = v{i} )\n" for i in range(3))
    text += "r0 requires r1\nr1 requires r2\nr2 requires r0\n"
    assert one(tmp_path, text) == "main.cf:7:1: requires: dependency cycle r0 -> r1 -> r2 -> r0"


def _chain(n: int, cycle: bool) -> str:
    text = HEAD + "".join(f"KVMGuest r{i} ( GuestName = v{i} )\n" for i in range(n))
    text += "".join(f"r{i} requires r{i + 1}\n" for i in range(n - 1))
    return text + (f"r{n - 1} requires r0\n" if cycle else "")


def test_a_thousand_deep_chain_validates(tmp_path: Path) -> None:
    started = time.monotonic()
    assert check(tmp_path, _chain(1000, cycle=False)) == []
    assert time.monotonic() - started < 120  # a guard against a hang, not a benchmark


def test_a_thousand_long_cycle_is_refused_with_a_short_message(tmp_path: Path) -> None:
    msg = one(tmp_path, _chain(1000, cycle=True))
    assert "dependency cycle r0 -> r1" in msg and "more)" in msg and len(msg) < 300


def test_a_thousand_deep_group_chain_validates(tmp_path: Path) -> None:
    text = ""
    for i in range(1000):
        text += f"group g{i} ( SystemList = {{ n1 = 0 }} )\nKVMGuest r{i} ( GuestName = v{i} )\n"
        if i < 999:
            text += f"requires group g{i + 1} online local firm\n"
    assert check(tmp_path, text) == []


# -- bad values ---------------------------------------------------------------------------


def test_malformed_rhevm_url_is_refused(tmp_path: Path, ciphertext: str) -> None:
    msg = one(tmp_path, HEAD + _rhev("https://[::1", "r", ciphertext))
    assert msg.startswith("main.cf:4:")
    assert "RHEVMInfo.URL 'https://[::1' is not a well-formed" in msg


def test_http_rhevm_url_stays_refused(tmp_path: Path, ciphertext: str) -> None:
    assert "must be https://" in one(tmp_path, HEAD + _rhev("http://rhvm/api", "r", ciphertext))


def test_cleartext_rhevm_password_is_refused_without_quoting_it(tmp_path: Path) -> None:
    msg = one(tmp_path, HEAD + _rhev("https://rhvm.example.com/api", "r", "hunter2secret"))
    assert "RHEVMInfo.Password is not encrypted" in msg and "hunter2secret" not in msg


# -- systems ------------------------------------------------------------------------------


def test_an_undeclared_system_is_an_error_for_the_resolver(tmp_path: Path) -> None:
    path = tmp_path / "main.cf"
    path.write_text(HEAD + "KVMGuest r ( GuestName = a )\n")
    loaded = Loaded.from_file(str(path))
    with pytest.raises(KeyError, match=r"system 'n3' is not declared \(systems: n1, n2\)"):
        loaded.resource_values("r", "n3")
    assert loaded.resource_values("r", "n2")["GuestName"] == "a"
