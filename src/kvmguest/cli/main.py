"""The ``kvmguest`` command: parse arguments, call the library, format the result.

Exit codes follow the VCS script conventions (README, "Exit codes").
"""

from __future__ import annotations

from kvmguest.cli import (  # noqa: F401  (they register their commands)
    agent_cmd,
    commands,
    entry_cmd,
    export_cmd,
    ocf_cmd,
    secret_cmd,
)
from kvmguest.cli.app import cli


def main() -> None:
    cli(prog_name="kvmguest")
