"""Crash-safe file replacement, shared by the ISO writer and the guest's config writers."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename in ``path`` durable (the directory entry is data too)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _temp_beside(path: str) -> Iterator[tuple[BinaryIO, str]]:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "wb") as fp:
            yield fp, tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_with(
    path: str | os.PathLike[str], write: Callable[[BinaryIO], None], mode: int = 0o644
) -> None:
    """Replace ``path`` with what ``write`` produces: readers see the old or the new file.

    The data goes to a temporary file in the same directory, is fsynced, gets ``mode``, and
    is renamed over ``path``; the directory is then fsynced. A symlink at ``path`` is
    replaced, not followed. On any error the temporary file is removed and ``path`` is
    untouched.
    """
    target = os.fspath(path)
    with _temp_beside(target) as (fp, tmp):
        write(fp)
        fp.flush()
        os.fchmod(fp.fileno(), mode)
        os.fsync(fp.fileno())
        # Rename while the temp file is still ours: on failure the context removes it.
        os.replace(tmp, target)
    fsync_dir(os.path.dirname(target) or ".")


def atomic_write(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o644) -> None:
    """Atomically replace ``path`` with ``data`` (str is encoded as UTF-8)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data

    def write(fp: BinaryIO) -> None:
        fp.write(raw)

    atomic_write_with(path, write, mode)
