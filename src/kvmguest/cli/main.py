"""The ``kvmguest`` command: parse arguments, call the library, format the result.

Exit codes follow the VCS script conventions (README, "Exit codes").
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import click

from kvmguest.cli import (  # noqa: F401  (they register their commands)
    agent_cmd,
    commands,
    entry_cmd,
    export_cmd,
    ocf_cmd,
    secret_cmd,
)
from kvmguest.cli.app import EXIT_USAGE, cli, error_envelope


@cli.command("generate", hidden=True)
@click.option("--ocf-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--ocf-python", default="/usr/bin/python3", show_default=True)
@click.option("--man-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--bash-completion", type=click.Path(dir_okay=False, path_type=Path))
def generate_cmd(
    ocf_dir: Path | None, ocf_python: str, man_dir: Path | None, bash_completion: Path | None
) -> None:
    """Write what a package installs beside the code (debian/rules): the OCF agent
    wrappers, the man pages and the bash completion, from the code's own definitions."""
    from kvmguest.cli.manual import render_bash, render_man, render_man_argparse
    from kvmguest.guest.netreconfig import build_parser
    from kvmguest.ocf.install import install
    from kvmguest.ocf.metadata import version

    # Reproducible: dpkg-buildpackage sets SOURCE_DATE_EPOCH (the changelog's date).
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    date = dt.datetime.fromtimestamp(int(epoch), dt.UTC).date() if epoch else dt.date.today()
    if ocf_dir:
        for path in install(ocf_python, ocf_dir, check=False, packaged=True):
            click.echo(f"wrote {path}")
    if man_dir:
        man_dir.mkdir(parents=True, exist_ok=True)
        (man_dir / "kvmguest.1").write_text(render_man(cli, "kvmguest", version(), date))
        (man_dir / "kvmguest-net-reconfig.8").write_text(render_man_argparse(
            build_parser(), 8, version(), date,
            "apply a DR site's network settings inside a guest"))  # fmt: skip
        click.echo(f"wrote {man_dir}/kvmguest.1 and kvmguest-net-reconfig.8")
    if bash_completion:
        bash_completion.write_text(render_bash(cli, "kvmguest"))
        click.echo(f"wrote {bash_completion}")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        code = cli.main(args, prog_name="kvmguest", standalone_mode=False)
    except click.ClickException as e:
        # A usage error (a missing argument, an unknown option...) is a JSON envelope too
        # when --json was asked for.
        if "--json" in args:
            click.echo(json.dumps(error_envelope(e.format_message())))
        else:
            e.show()
        sys.exit(e.exit_code if e.exit_code else EXIT_USAGE)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
