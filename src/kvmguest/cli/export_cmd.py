"""``kvmguest export pacemaker``: main.cf -> a Pacemaker configuration (crm shell or CIB XML).

The configuration goes to stdout; every part of main.cf that Pacemaker cannot express is
reported on stderr as "not exported: ..." (approximations as "approximated: ...").
"""

from __future__ import annotations

from typing import Any

import click

from kvmguest.cli.app import cli, config_option, finish


@cli.group("export")
def export_group() -> None:
    """Export the configuration to another cluster manager."""


@export_group.command("pacemaker")
@config_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["crm", "xml"]),
    default="crm",
    show_default=True,
    help="crm shell commands, or CIB XML (a <configuration> for cibadmin)",
)
@click.pass_obj
def pacemaker_cmd(obj: dict[str, Any], config: str | None, fmt: str) -> None:
    """Print the Pacemaker configuration of main.cf's resources and groups."""
    from kvmguest.agents.loader import validate
    from kvmguest.model.parser import load
    from kvmguest.ocf.export import export, render_crm, render_xml

    path = config or obj["env"].config
    cfg, diags = load(path)
    diags = diags or validate(cfg)
    if diags:
        for d in diags:
            click.echo(str(d), err=True)
        click.echo(f"kvmguest: {path} is invalid; nothing exported", err=True)
        finish(1)
    result = export(cfg)
    click.echo(render_crm(result) if fmt == "crm" else render_xml(result), nl=False)
    for note in result.notes:
        click.echo(note, err=True)
    finish(0)
