"""The per-user cache of derived data (parser tables, built-in types, validated
configurations): ``$XDG_CACHE_HOME/kvmguest`` (else ``~/.cache/kvmguest``).

A cache file is read only when its directory and the file itself are owned by us, closed
to writes by others and not symbolic links (a cache planted elsewhere, a types cache that
redefines the built-in types, is never trusted), and written atomically; any failure just
means it is rebuilt. Every entry is keyed by the content it comes from, so a stale one is
never used.
"""

from __future__ import annotations

import os
import stat


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data``, hex: CPython's own implementation when it has one (hashlib loads
    OpenSSL first, ~2 ms of a one-shot monitor), else hashlib's."""
    try:
        digest = __import__("_sha256").sha256
    except ImportError:
        import hashlib

        digest = hashlib.sha256
    return str(digest(data).hexdigest())


def cache_dir() -> str:
    # Strings, not pathlib: the one-shot monitor's lean path reads its cache through here.
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kvmguest")


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def private(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def read_cache(path: str) -> bytes | None:
    """The cache file's bytes, or None when absent or not trusted."""
    # The directory is opened once and both checks go through descriptors: a directory or
    # file swapped between a check and the read is never the one read. No symbolic link is
    # followed, for either; a cache kept behind one is just rebuilt.
    try:
        dir_fd = os.open(os.path.dirname(path), _DIR_FLAGS)
    except OSError:
        return None
    try:
        if not private(os.fstat(dir_fd)):
            return None
        fd = os.open(os.path.basename(path), _FILE_FLAGS, dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or not private(st):
                return None
            return f.read()
    except OSError:
        return None
    finally:
        os.close(dir_fd)


def write_cache(path: str, data: bytes) -> None:
    """Write a cache file atomically into our private cache directory (best effort)."""
    try:
        parent = os.path.dirname(path)
        os.makedirs(parent, mode=0o700, exist_ok=True)
        if not private(os.stat(parent)):
            return
        import tempfile  # writing is the rare case: the readers do not pay for it

        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home is fine: we just rebuild each time
