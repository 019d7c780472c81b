"""The fault-injection suite: each fault while a real TCG guest is protected by the daemon
(real libvirtd, shortened statics). Every test adds a row to the table printed at the end
of the run (``fault | detected (ms) | recovered (s) | notes``) and kept in a file."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..daemon.conftest import real_libvirt, rig  # noqa: F401 - the fixtures

TABLE_FILE = Path(tempfile.gettempdir()) / "kvmguest-fault-table.txt"


@dataclass
class Row:
    fault: str
    detected_ms: float | None
    recovered_s: float | None
    notes: str


ROWS: list[Row] = []


@pytest.fixture
def table() -> list[Row]:
    return ROWS


def render(rows: list[Row]) -> str:
    head = ("fault", "detected (ms)", "recovered (s)", "notes")
    body = [
        (
            r.fault,
            "-" if r.detected_ms is None else f"{r.detected_ms:.1f}",
            "-" if r.recovered_s is None else f"{r.recovered_s:.2f}",
            r.notes,
        )
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in
             [head, *body]]  # fmt: skip
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    text = render(ROWS)
    TABLE_FILE.write_text(text)
    terminalreporter.write_sep("=", "kvmguest fault injection")
    terminalreporter.write(text)
    terminalreporter.write_line(f"(a copy: {TABLE_FILE})")
