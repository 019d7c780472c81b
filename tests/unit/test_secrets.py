"""kvmguest.secrets: the per-host key file and encrypted RHEVMInfo passwords."""

from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmguest import secrets as ks
from kvmguest.secrets import SecretError, decrypt, encrypt, load_key, load_or_create_key

PLAIN = "rhev-Passw0rd!"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_round_trip_creates_a_private_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "etc" / "kvmguest" / "secret.key"
    token = encrypt(PLAIN, key_file)
    assert _mode(key_file) == 0o600
    assert _mode(key_file.parent) == 0o700
    assert PLAIN not in token and token.isascii()
    assert decrypt(token, key_file) == PLAIN
    # The temporary file the key was written through is gone.
    assert [p.name for p in key_file.parent.iterdir()] == ["secret.key"]


def test_the_key_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_key(tmp_path / "k")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "k") == 0o600


def test_each_encryption_differs_but_all_decrypt(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    a, b = encrypt(PLAIN, key_file), encrypt(PLAIN, key_file)
    assert a != b
    assert decrypt(a, key_file) == decrypt(b, key_file) == PLAIN


def test_surrounding_whitespace_is_tolerated(tmp_path: Path) -> None:
    token = encrypt(PLAIN, tmp_path / "k")
    assert decrypt(f"  {token}\n", tmp_path / "k") == PLAIN


def test_an_existing_key_is_never_replaced(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    first = load_or_create_key(key_file)
    token = encrypt(PLAIN, key_file)
    assert load_or_create_key(key_file) == first
    assert decrypt(token, key_file) == PLAIN


def test_concurrent_creators_all_get_the_same_key(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    barrier = threading.Barrier(16)

    def create(_: int) -> bytes:
        barrier.wait(timeout=30)
        return load_or_create_key(key_file)

    with ThreadPoolExecutor(16) as pool:
        keys = set(pool.map(create, range(16)))
    assert keys == {load_key(key_file)}


def test_decrypt_without_a_key_file_fails_clearly_and_creates_nothing(tmp_path: Path) -> None:
    token = encrypt(PLAIN, tmp_path / "a")
    with pytest.raises(SecretError, match="does not exist") as info:
        decrypt(token, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    assert token not in str(info.value)


def test_another_hosts_key_is_refused_without_quoting_anything(tmp_path: Path) -> None:
    token = encrypt(PLAIN, tmp_path / "a")
    load_or_create_key(tmp_path / "b")
    with pytest.raises(SecretError, match="does not match the key") as info:
        decrypt(token, tmp_path / "b")
    message = str(info.value)
    assert token not in message and PLAIN not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("bad", ["", "not-a-token", "gAAAAAB" + "x" * 80, "ünïcode"])
def test_garbage_is_a_secret_error(tmp_path: Path, bad: str) -> None:
    load_or_create_key(tmp_path / "k")
    with pytest.raises(SecretError) as info:
        decrypt(bad, tmp_path / "k")
    assert not bad or bad not in str(info.value)


def test_a_damaged_ciphertext_is_refused(tmp_path: Path) -> None:
    token = encrypt(PLAIN, tmp_path / "k")
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    with pytest.raises(SecretError):
        decrypt(flipped, tmp_path / "k")


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    load_or_create_key(key_file)
    key_file.chmod(0o644)
    with pytest.raises(SecretError, match="0600"):
        load_key(key_file)
    with pytest.raises(SecretError):
        encrypt(PLAIN, key_file)


def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    key_file.write_bytes(b"hello\n")
    key_file.chmod(0o600)
    with pytest.raises(SecretError, match="not hold a valid"):
        load_key(key_file)
    with pytest.raises(SecretError, match="not a regular file"):
        load_key(tmp_path)


def test_the_environment_names_the_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ks.KEY_FILE_ENV, str(tmp_path / "env.key"))
    token = encrypt(PLAIN)
    assert (tmp_path / "env.key").exists()
    assert decrypt(token) == PLAIN
    # An explicit path wins over the environment.
    assert ks.resolve_key_path(tmp_path / "x") == tmp_path / "x"


def test_the_default_key_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ks.KEY_FILE_ENV, raising=False)
    assert ks.resolve_key_path() == Path("/etc/kvmguest/secret.key")


def test_an_uncreatable_key_file_is_a_secret_error(tmp_path: Path) -> None:
    # A regular file where the key's directory should be: even root cannot create it.
    (tmp_path / "etc").write_text("")
    with pytest.raises(SecretError, match="cannot create"):
        load_or_create_key(tmp_path / "etc" / "kvmguest" / "k")


@settings(max_examples=50, deadline=None)
@given(st.text())
def test_any_text_survives_the_round_trip(tmp_path_factory: pytest.TempPathFactory, s: str) -> None:
    key_file = tmp_path_factory.getbasetemp() / "hypothesis.key"
    assert decrypt(encrypt(s, key_file), key_file) == s
