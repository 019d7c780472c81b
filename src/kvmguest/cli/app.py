"""The ``kvmguest`` command group, its global options and the helpers its commands share.

Every command module registers its commands on :data:`cli`; :mod:`kvmguest.cli.main`
imports them all. Exit codes follow the VCS script conventions (README, "Exit codes").
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

from kvmguest.agents import registry
from kvmguest.agents.base import Env, Handle, Outcome
from kvmguest.agents.loader import Loaded
from kvmguest.model.config import ConfigInvalid

EXIT_FAIL = 1


def finish(code: int) -> NoReturn:
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


def load_handle(obj: dict[str, Any], resource: str, fail_code: int) -> Handle:
    """The resource bound to this system through its type's agent; exits on an error."""
    env: Env = obj["env"]
    try:
        loaded = Loaded.from_file(env.config)
        kind = loaded.cfg.resource(resource).kind
        return registry.require(kind).runtime(env).bind(loaded, resource, progress=_progress)
    except ConfigInvalid as e:
        for d in e.diagnostics:
            click.echo(str(d), err=True)
        click.echo(f"kvmguest: {env.config} is invalid; nothing was done", err=True)
    except KeyError as e:
        click.echo(f"kvmguest: {e.args[0]}", err=True)
    finish(fail_code)


def report(obj: dict[str, Any], outcome: Outcome) -> NoReturn:
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
    finish(0 if outcome.ok else EXIT_FAIL)


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


def resource_command(name: str, help_text: str) -> Callable[[Callable[..., Any]], Any]:
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


def done(obj: dict[str, Any], handle: Handle, outcome: Outcome) -> NoReturn:
    handle.close()  # RHEV: log out, or every one-shot leaves an SSO session behind
    report(obj, outcome)
