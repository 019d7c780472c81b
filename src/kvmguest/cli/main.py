"""The ``kvmguest`` command: parse arguments, call the library, format the result.

Exit codes follow the VCS script conventions (README, "Exit codes").
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from kvmguest.agent import entrypoints as ep
from kvmguest.agent.runner import Env, context
from kvmguest.model.config import ConfigInvalid
from kvmguest.model.states import EXIT_UNKNOWN

EXIT_FAIL = 1


def _finish(code: int) -> NoReturn:
    """Exit at once: a libvirt call abandoned past its deadline must not hold us."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="kvmguest: %(levelname)s: %(message)s")


def _progress(msg: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\033[K{msg}")
        sys.stderr.flush()


def _load_context(obj: dict[str, Any], resource: str, fail_code: int) -> ep.Context:
    env: Env = obj["env"]
    try:
        return context(env, resource, progress=_progress)
    except ConfigInvalid as e:
        for d in e.diagnostics:
            click.echo(str(d), err=True)
        click.echo(f"kvmguest: {env.config} is invalid; nothing was done", err=True)
    except KeyError as e:
        click.echo(f"kvmguest: {e.args[0]}", err=True)
    _finish(fail_code)


def _report(obj: dict[str, Any], outcome: ep.Outcome) -> NoReturn:
    if obj["json"]:
        click.echo(json.dumps(outcome.as_dict()))
    else:
        if sys.stderr.isatty():
            sys.stderr.write("\r\033[K")
        for w in outcome.warnings:
            click.echo(f"WARNING: {w}", err=True)
        if outcome.output:
            click.echo(outcome.output)
        click.echo(outcome.message, err=not outcome.ok)
    _finish(0 if outcome.ok else EXIT_FAIL)


config_option = click.option(
    "-c", "--config", envvar="KVMGUEST_CONFIG", help="main.cf (default /etc/kvmguest/main.cf)"
)


@click.group()
@config_option
@click.option("--connect", "uri", envvar="KVMGUEST_LIBVIRT_URI", help="libvirt URI of this host")
@click.option("--system", envvar="KVMGUEST_SYSTEM", help="this system's name in main.cf")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("-v", "--verbose", count=True, help="log more (-vv for debug)")
@click.version_option(package_name="kvmguest")
@click.pass_context
def cli(
    ctx: click.Context, config: str | None, uri: str | None, system: str | None,
    as_json: bool, verbose: int,
) -> None:  # fmt: skip
    """kvmguest: keeps KVM guests and RHEV/oVirt VMs available."""
    _setup_logging(verbose)
    ctx.ensure_object(dict)
    ctx.obj["env"] = Env.from_environ(config, system, uri)
    ctx.obj["json"] = as_json


def _resource_command(name: str, help_text: str) -> Callable[[Callable[..., Any]], Any]:
    """An entry-point command: the global options may also follow the command name."""

    def wrap(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def run(
            *args: Any, config: str | None, local_system: str | None, local_uri: str | None,
            local_json: bool, **kwargs: Any,
        ) -> Any:  # fmt: skip
            obj = click.get_current_context().find_object(dict)
            assert obj is not None
            env: Env = obj["env"]
            obj["env"] = Env(
                config=config or env.config,
                system=local_system or env.system,
                uri=local_uri or env.uri,
            )
            obj["json"] = obj["json"] or local_json
            return fn(*args, **kwargs)

        run = click.option("--json", "local_json", is_flag=True, help="machine-readable output")(
            run
        )
        run = click.option("--connect", "local_uri", help="libvirt URI of this host")(run)
        run = click.option("--system", "local_system", help="this system's name in main.cf")(run)
        run = config_option(run)
        return cli.command(name, help=help_text)(run)

    return wrap


def _done(obj: dict[str, Any], ctx: ep.Context, outcome: ep.Outcome) -> NoReturn:
    ctx.hv.close()  # RHEV: log out, or every one-shot leaves an SSO session behind
    _report(obj, outcome)


@_resource_command("monitor", "Report the guest's state (exit 100 offline, 101-110 online, "
                   "200 intentional offline, 99 unknown).")  # fmt: skip
@click.argument("resource")
@click.pass_obj
def monitor_cmd(obj: dict[str, Any], resource: str) -> None:
    ctx = _load_context(obj, resource, EXIT_UNKNOWN)
    result = ep.monitor(ctx)
    ctx.hv.close()
    if obj["json"]:
        click.echo(json.dumps(result.as_dict()))
    else:
        click.echo(result.line(resource))
    _finish(result.exit_code)


@_resource_command("online", "Bring the guest online (define it first if needed).")
@click.argument("resource")
@click.pass_obj
def online_cmd(obj: dict[str, Any], resource: str) -> None:
    ctx = _load_context(obj, resource, EXIT_FAIL)
    _done(obj, ctx, ep.online(ctx))


@_resource_command("offline", "Shut the guest down gracefully.")
@click.argument("resource")
@click.pass_obj
def offline_cmd(obj: dict[str, Any], resource: str) -> None:
    ctx = _load_context(obj, resource, EXIT_FAIL)
    _done(obj, ctx, ep.offline(ctx))


@_resource_command("clean", "Force the guest off after a failure.")
@click.argument("resource")
@click.option("--reason", type=click.IntRange(0, 5), default=4, show_default=True,
              help="VCS clean reason: " + "; ".join(f"{k} {v}" for k, v in
                                                    ep.CLEAN_REASONS.items()))  # fmt: skip
@click.pass_obj
def clean_cmd(obj: dict[str, Any], resource: str, reason: int) -> None:
    ctx = _load_context(obj, resource, EXIT_FAIL)
    _done(obj, ctx, ep.clean(ctx, reason))


@_resource_command("migrate", "Live-migrate the guest to another system.")
@click.argument("resource")
@click.option("--to", "target", required=True, help="target system name")
@click.pass_obj
def migrate_cmd(obj: dict[str, Any], resource: str, target: str) -> None:
    ctx = _load_context(obj, resource, EXIT_FAIL)
    _done(obj, ctx, ep.migrate(ctx, target))


@_resource_command("action", "Run an action: guestmigrated, vmconfigsync, DevScan.")
@click.argument("resource")
@click.argument("token")
@click.argument("args", nargs=-1)
@click.pass_obj
def action_cmd(obj: dict[str, Any], resource: str, token: str, args: tuple[str, ...]) -> None:
    ctx = _load_context(obj, resource, EXIT_FAIL)
    _done(obj, ctx, ep.action(ctx, token, list(args)))


def main() -> None:
    from kvmguest.cli import (  # noqa: F401  (they register their commands)
        agent_cmd,
        commands,
        export_cmd,
        ocf_cmd,
        secret_cmd,
    )

    cli(prog_name="kvmguest")
