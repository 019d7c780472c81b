"""Reading the files an operator names: main.cf, what it includes, and the files a
configuration points at (a guest's libvirt XML).

Such a path may name anything: a FIFO (whose open blocks until a writer comes), a device
(``/dev/zero`` never ends), a directory, a huge file. Each is refused at once with a clear
error; only a regular file of at most :data:`MAX_CONFIG_BYTES` is read. Symbolic links are
followed: ``/etc`` is full of legitimate ones (configuration management, alternatives).

Standard library only: the one-shot monitor's cache check reads the files through here.
"""

from __future__ import annotations

import errno
import os
import stat

# Far above any real main.cf (a few KiB) or domain XML; small enough to hold in memory.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAIN_CF = "main.cf"

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class UnreadableFile(OSError):
    """A file that is not read: not a regular file, too large, not UTF-8, or an OS error.

    An OSError, so that every caller that reports ``cannot read PATH: {strerror}`` reports
    these too. ``at`` (line, column) places a decoding error in the file; None otherwise.
    """

    def __init__(
        self, path: str, why: str, code: int = errno.EINVAL, at: tuple[int, int] | None = None
    ) -> None:
        super().__init__(code, why, path)
        self.at = at


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _check(path: str, st: os.stat_result, cap: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableFile(path, f"{_kind(st.st_mode)}, not a regular file")
    if st.st_size > cap:
        raise UnreadableFile(path, f"larger than {cap // (1024 * 1024)} MiB", errno.EFBIG)


def read_config_bytes(path: str | os.PathLike[str], cap: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (at most ``cap``); :class:`UnreadableFile`
    for anything else, without blocking and without reading more than ``cap + 1`` bytes."""
    name = os.fspath(path)
    try:
        # Refuse before opening: opening some devices acts (a watchdog starts, a tape
        # rewinds). The fstat below closes the race with a file replaced meanwhile.
        _check(name, os.stat(name), cap)
        # O_NONBLOCK: a FIFO put in place after the stat opens without waiting for a writer.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except UnreadableFile:
        raise
    except OSError as e:
        raise UnreadableFile(name, e.strerror or str(e), e.errno or errno.EIO) from None
    try:
        _check(name, os.fstat(fd), cap)
        chunks: list[bytes] = []
        left = cap + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except UnreadableFile:
        raise
    except OSError as e:
        raise UnreadableFile(name, e.strerror or str(e), e.errno or errno.EIO) from None
    finally:
        os.close(fd)
    if left <= 0:  # it grew past the cap after the fstat
        raise UnreadableFile(name, f"larger than {cap // (1024 * 1024)} MiB", errno.EFBIG)
    return b"".join(chunks)


def read_config_file(path: str | os.PathLike[str], cap: int = MAX_CONFIG_BYTES) -> str:
    """The text of the regular file ``path``, which must be UTF-8 (see read_config_bytes).
    A decoding error names the line and column of the first bad byte."""
    data = read_config_bytes(path, cap)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        head = data[: e.start]
        line = head.count(b"\n") + 1
        col = len(head[head.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        bad = data[e.start : e.start + 1].hex()
        raise UnreadableFile(
            os.fspath(path), f"not UTF-8 text (byte 0x{bad})", at=(line, col)
        ) from None


def main_cf(path: str) -> str:
    """The configuration file ``path`` names: itself, or ``main.cf`` inside it when it is a
    directory (as ``hacf -verify DIR`` takes the configuration directory)."""
    return os.path.join(path, MAIN_CF) if os.path.isdir(path) else path
