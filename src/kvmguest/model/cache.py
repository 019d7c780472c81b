"""The per-user cache of derived data (parser tables, built-in types, validated
configurations): ``$XDG_CACHE_HOME/kvmguest`` (else ``~/.cache/kvmguest``).

A cache file is read only when its directory and the file itself are owned by us and closed
to writes by others, and written atomically; any failure just means it is rebuilt. Every
entry is keyed by the content it comes from, so a stale one is never used.
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


def private(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def read_cache(path: str) -> bytes | None:
    """The cache file's bytes, or None when absent or not trusted."""
    try:
        if not private(os.stat(os.path.dirname(path))):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            if not private(os.fstat(f.fileno())):
                return None
            return f.read()
    except OSError:
        return None


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
