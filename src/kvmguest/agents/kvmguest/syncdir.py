"""SyncDir: the guest's definition, copied where a peer can define it from.

Written atomically (temp file, fsync, rename, directory fsync — the same helper the guest
service uses): a peer reading SyncDir sees the old definition or the new one, never half
of one, and a crash mid-write leaves no truncated file.
"""

from __future__ import annotations

from pathlib import Path

from kvmguest.guest.fsutil import atomic_write


def write_definition(sync_dir: str, guest_name: str, xml: str) -> Path:
    """SyncDir/<GuestName>.xml, written atomically."""
    path = Path(sync_dir) / f"{guest_name}.xml"
    atomic_write(path, xml)
    return path
