"""The daemon's log: on stderr, with the syslog priority on each line under systemd.

When stderr is the journal (``JOURNAL_STREAM`` names it), each line starts with ``<N>``,
the syslog priority, which journald strips and keeps as the entry's priority: ``journalctl
-p warning -u kvmguest-agent`` then shows the faults alone. Elsewhere, lines say their level
in words.

Without -v the daemon logs what an operator must see: every state change (INFO), cleans,
restarts and entry-point failures (WARNING), faults and ADMIN_WAIT (ERROR). ``-v`` adds every
decision of the framework (DEBUG of kvmguest), ``-vv`` the libraries' debug output too.
"""

from __future__ import annotations

import logging
import os
import sys

PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class JournalFormatter(logging.Formatter):
    """``<N>message``: the journal keeps the level."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = PRIORITY.get(record.levelno, 3)
        # A multi-line record (a traceback at -v) is one journal entry per line.
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def stderr_is_journal() -> bool:
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        info = os.fstat(sys.stderr.fileno())
        return bool(device) and (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def setup(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("kvmguest: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    logging.getLogger("kvmguest").setLevel(logging.DEBUG if verbose >= 1 else logging.INFO)
