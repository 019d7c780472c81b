"""``kvmguest encrypt``: the ciphertext for RHEVMInfo.Password.

The secret is read from the terminal (asked twice, not echoed) or, when stdin is not a
terminal, from stdin (one line). Never from the command line: argv is visible to every
user of the host (``ps``, /proc/PID/cmdline) and lands in shell histories.
"""

from __future__ import annotations

import getpass
import sys
from typing import Any

import click

from kvmguest.cli.app import cli, emit, fail

EXIT_FAIL = 1
# Far more than any password; a larger stdin is a mistake (a file piped in by accident).
MAX_SECRET_BYTES = 4096


class _NoSecret(Exception):
    """No usable secret was read; the message says why (and never quotes input)."""


def _from_terminal() -> str:
    try:
        first = getpass.getpass("Password: ")
        if not first:
            raise _NoSecret("the password is empty")
        second = getpass.getpass("Password (again): ")
    except (EOFError, KeyboardInterrupt):
        raise _NoSecret("no password was entered") from None
    if first != second:
        raise _NoSecret("the two entries differ; nothing was encrypted")
    return first


def _from_stdin() -> str:
    data = sys.stdin.buffer.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise _NoSecret(f"stdin holds more than {MAX_SECRET_BYTES} bytes: not a password")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _NoSecret("stdin is not UTF-8 text") from None
    # One line: only its line ending is removed; spaces may be part of a password.
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if "\n" in text or "\r" in text:
        raise _NoSecret("stdin must hold the password on a single line")
    if not text:
        raise _NoSecret("the password read from stdin is empty")
    return text


@cli.command("encrypt")
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False),
    help="key to encrypt with (default: $KVMGUEST_KEY_FILE, else /etc/kvmguest/secret.key; "
    "created 0600 on first use). Use the path of the cluster's SecretKeyFile if it sets one.",
)
@click.pass_obj
def encrypt_cmd(obj: dict[str, Any], key_file: str | None) -> None:
    """Encrypt a password for RHEVMInfo.Password and print the ciphertext.

    Reads the password from the terminal (twice, without echo), or from stdin when stdin
    is not a terminal: printf '%s\\n' "$PW" | kvmguest encrypt. Every system that may run
    the resource needs the same key file.
    """
    # Here, not at the top: every one-shot command loads this module; only this one
    # needs cryptography.
    from kvmguest.secrets import SecretError, encrypt, resolve_key_path

    try:
        secret = _from_terminal() if sys.stdin.isatty() else _from_stdin()
    except _NoSecret as e:
        fail(obj, f"encrypt: {e}", code=EXIT_FAIL)
    key_path = resolve_key_path(key_file)
    existed = key_path.exists()
    try:
        ciphertext = encrypt(secret, key_file)
    except SecretError as e:
        fail(obj, f"encrypt: {e}", code=EXIT_FAIL)
    del secret
    created = not existed and key_path.exists()
    if created:
        # Always said, on stderr: a password encrypted with this new key decrypts only
        # where the same key file is (docs/rhevm.md, "Distributing the key").
        click.echo(
            f"kvmguest encrypt: created a new host key {key_path} (mode 0600): copy it to "
            "every system that may run the resource, or they cannot decrypt this password",
            err=True,
        )
    elif sys.stderr.isatty() and not obj["json"]:
        click.echo(
            f'Set RHEVMInfo Password = "{ciphertext}"; every system that may run the '
            f"resource needs the same {key_path} (mode 0600).",
            err=True,
        )
    emit(obj, {"ciphertext": ciphertext, "key_file": str(key_path), "key_created": created},
         ciphertext)  # fmt: skip
