"""``kvmguest export pacemaker``: main.cf -> a Pacemaker configuration (crm shell or CIB XML).

The configuration goes to stdout; every part of main.cf that Pacemaker cannot express is
reported on stderr as "not exported: ..." (approximations as "approximated: ..."). With
--json: ``{ok, format, text, not_exported}``.
"""

from __future__ import annotations

from typing import Any

import click

from kvmguest.cli.app import cli, emit, fail, finish


@cli.group("export")
def export_group() -> None:
    """Export the configuration to another cluster manager."""


@export_group.command("pacemaker")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["crm", "xml"]),
    default="crm",
    show_default=True,
    help="crm shell commands, or CIB XML (a <configuration> for cibadmin)",
)
@click.pass_obj
def pacemaker_cmd(obj: dict[str, Any], fmt: str) -> None:
    """Print the Pacemaker configuration of main.cf's resources and groups."""
    from kvmguest.agents.loader import validate
    from kvmguest.model.config import errors_of
    from kvmguest.model.parser import load
    from kvmguest.ocf.export import export, render_crm, render_xml

    path = obj["env"].config
    try:
        cfg, diags = load(path)
    except OSError as e:
        fail(obj, f"cannot read {path}: {e.strerror}")
    diags = diags or validate(cfg)
    if errors_of(diags):
        fail(obj, f"{path} is invalid; nothing exported", diags)
    result = export(cfg)
    text = render_crm(result) if fmt == "crm" else render_xml(result)
    if obj["json"]:
        emit(obj, {"format": fmt, "text": text, "not_exported": list(result.notes)})
    click.echo(text, nl=False)
    for note in result.notes:
        click.echo(note, err=True)
    finish(0)
