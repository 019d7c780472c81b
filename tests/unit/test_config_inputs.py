"""Bad input never crashes kvmguest or slips through (issue #10): files that are not
regular files, huge files and tokens, bytes that are not UTF-8, control characters,
integers Python would read but an operator never meant, a configuration directory, and
caches planted where others can write.

Each case is its own test. A read that would hang (a FIFO) runs in a thread with a
deadline, so a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kvmguest.agents.kvmguest import ocf_actions
from kvmguest.agents.kvmguest.ocf_params import Meta, OcfEnv
from kvmguest.agents.loader import validate
from kvmguest.agents.ocf_interface import Ocf, OcfError, read_environ
from kvmguest.model import config_cache
from kvmguest.model.config import Block, Config, Diagnostic
from kvmguest.model.excerpt import excerpt
from kvmguest.model.files import MAX_CONFIG_BYTES, UnreadableFile, read_config_file
from kvmguest.model.integers import parse_int
from kvmguest.model.parser import load, parse_text
from kvmguest.model.types import _cache_file, parse_types
from kvmguest.secrets import SecretError, load_key

T = TypeVar("T")
PROMPTLY = 10.0  # seconds: a refused file is refused at once; a hang takes forever
RESOURCE = "group g ( )\nKVMGuest vm1 ( GuestName = vm1\n  {attr} )\n"


def promptly(call: Callable[[], T]) -> T:
    """``call()``'s result or exception, in a thread that must end within PROMPTLY."""
    out: list[T] = []
    raised: list[BaseException] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as e:  # handed to the test below
            raised.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(PROMPTLY)
    assert not worker.is_alive(), "it hangs"
    if raised:
        raise raised[0]
    return out[0]


def load_promptly(path: Path) -> list[str]:
    """``load(path)``'s diagnostics as ``file:line:col: message`` (tmp dir removed)."""
    diags: list[Diagnostic] = promptly(lambda: load(path)[1])
    return [str(d).replace(f"{path.parent}/", "") for d in diags]


def include(tmp_path: Path, target: str) -> Path:
    main = tmp_path / "main.cf"
    main.write_text(f'group g ( )\ninclude "{target}"\n')
    return main


def problems(tmp_path: Path, text: str) -> list[str]:
    main = tmp_path / "main.cf"
    main.write_text(text)
    cfg, diags = load(main)
    diags = diags or validate(cfg)
    return [str(d).replace(f"{tmp_path}/", "") for d in diags]


def run_cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / ".cache")}
    return subprocess.run(
        [sys.executable, "-m", "kvmguest", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env,
    )  # fmt: skip


# --- files that are not regular files, or too large ------------------------------------


def test_include_of_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.cf")
    assert load_promptly(include(tmp_path, "pipe.cf")) == [
        "main.cf:2:9: cannot read pipe.cf: a FIFO, not a regular file"
    ]


def test_include_of_dev_zero_is_refused(tmp_path: Path) -> None:
    assert load_promptly(include(tmp_path, "/dev/zero")) == [
        "main.cf:2:9: cannot read /dev/zero: a character device, not a regular file"
    ]


def test_include_of_dev_urandom_is_refused(tmp_path: Path) -> None:
    assert load_promptly(include(tmp_path, "/dev/urandom")) == [
        "main.cf:2:9: cannot read /dev/urandom: a character device, not a regular file"
    ]


def test_include_of_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    assert load_promptly(include(tmp_path, "conf.d")) == [
        "main.cf:2:9: cannot read conf.d: a directory, not a regular file"
    ]


def test_include_of_a_17_mib_file_is_refused(tmp_path: Path) -> None:
    with open(tmp_path / "big.cf", "wb") as f:
        f.truncate(17 * 1024 * 1024)  # sparse: the size alone must refuse it
    assert load_promptly(include(tmp_path, "big.cf")) == [
        "main.cf:2:9: cannot read big.cf: larger than 16 MiB"
    ]


def test_a_file_of_exactly_the_cap_is_read(tmp_path: Path) -> None:
    path = tmp_path / "cap.cf"
    path.write_bytes(b" " * MAX_CONFIG_BYTES)
    assert len(read_config_file(path)) == MAX_CONFIG_BYTES


def test_include_through_a_symlink_to_a_regular_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "real-types.cf").write_text("type Mount ( str MountPoint )\n")
    (tmp_path / "types.cf").symlink_to(tmp_path / "real-types.cf")
    main = include(tmp_path, "types.cf")
    assert load_promptly(main) == []
    assert "Mount" in load(main)[0].types


def test_main_cf_as_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "main.cf")
    assert load_promptly(tmp_path / "main.cf") == [
        "main.cf:1:1: cannot read main.cf: a FIFO, not a regular file"
    ]


def test_validate_cli_refuses_a_fifo_with_exit_1(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.cf")
    include(tmp_path, "pipe.cf")
    proc = run_cli("validate", "-c", "main.cf", cwd=tmp_path)
    assert proc.returncode == 1
    assert "main.cf:2:9: cannot read pipe.cf: a FIFO, not a regular file" in proc.stderr


def test_a_key_file_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "secret.key", 0o600)
    with pytest.raises(SecretError, match="not a regular file"):
        promptly(lambda: load_key(tmp_path / "secret.key"))


def test_the_ocf_config_parameter_as_a_fifo_is_err_args_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "main.cf")
    # A directory names its main.cf; the FIFO there is refused without waiting for a writer.
    env = OcfEnv(params={"config": str(tmp_path), "resource": "vm"}, meta=Meta(),
                 instance="res1")  # fmt: skip
    with pytest.raises(OcfError) as fifo:
        promptly(lambda: ocf_actions.build_config(env, {}))
    assert fifo.value.code is Ocf.ERR_ARGS and "a FIFO, not a regular file" in str(fifo.value)


def test_guest_config_file_as_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "vm1.xml")
    with pytest.raises(UnreadableFile, match="a FIFO, not a regular file"):
        promptly(lambda: read_config_file(tmp_path / "vm1.xml"))


# --- bytes and characters ---------------------------------------------------------------


def test_non_utf8_bytes_are_a_positioned_error(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_bytes(b"group g (\n    Ok = \xe9t\xe9 )\n")
    assert load_promptly(tmp_path / "main.cf") == [
        "main.cf:2:10: cannot read main.cf: not UTF-8 text (byte 0xe9)"
    ]


def test_non_utf8_bytes_in_an_include_are_placed_in_that_file(tmp_path: Path) -> None:
    (tmp_path / "types.cf").write_bytes(b"// ok\n\xff\n")
    assert load_promptly(include(tmp_path, "types.cf")) == [
        "types.cf:2:1: cannot read types.cf: not UTF-8 text (byte 0xff)"
    ]


def test_nul_in_a_string_value_is_refused(tmp_path: Path) -> None:
    text = RESOURCE.format(attr='GuestConfigFilePath = "/etc/a\x00b.xml"')
    assert problems(tmp_path, text) == [
        "main.cf:3:32: control character '\\x00' is not allowed in a configuration file"
    ]


def test_nul_anywhere_in_the_file_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, "group g ( )\n// a comment \x00\n") == [
        "main.cf:2:14: control character '\\x00' is not allowed in a configuration file"
    ]


def test_an_escape_sequence_in_a_bare_value_is_refused(tmp_path: Path) -> None:
    text = RESOURCE.format(attr="GuestConfigFilePath = /etc/\x1b[2Jvm1.xml")
    assert problems(tmp_path, text) == [
        "main.cf:3:30: control character '\\x1b' is not allowed in a configuration file"
    ]


def test_a_tab_in_a_quoted_value_is_refused(tmp_path: Path) -> None:
    text = RESOURCE.format(attr='GuestConfigFilePath = "/etc/vm1\t.xml"')
    assert problems(tmp_path, text) == [
        "main.cf:3:34: a quoted value may not hold control character '\\t'"
    ]


def test_a_quoted_value_across_lines_hints_at_a_missing_quote(tmp_path: Path) -> None:
    text = 'group g ( )\nKVMGuest vm1 ( GuestName = "vm1\n  Other = "x" )\n'
    assert problems(tmp_path, text)[0] == (
        "main.cf:2:32: a quoted value may not hold control character '\\n' "
        "(a missing closing quote?)"
    )


def test_a_100_kb_token_is_quoted_shortly_in_a_syntax_error() -> None:
    _, diags, _ = parse_text(f"group g ( )\nKVMGuest vm1 {'A' * 100_000}\n", "main.cf")
    assert len(diags) == 1
    message = str(diags[0])
    assert message.startswith("main.cf:2:")
    assert len(message) < 300 and message.isprintable(), message
    assert "AAAA...'" in message


def test_a_100_kb_token_with_a_terminal_escape_is_refused_shortly() -> None:
    token = "A" * 50_000 + "\x1b]0;owned\x07" + "B" * 50_000
    _, diags, _ = parse_text(f'group g ( )\n"{token}"\n', "main.cf")
    assert [str(d) for d in diags] == [
        "main.cf:2:50002: control character '\\x1b' is not allowed in a configuration file"
    ]


def test_excerpt_is_short_and_printable() -> None:
    assert excerpt("vm1") == "'vm1'"
    assert excerpt("a\x00b\x1b") == "'a\\x00b\\x1b'"
    long = excerpt("\x07" * 10_000)
    assert long.isprintable() and long.endswith("...'") and len(long) < 200


# --- integers ---------------------------------------------------------------------------


def test_non_ascii_digits_are_not_an_integer(tmp_path: Path) -> None:
    text = RESOURCE.format(attr="MonitorInterval = ١٢")
    assert problems(tmp_path, text) == [
        "main.cf:3:3: KVMGuest vm1: MonitorInterval must be an integer written with the "
        "digits 0-9 (and a leading '-'), not '١٢'"
    ]


def test_non_ascii_digits_in_a_declared_int_default_are_refused(tmp_path: Path) -> None:
    (tmp_path / "types.cf").write_text('type Foo ( int Level = "١٢" )\n')
    assert problems(tmp_path, 'include "types.cf"\ngroup g ( )\nFoo f1 ( )\n') == [
        "types.cf:1:24: type Foo: default: Level must be an integer written with the digits "
        "0-9 (and a leading '-'), not '١٢'"
    ]


def test_underscores_in_an_integer_are_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, RESOURCE.format(attr='MonitorInterval = "1_000"'))
    assert found == [
        "main.cf:3:3: KVMGuest vm1: MonitorInterval must be an integer written with the "
        "digits 0-9 (and a leading '-'), not '1_000'"
    ]


def test_a_blank_around_an_integer_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, RESOURCE.format(attr='MonitorInterval = " 12"'))
    assert len(found) == 1 and found[0].endswith("not ' 12'")


def test_a_huge_integer_is_refused_with_the_range(tmp_path: Path) -> None:
    found = problems(tmp_path, RESOURCE.format(attr="MonitorInterval = 99999999999999999999"))
    assert found == [
        "main.cf:3:3: KVMGuest vm1: MonitorInterval must be an integer from -2147483648 to "
        "2147483647, not '99999999999999999999'"
    ]


def test_parse_int_takes_plain_32_bit_integers_only() -> None:
    assert [parse_int(t) for t in ("0", "-7", "007", "2147483647", "-2147483648")] == [
        0, -7, 7, 2**31 - 1, -(2**31),
    ]  # fmt: skip
    for bad in ("", "-", "+5", "1_000", " 12", "١٢", "²", "2147483648", "1e3"):
        with pytest.raises(ValueError):
            parse_int(bad)


def test_ocf_integers_are_ascii() -> None:
    environ = {"OCF_RESKEY_guest_name": "v", "OCF_RESKEY_CRM_meta_timeout": "\uff12\uff10\uff10"}
    with pytest.raises(OcfError, match="digits 0-9") as e:
        read_environ(environ, OcfEnv, "res1")
    assert e.value.code is Ocf.ERR_ARGS


def test_control_characters_in_values_not_from_a_file_are_refused() -> None:
    cfg = Config()
    cfg.groups["g"] = Block("group", "g")
    cfg.resources["vm1"] = Block("KVMGuest", "vm1", attrs={"GuestName": "vm\x001"}, group="g")
    cfg.resources["vm1"].local["DROpts"] = {"s1": {"Device": "eth\t0"}}
    assert [d.message for d in validate(cfg)][:2] == [
        "KVMGuest 'vm1': GuestName: control character '\\x00' is not allowed in a value",
        "KVMGuest 'vm1': DROpts@s1: control character '\\t' is not allowed in a value",
    ]


def test_the_validate_cli_places_a_bad_integer(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(RESOURCE.format(attr="MonitorInterval = ١٢"))
    proc = run_cli("validate", "main.cf", cwd=tmp_path)
    assert proc.returncode == 1
    assert "main.cf:3:3: KVMGuest vm1: MonitorInterval must be an integer" in proc.stderr


# --- validate DIR -----------------------------------------------------------------------


def test_validate_takes_a_config_directory(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text("group g ( )\n")
    proc = run_cli("--json", "validate", "conf", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    assert data["valid"] is True and data["config"] == "conf/main.cf"


def test_validate_dash_c_takes_a_config_directory(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("group g ( )\n")
    proc = run_cli("validate", "-c", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{tmp_path}/main.cf: valid" in proc.stdout


def test_validate_of_a_directory_without_main_cf_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = run_cli("validate", "empty", cwd=tmp_path)
    assert proc.returncode == 1
    assert "empty/main.cf:1:1: cannot read empty/main.cf: No such file or directory" in (
        proc.stderr
    )


# --- caches are trusted only from a private directory -------------------------------------

POISON_TEXT = "type _Poison ( int Limit = 1 )\n"


def _plant_types(cache: Path) -> Path:
    """A types cache entry for POISON_TEXT that says Limit's default is 666."""
    entry = Path(_cache_file(POISON_TEXT))
    entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    limit = {"name": "Limit", "type": "int", "dimension": "scalar", "default": "666"}
    poisoned = {"_Poison": [{**limit, "static": False, "temp": False, "keys": []}]}
    entry.write_text(json.dumps(poisoned))
    entry.chmod(0o600)
    return entry


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "kvmguest"


def _limit_default() -> object:
    return parse_types(POISON_TEXT, "<test>")["_Poison"].attrs["Limit"].default


def test_types_cache_from_a_private_directory_is_used(cache: Path) -> None:
    # The control: a planted entry in a private directory is what the reader takes, so
    # the tests below that it is ignored elsewhere prove something.
    _plant_types(cache)
    assert _limit_default() == "666"


def test_types_cache_in_a_directory_open_to_all_is_ignored(cache: Path) -> None:
    _plant_types(cache)
    cache.chmod(0o777)
    assert _limit_default() == "1"


def test_types_cache_file_writable_by_others_is_ignored(cache: Path) -> None:
    _plant_types(cache).chmod(0o666)
    assert _limit_default() == "1"


def test_types_cache_file_that_is_a_symlink_is_ignored(cache: Path, tmp_path: Path) -> None:
    entry = _plant_types(cache)
    elsewhere = tmp_path / "elsewhere.json"
    entry.rename(elsewhere)
    entry.symlink_to(elsewhere)
    assert _limit_default() == "1"


def test_types_cache_directory_that_is_a_symlink_is_ignored(cache: Path, tmp_path: Path) -> None:
    _plant_types(cache)
    cache.rename(tmp_path / "other")
    cache.symlink_to(tmp_path / "other")
    assert _limit_default() == "1"


def test_config_cache_in_a_directory_open_to_all_is_ignored(cache: Path, tmp_path: Path) -> None:
    main = tmp_path / "main.cf"
    main.write_text("group g ( )\n")
    stamp = "test"  # any stamp: stored and looked up with the same one
    cfg, _ = load(main)
    config_cache.store(cfg, stamp)
    assert config_cache.lookup(str(main), stamp) is not None  # the control
    cache.chmod(0o777)
    assert config_cache.lookup(str(main), stamp) is None
    cache.chmod(0o700)
    entry = next(p for p in cache.iterdir() if p.name.startswith("config-"))
    entry.chmod(entry.stat().st_mode | stat.S_IWOTH)
    assert config_cache.lookup(str(main), stamp) is None


def test_unreadable_file_is_an_oserror_with_its_reason(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFile) as info:
        read_config_file(tmp_path)
    assert isinstance(info.value, OSError)
    assert info.value.strerror == "a directory, not a regular file"
