"""``kvmguest ocf``: install the Pacemaker resource agents ocf:kvmguest:<type>."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from kvmguest.cli.app import cli, emit, fail, finish


@cli.group("ocf")
def ocf_group() -> None:
    """The Pacemaker resource agents ocf:kvmguest:<type> (docs/pacemaker.md)."""


def this_program() -> str:
    """How this kvmguest is really run: its script's absolute path, else this Python with
    ``-m kvmguest``."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "kvmguest" and os.access(argv0, os.X_OK):
        return os.path.abspath(argv0)
    return f"{sys.executable} -m kvmguest"


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
@click.option(
    "--units-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where to write the systemd units for this kvmguest (default /etc/systemd/system)",
)
@click.option("--no-units", is_flag=True, help="do not write the systemd units")
@click.pass_obj
def install_cmd(
    obj: dict[str, Any], python: str | None, dest_dir: Path | None, units_dir: Path | None,
    no_units: bool,
) -> None:  # fmt: skip
    """Install the agents (shell wrappers with the meta-data written in, that run PYTHON),
    and the systemd units with ExecStart pointing at this kvmguest. Refuses to overwrite
    what the Debian package installed: with the package, nothing needs installing."""
    from kvmguest.ocf.install import OCF_DIR, SYSTEMD_DIR, InstallError, install, install_units

    try:
        paths = install(python, dest_dir or OCF_DIR)
        units = [] if no_units else install_units(this_program(), units_dir or SYSTEMD_DIR)
    except (InstallError, OSError) as e:
        fail(obj, f"cannot install the OCF agents: {e}")
    lines = [f"installed ocf:kvmguest:{p.name} at {p}" for p in paths]
    lines += [f"wrote {u} (enable it with: systemctl enable --now {u.name})" for u in units]
    emit(obj, {"agents": [str(p) for p in paths], "units": [str(u) for u in units]},
         "\n".join(lines))  # fmt: skip


@ocf_group.command("uninstall")
@click.option("--dir", "dest_dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.pass_obj
def uninstall_cmd(obj: dict[str, Any], dest_dir: Path | None) -> None:
    """Remove the installed agents (never those of the Debian package)."""
    from kvmguest.ocf.install import OCF_DIR, dpkg_owner, uninstall

    where = dest_dir or OCF_DIR
    owned = [p for p in where.glob("*") if dpkg_owner(p)] if where.is_dir() else []
    if owned:
        fail(obj, f"{owned[0]} belongs to a Debian package: remove the package instead")
    removed = uninstall(where)
    text = "\n".join(f"removed {p}" for p in removed) or f"no agent was installed in {where}"
    emit(obj, {"removed": [str(p) for p in removed]}, text)


@ocf_group.command("metadata")
@click.argument("type_name", required=False)
@click.pass_obj
def metadata_cmd(obj: dict[str, Any], type_name: str | None) -> None:
    """Print an agent's OCF meta-data (what `TYPE meta-data` prints)."""
    from kvmguest.ocf.metadata import render

    try:
        xml = render(type_name=type_name)
    except KeyError as e:
        fail(obj, str(e.args[0]))
    if obj["json"]:
        emit(obj, {"type": type_name, "xml": xml})
    click.echo(xml, nl=False)
    finish(0)
