"""Commands that are not entry points: validate, types, demo."""

from __future__ import annotations

import json
from typing import Any

import click

from kvmguest.agents.loader import builtin_types, validate
from kvmguest.cli.app import cli, config_option, finish
from kvmguest.model.parser import load
from kvmguest.model.printer import format_type
from kvmguest.model.types import framework_type


@cli.command("validate")
@config_option
@click.pass_obj
def validate_cmd(obj: dict[str, Any], config: str | None) -> None:
    """Check main.cf (and what it includes): exit 0 valid, 1 invalid."""
    path = config or obj["env"].config
    cfg, diags = load(path)
    diags = diags or validate(cfg)
    if obj["json"]:
        click.echo(json.dumps({"valid": not diags, "errors": [str(d) for d in diags]}))
    for d in diags if not obj["json"] else []:
        click.echo(str(d), err=True)
    if not diags and not obj["json"]:
        click.echo(f"{path}: valid ({len(cfg.groups)} group(s), {len(cfg.resources)} resource(s))")
    finish(1 if diags else 0)


@cli.command("types")
@click.option("--all", "show_all", is_flag=True, help="also the agent-framework statics")
def types_cmd(show_all: bool) -> None:
    """Print the built-in type definitions in types.cf syntax."""
    for tdef in builtin_types().values():
        click.echo(format_type(tdef))
    if show_all:
        click.echo("// Agent-framework statics every type inherits (VCS defaults); the")
        click.echo("// values in the types above take precedence.")
        click.echo(format_type(framework_type()))


@cli.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False), help="keep the demo files here")
def demo_cmd(workdir: str | None) -> None:
    """Run the agents' demonstrations (KVMGuest: libvirt's in-process test driver: online,
    monitor, crash, clean)."""
    from kvmguest.agents import registry

    code = 0
    for agent in registry.agents():
        rc = agent.demo(workdir)
        code = code or (rc or 0)
    finish(code)


@cli.command("dr-payload")
@click.argument("resource")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="where to write the ISO image")  # fmt: skip
@config_option
@click.pass_obj
def dr_payload_cmd(obj: dict[str, Any], resource: str, output: str, config: str | None) -> None:
    """Write the DR payload image that online would attach, for inspection."""
    from kvmguest.agents import registry
    from kvmguest.agents.loader import Loaded
    from kvmguest.errors import AgentError
    from kvmguest.model.config import ConfigInvalid

    env = obj["env"]
    path = output
    try:
        loaded = Loaded.from_file(config or env.config)
        agent = registry.require(loaded.cfg.resource(resource).kind)
        click.echo(agent.dr_payload(loaded, resource, env.system, output))
    except ConfigInvalid as e:
        for d in e.diagnostics:
            click.echo(str(d), err=True)
        finish(1)
    except (KeyError, AgentError) as e:
        click.echo(f"kvmguest: {e.args[0] if isinstance(e, KeyError) else e}", err=True)
        finish(1)
    click.echo(f"written: {path}", err=True)
    finish(0)
