"""Secrets in the configuration (RHEVMInfo.Password), encrypted with a per-host key.

The key is a Fernet key (AES-128-CBC + HMAC-SHA256, random IV, authenticated) in a file
that only its owner can read: ``/etc/kvmguest/secret.key`` by default, or the file named
by ``KVMGUEST_KEY_FILE``. ``kvmguest encrypt`` creates it on first use; every node that
may run the resource needs the same file (copy it with its 0600 mode), since main.cf,
and so the ciphertext, is shared.

Messages never quote a plaintext or a ciphertext: they end up in logs and terminals.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

DEFAULT_KEY_PATH = "/etc/kvmguest/secret.key"
KEY_FILE_ENV = "KVMGUEST_KEY_FILE"
_MAX_KEY_FILE = 4096  # a key file is 45 bytes; anything large is not one


class SecretError(Exception):
    """A secret cannot be encrypted or decrypted; the message is one operator line."""


def resolve_key_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, else ``$KVMGUEST_KEY_FILE``, else ``/etc/kvmguest/secret.key``."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get(KEY_FILE_ENV) or DEFAULT_KEY_PATH)


def load_key(path: str | os.PathLike[str] | None = None) -> bytes:
    """The key in the key file; :class:`SecretError` if it is missing, exposed or bad."""
    p = resolve_key_path(path)
    try:
        # O_NONBLOCK: a FIFO named as the key file must fail at once (fstat below).
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SecretError(
            f"key file {p} does not exist: encrypt the password on this host "
            "(kvmguest encrypt) or copy the key file from the host that did"
        ) from None
    except OSError as e:
        raise SecretError(f"cannot read key file {p}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretError(f"key file {p} is not a regular file")
        if st.st_mode & 0o077:
            raise SecretError(
                f"key file {p} is accessible to other users (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); it must be 0600"
            )
        data = os.read(fd, _MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    key = data.strip()
    try:
        Fernet(key)
    except (ValueError, TypeError):
        raise SecretError(f"key file {p} does not hold a valid kvmguest key") from None
    return key


def _publish(p: Path, key: bytes) -> bool:
    """Write a new key file holding ``key``; False if one already exists.

    The key is written and synced in a private temporary file (mkstemp: O_EXCL, 0600),
    then hard-linked to its name: a reader sees no file or a whole one, and a link never
    replaces an existing key (which would orphan every secret encrypted with it).
    """
    fd, tmp = tempfile.mkstemp(prefix=".kvmguest-key.", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, p)
        except FileExistsError:
            return False
        except OSError:
            # A file system without hard links: exclusive creation is still atomic as to
            # who wins; only the winner writes.
            try:
                out = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                return False
            with os.fdopen(out, "wb") as f:
                f.write(key + b"\n")
                f.flush()
                os.fsync(f.fileno())
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # the new name survives a crash
    finally:
        os.close(dir_fd)
    return True


def load_or_create_key(path: str | os.PathLike[str] | None = None) -> bytes:
    """The key in the key file, created (0600, atomically) if there is none yet."""
    p = resolve_key_path(path)
    if p.exists():
        return load_key(p)
    try:
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _publish(p, Fernet.generate_key())
    except OSError as e:
        raise SecretError(f"cannot create key file {p}: {e.strerror}") from None
    # Whether this call or a concurrent one created it, everybody uses what is there.
    return load_key(p)


# A Fernet token: version byte 0x80, 8-byte timestamp, 16-byte IV, AES blocks, 32-byte HMAC.
_FERNET_VERSION = 0x80
_FERNET_OVERHEAD = 1 + 8 + 16 + 32


def looks_encrypted(value: str) -> bool:
    """Whether ``value`` has the shape of our ciphertext (not whether our key opens it):
    what ``validate`` needs to tell a password pasted in clear from an encrypted one."""
    import base64
    import binascii

    text = value.strip()
    if not text or len(text) > 64 * 1024 or not text.isascii():
        return False
    try:
        raw = base64.urlsafe_b64decode(text.encode("ascii"))
    except (binascii.Error, ValueError):
        return False
    body = len(raw) - _FERNET_OVERHEAD
    return raw[0] == _FERNET_VERSION and body >= 16 and body % 16 == 0


def encrypt(plaintext: str, key_path: str | os.PathLike[str] | None = None) -> str:
    """The ciphertext of ``plaintext`` (printable ASCII), creating the key if needed."""
    key = load_or_create_key(key_path)
    return Fernet(key).encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(ciphertext: str, key_path: str | os.PathLike[str] | None = None) -> str:
    """The plaintext of ``ciphertext``; never creates a key (a new one could not help)."""
    key = load_key(key_path)
    where = resolve_key_path(key_path)
    try:
        token = ciphertext.strip().encode("ascii")
        return Fernet(key).decrypt(token).decode("utf-8")
    except (InvalidToken, UnicodeError):
        raise SecretError(
            f"the encrypted value does not match the key in {where}: it was encrypted "
            "with another key (another host?) or is damaged; encrypt it again"
        ) from None
