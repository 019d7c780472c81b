"""``kvmguest ocf``: install the Pacemaker resource agent ocf:kvmguest:KVMGuest."""

from __future__ import annotations

from pathlib import Path

import click

from kvmguest.cli.main import _finish, cli


@cli.group("ocf")
def ocf_group() -> None:
    """The Pacemaker resource agent ocf:kvmguest:KVMGuest (docs/pacemaker.md)."""


@ocf_group.command("install")
@click.option(
    "--python",
    "python",
    help="interpreter that runs the agent (default: this one); it must import kvmguest "
    "and libvirt as root",
)
@click.option(
    "--dest",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="where to write the agent (default /usr/lib/ocf/resource.d/kvmguest/KVMGuest)",
)
def install_cmd(python: str | None, dest: Path | None) -> None:
    """Install the agent: a shell wrapper with the meta-data written in, that runs PYTHON."""
    from kvmguest.ocf.install import AGENT_PATH, InstallError, install

    try:
        path = install(python, dest or AGENT_PATH)
    except (InstallError, OSError) as e:
        click.echo(f"kvmguest: cannot install the OCF agent: {e}", err=True)
        _finish(1)
    click.echo(f"installed ocf:kvmguest:KVMGuest at {path}")
    _finish(0)


@ocf_group.command("uninstall")
@click.option("--dest", type=click.Path(dir_okay=False, path_type=Path), default=None)
def uninstall_cmd(dest: Path | None) -> None:
    """Remove the installed agent."""
    from kvmguest.ocf.install import AGENT_PATH, uninstall

    path = dest or AGENT_PATH
    click.echo(f"removed {path}" if uninstall(path) else f"{path} was not installed")
    _finish(0)


@ocf_group.command("metadata")
def metadata_cmd() -> None:
    """Print the agent's OCF meta-data (what `KVMGuest meta-data` prints)."""
    from kvmguest.ocf.metadata import render

    click.echo(render(), nl=False)
    _finish(0)
