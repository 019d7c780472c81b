"""Commands that are not entry points: validate, types, demo, dr-payload, resource show."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import click

from kvmguest.agents.loader import builtin_types, validate
from kvmguest.cli.app import cli, emit, fail, finish, load_config, print_table
from kvmguest.model.attributes import AttrDef, coerce
from kvmguest.model.config import errors_of
from kvmguest.model.parser import load
from kvmguest.model.printer import format_type
from kvmguest.model.types import framework_type


@cli.command("validate")
@click.argument("config", required=False, metavar="[CONFIG]")
@click.pass_obj
def validate_cmd(obj: dict[str, Any], config: str | None) -> None:
    """Check main.cf (and what it includes): exit 0 valid, 1 invalid.

    CONFIG (else -c) is main.cf or the directory that holds it, as `hacf -verify DIR`.
    """
    given = config or obj["env"].config
    try:
        cfg, diags = load(given)
    except OSError as e:
        fail(obj, f"cannot read {given}: {e.strerror}")
    path = cfg.path  # the file read: DIR/main.cf for a directory
    diags = diags or validate(cfg)
    if errors_of(diags):
        why = f"{path} is invalid ({len(errors_of(diags))} error(s))"
        fail(obj, why, diags, extra={"valid": False})
    if not obj["json"]:
        for d in diags:  # warnings
            click.echo(str(d), err=True)
    emit(
        obj,
        {"valid": True, "config": path, "groups": len(cfg.groups),
         "resources": len(cfg.resources), "diagnostics": [d.as_dict() for d in diags]},
        f"{path}: valid ({len(cfg.groups)} group(s), {len(cfg.resources)} resource(s))",
    )  # fmt: skip


def _attr_data(adef: AttrDef) -> dict[str, Any]:
    return {
        "name": adef.name,
        "type": adef.type.value,
        "dimension": adef.dimension.value,
        "default": coerce(adef, adef.default_value()),
        "static": adef.static,
        "keys": list(adef.keys),
    }


@cli.command("types")
@click.option("--all", "show_all", is_flag=True, help="also the agent-framework statics")
@click.pass_obj
def types_cmd(obj: dict[str, Any], show_all: bool) -> None:
    """Print the built-in type definitions in types.cf syntax (--json: as data)."""
    tdefs = list(builtin_types().values())
    if obj["json"]:
        data: dict[str, Any] = {
            "types": [
                {"name": t.name, "attributes": [_attr_data(a) for a in t.attrs.values()]}
                for t in tdefs
            ]
        }
        if show_all:
            data["framework"] = [_attr_data(a) for a in framework_type().attrs.values()]
        emit(obj, data)
    for tdef in tdefs:
        click.echo(format_type(tdef))
    if show_all:
        click.echo("// Agent-framework statics every type inherits (VCS defaults); the")
        click.echo("// values in the types above take precedence.")
        click.echo(format_type(framework_type()))
    finish(0)


@cli.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False), help="keep the demo files here")
@click.pass_obj
def demo_cmd(obj: dict[str, Any], workdir: str | None) -> None:
    """Run the agents' demonstrations (KVMGuest: libvirt's in-process test driver: online,
    monitor, crash, clean)."""
    from kvmguest.agents import registry

    code = 0
    for agent in registry.agents():
        rc = agent.demo(workdir)
        code = code or (rc or 0)
    if code:
        fail(obj, f"the demo failed (exit {code})", code=code)
    emit(obj, {"agents": [a.type_name for a in registry.agents()]}, None)


@cli.command("dr-payload")
@click.argument("resource")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="where to write the ISO image (its directory must exist)")  # fmt: skip
@click.pass_obj
def dr_payload_cmd(obj: dict[str, Any], resource: str, output: str) -> None:
    """Write the DR payload image that online would attach, for inspection."""
    from kvmguest.agents import registry
    from kvmguest.errors import AgentError

    parent = Path(output).parent
    if not parent.is_dir():
        fail(obj, f"cannot write {output}: the directory {parent} does not exist")
    env = obj["env"]
    loaded = load_config(obj)
    try:
        agent = registry.require(loaded.cfg.resource(resource).kind)
        payload = agent.dr_payload(loaded, resource, env.system, output)
    except KeyError as e:
        fail(obj, str(e.args[0]))
    except AgentError as e:
        fail(obj, str(e))
    if obj["json"]:
        emit(obj, {"path": output, "payload": json.loads(payload)})
    click.echo(payload)
    click.echo(f"written: {output}", err=True)
    finish(0)


def _show(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {v}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(str(v) for v in value) + "}"
    return str(value)


def show_resource(obj: dict[str, Any], resource: str) -> NoReturn:
    """`kvmguest resource show RES`: every effective attribute on this system and where its
    value came from, from the one resolver (like VCS hares -display)."""
    loaded = load_config(obj)
    system = obj["env"].system
    try:
        block = loaded.cfg.resource(resource)
        values = loaded.resource_values(resource, system)
        sources = loaded.value_sources(resource, system)
    except KeyError as e:
        fail(obj, str(e.args[0]))
    attrs = [
        {"name": name, "value": value, "source": sources[name]} for name, value in values.items()
    ]
    if obj["json"]:
        emit(obj, {"resource": resource, "type": block.kind, "group": block.group,
                   "system": system, "attributes": attrs})  # fmt: skip
    print_table(
        ["attribute", "value", "source"],
        [[name, _show(values[name]), sources[name]] for name in values],
        title=f"{block.kind} {resource} on {system} (group {block.group})",
    )
    finish(0)
