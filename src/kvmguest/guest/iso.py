"""ISO 9660 images carrying the DR payload: write (agent side) and read (guest side).

The image holds one file, :data:`~kvmguest.guest.payload.PAYLOAD_FILENAME`, under its Rock
Ridge and Joliet name and the 8.3 ISO 9660 name, so any reader finds it; the volume label is
:data:`~kvmguest.guest.payload.VOLUME_LABEL`. Reading uses pycdlib and never mounts; if
pycdlib is missing (a guest with only the standard library) or cannot parse the medium,
:func:`read_source` mounts it read-only instead (root only).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import struct
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, cast

from kvmguest.guest.command import runner as _run
from kvmguest.guest.fsutil import atomic_write_with
from kvmguest.guest.payload import (
    MAX_PAYLOAD_BYTES,
    PAYLOAD_FILENAME,
    PAYLOAD_ISO9660_NAME,
    VOLUME_LABEL,
    DrPayload,
    PayloadError,
    PayloadMissingError,
    from_json,
    to_json,
)

_SECTOR = 2048
#: What reading one image may cost at most: its metadata and the payload. Our images need
#: under 100 KiB; a label-less disc with more metadata than this is skipped unread.
MAX_READ_BYTES = 16 * 1024 * 1024
_PVD_OFFSET = 16 * _SECTOR

#: Runs a command and returns (exit status, combined output); injectable for tests.
Runner = Callable[[Sequence[str]], "tuple[int, str]"]


log = logging.getLogger("kvmguest-net-reconfig.iso")


class UnreadableMediumError(PayloadError):
    """pycdlib could not parse the medium: it may still be mountable."""


def build_iso(payload: DrPayload, path: str | os.PathLike[str]) -> None:
    """Write an ISO 9660 image with the payload to ``path``, replacing it atomically.

    The image is written to a temporary file beside ``path``, fsynced, made world-readable
    (QEMU runs as its own user; the payload holds no secret) and renamed over ``path``, so a
    domain that has ``path`` attached never sees a half-written image.
    """
    import pycdlib

    data = to_json(payload).encode("utf-8")
    image = pycdlib.PyCdlib()
    image.new(interchange_level=3, vol_ident=VOLUME_LABEL, joliet=3, rock_ridge="1.09")
    try:
        image.add_fp(
            io.BytesIO(data),
            len(data),
            f"/{PAYLOAD_ISO9660_NAME};1",
            rr_name=PAYLOAD_FILENAME,
            joliet_path=f"/{PAYLOAD_FILENAME}",
        )
        atomic_write_with(path, image.write_fp, mode=0o644)
    finally:
        image.close()


def read_volume_label(fp: BinaryIO) -> str | None:
    """The ISO 9660 volume identifier of an open image or device, None if it is not one.

    Reads only the primary volume descriptor (standard library, no pycdlib), so the guest
    can scan every CD-ROM cheaply.
    """
    fp.seek(_PVD_OFFSET)
    pvd = fp.read(_SECTOR)
    if len(pvd) < 72 or pvd[0:1] != b"\x01" or pvd[1:6] != b"CD001":
        return None
    return pvd[40:72].decode("ascii", errors="replace").rstrip(" \x00")


def _payload_name_matches(name: str) -> bool:
    base = name.split(";", 1)[0].rstrip(".").lower()
    return base in {PAYLOAD_FILENAME, PAYLOAD_ISO9660_NAME.lower(), "kvmguest_dr.json"}


class _TooLargeError(Exception):
    """Raised by :class:`_CappedBuffer` when the payload outgrows the cap."""


class _CappedBuffer(io.BytesIO):
    """Holds at most MAX_PAYLOAD_BYTES, whatever a corrupt directory record says."""

    def write(self, data: Any) -> int:
        if self.tell() + memoryview(data).nbytes > MAX_PAYLOAD_BYTES:
            raise _TooLargeError
        return super().write(data)


def _recorded_size(image: Any, where: dict[str, str]) -> int:
    """The size the directory records give the file, its multi-extent parts summed."""
    record = image.get_record(**where)
    total = 0
    # A corrupt chain could loop: the cap ends the walk long before that matters.
    while record is not None and total <= MAX_PAYLOAD_BYTES:
        total += int(record.data_length)
        record = record.data_continuation
    return total


def _too_large(size: int | None = None) -> PayloadError:
    what = f"{size} bytes" if size is not None else "larger"
    return PayloadError(f"corrupt payload: {what}, more than {MAX_PAYLOAD_BYTES}; not read")


def _extract(image: Any) -> bytes:
    """The payload file's bytes from an opened pycdlib image, never more than the cap."""
    import pycdlib

    attempts: list[dict[str, str]] = []
    if image.has_rock_ridge():
        attempts.append({"rr_path": f"/{PAYLOAD_FILENAME}"})
    if image.has_joliet():
        attempts.append({"joliet_path": f"/{PAYLOAD_FILENAME}"})
    # Plain ISO 9660 names differ by the tool that wrote the image (level, mapping of '-').
    for child in image.list_children(iso_path="/"):
        name = child.file_identifier().decode("ascii", errors="replace")
        if not child.is_dir() and _payload_name_matches(name):
            attempts.append({"iso_path": f"/{name}"})
    for where in attempts:
        try:
            size = _recorded_size(image, where)
        except pycdlib.pycdlibexception.PyCdlibException:
            continue
        if size > MAX_PAYLOAD_BYTES:
            raise _too_large(size)
        out = _CappedBuffer()
        try:
            image.get_file_from_iso_fp(out, **where)
        except pycdlib.pycdlibexception.PyCdlibException:
            continue
        except _TooLargeError:
            raise _too_large() from None
        return out.getvalue()
    raise PayloadMissingError(f"the medium has no {PAYLOAD_FILENAME}")


def _corrupt_medium_errors() -> tuple[type[BaseException], ...]:
    """What pycdlib raises on a malformed image, by type.

    Besides its own exceptions, pycdlib trusts the image's offsets and lengths: struct,
    index, key and value (decoding) errors come out of it as they are (all seen by
    tests/guest/test_guest_fuzz.py), arithmetic ones could from a zero size, recursion
    ones from directories nested past Python's limit. OSError: a disc whose sectors cannot
    be read is as unreadable. Not TypeError nor AttributeError: those are bugs, and stay
    unexpected errors.
    """
    import pycdlib

    return (
        pycdlib.pycdlibexception.PyCdlibException,
        struct.error,
        ArithmeticError,
        LookupError,
        OSError,
        RecursionError,
        ValueError,
    )


class _ReadBudgetError(OSError):
    """The image made pycdlib read more than any payload image needs."""


class _BoundedReader:
    """A read-only view of an image that refuses to read more than ``budget`` bytes in all.

    pycdlib follows the image's extents and lengths: a directory record claiming gigabytes
    would have it read the whole disc, for many seconds of the boot. A DR image is a few
    sectors of metadata and at most MAX_PAYLOAD_BYTES of payload.
    """

    def __init__(self, fp: BinaryIO, budget: int) -> None:
        self._fp = fp
        self._left = budget

    def read(self, size: int = -1) -> bytes:
        # "All of it" is whatever is left of the budget, and one byte to tell if it is more.
        data = self._fp.read(self._left + 1 if size < 0 or size > self._left else size)
        if len(data) > self._left:
            raise _ReadBudgetError(f"the image asks for more than {MAX_READ_BYTES} bytes read")
        self._left -= len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._fp.seek(offset, whence)

    def tell(self) -> int:
        return self._fp.tell()


def read_image(fp: BinaryIO, name: str) -> DrPayload:
    """Read the payload from an open ISO image (file, device or in memory), no mounting.

    Raises :class:`UnreadableMediumError` when the image is not a readable ISO 9660 image,
    whatever pycdlib raised, :class:`PayloadMissingError` when it has no payload file, and
    :class:`PayloadError` when the payload is corrupt (too large: refused unread).
    """
    import pycdlib

    image = pycdlib.PyCdlib()
    opened = False
    try:
        # pycdlib only reads, seeks and tells on it.
        image.open_fp(cast("BinaryIO", _BoundedReader(fp, MAX_READ_BYTES)))
        opened = True
        data = _extract(image)
    except PayloadError:
        raise
    except _corrupt_medium_errors() as exc:
        raise UnreadableMediumError(
            f"{name}: not a readable ISO 9660 image ({type(exc).__name__}: {exc})"
        ) from None
    finally:
        if opened:
            image.close()
    return from_json(data)


def read_iso(source: str | os.PathLike[str]) -> DrPayload:
    """Read the payload from an ISO image file or a CD-ROM block device, without mounting.

    Raises :class:`PayloadMissingError` when there is no medium or no payload file on it,
    :class:`PayloadError` when the medium or the payload is corrupt, and ImportError when
    pycdlib is not installed (use :func:`read_source`, which falls back to mounting).
    """
    import pycdlib  # noqa: F401 - ImportError before the device is opened

    path = os.fspath(source)
    try:
        fp = open(path, "rb")  # noqa: SIM115 - closed below, after pycdlib is done with it
    except FileNotFoundError:
        raise PayloadMissingError(f"{path}: no such file or device") from None
    except OSError as exc:
        # ENOMEDIUM: a CD-ROM drive with no disc is the normal "nothing delivered" case.
        raise PayloadMissingError(f"{path}: cannot open ({exc.strerror})") from None
    with fp:
        return read_image(fp, path)


def read_mounted(source: str | os.PathLike[str], runner: Runner = _run) -> DrPayload:
    """Read the payload by mounting ``source`` read-only on a private temporary directory.

    The fallback for guests without pycdlib. Needs root and the kernel's iso9660 support.
    The mount point is always unmounted and removed again.
    """
    path = os.fspath(source)
    mountpoint = tempfile.mkdtemp(prefix="kvmguest-dr.")
    try:
        opts = "ro,nosuid,nodev,noexec"
        try:
            is_file = stat.S_ISREG(os.stat(path).st_mode)
        except FileNotFoundError:
            raise PayloadMissingError(f"{path}: no such file or device") from None
        if is_file:
            opts += ",loop"
        status, output = runner(["mount", "-t", "iso9660", "-o", opts, path, mountpoint])
        if status != 0:
            raise PayloadMissingError(f"{path}: cannot mount ({output or f'exit {status}'})")
        try:
            return read_directory(mountpoint)
        finally:
            status, output = runner(["umount", mountpoint])
            if status != 0:
                # The payload was read (or refused) already: a mount left behind must not
                # turn it into a failure of the service.
                log.warning("cannot unmount %s: %s", mountpoint, output or f"exit {status}")
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)


def read_directory(directory: str | os.PathLike[str]) -> DrPayload:
    """Read the payload file from a directory (a mounted medium)."""
    base = os.fspath(directory)
    names = []
    with contextlib.suppress(OSError):
        names = sorted(n for n in os.listdir(base) if _payload_name_matches(n))
    if not names:
        raise PayloadMissingError(f"{base} has no {PAYLOAD_FILENAME}")
    # Prefer the long name when the mount shows several spellings.
    name = PAYLOAD_FILENAME if PAYLOAD_FILENAME in names else names[0]
    with open(os.path.join(base, name), "rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        if size > MAX_PAYLOAD_BYTES:
            raise _too_large(size)
        data = fp.read(MAX_PAYLOAD_BYTES + 1)
    return from_json(data)


def read_source(source: str | os.PathLike[str], runner: Runner = _run) -> DrPayload:
    """Read the payload from a directory, an ISO image or a device, by the best means here.

    pycdlib first (no mount); without pycdlib, or when pycdlib cannot parse the medium, a
    read-only mount. A payload that was read but is invalid is never retried by mounting.
    """
    path = os.fspath(source)
    if os.path.isdir(path):
        return read_directory(path)
    try:
        return read_iso(path)
    except ImportError:
        return read_mounted(path, runner)
    except UnreadableMediumError as exc:
        try:
            return read_mounted(path, runner)
        except PayloadError:
            # The mount failed too: pycdlib's reason is the more telling one.
            raise exc from None
