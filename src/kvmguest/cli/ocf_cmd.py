"""``kvmguest ocf``: install the Pacemaker resource agents ocf:kvmguest:<type>."""

from __future__ import annotations

from pathlib import Path

import click

from kvmguest.cli.app import cli, finish


@cli.group("ocf")
def ocf_group() -> None:
    """The Pacemaker resource agents ocf:kvmguest:<type> (docs/pacemaker.md)."""


@ocf_group.command("install")
@click.option(
    "--python",
    "python",
    help="interpreter that runs the agents (default: this one); it must import kvmguest "
    "and the agents' drivers (libvirt) as root",
)
@click.option(
    "--dir",
    "dest_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where to write the agents (default /usr/lib/ocf/resource.d/kvmguest)",
)
def install_cmd(python: str | None, dest_dir: Path | None) -> None:
    """Install the agents: shell wrappers with the meta-data written in, that run PYTHON."""
    from kvmguest.ocf.install import OCF_DIR, InstallError, install

    try:
        paths = install(python, dest_dir or OCF_DIR)
    except (InstallError, OSError) as e:
        click.echo(f"kvmguest: cannot install the OCF agents: {e}", err=True)
        finish(1)
    for path in paths:
        click.echo(f"installed ocf:kvmguest:{path.name} at {path}")
    finish(0)


@ocf_group.command("uninstall")
@click.option("--dir", "dest_dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def uninstall_cmd(dest_dir: Path | None) -> None:
    """Remove the installed agents."""
    from kvmguest.ocf.install import OCF_DIR, uninstall

    removed = uninstall(dest_dir or OCF_DIR)
    for path in removed:
        click.echo(f"removed {path}")
    if not removed:
        click.echo(f"no agent was installed in {dest_dir or OCF_DIR}")
    finish(0)


@ocf_group.command("metadata")
@click.argument("type_name", required=False)
def metadata_cmd(type_name: str | None) -> None:
    """Print an agent's OCF meta-data (what `TYPE meta-data` prints)."""
    from kvmguest.ocf.metadata import render

    try:
        click.echo(render(type_name=type_name), nl=False)
    except KeyError as e:
        click.echo(f"kvmguest: {e.args[0]}", err=True)
        finish(1)
    finish(0)
