"""The entry-point commands: monitor, online, offline, clean, migrate, action.

Each binds the resource through its type's agent and runs one entry point.
"""

from __future__ import annotations

import json
from typing import Any

import click

from kvmguest.agents.base import CLEAN_REASONS, monitor_once
from kvmguest.cli.app import EXIT_FAIL, as_json, done, finish, load_handle, resource_command
from kvmguest.model.states import EXIT_UNKNOWN


@resource_command("monitor", "Report the guest's state (exit 100 offline, 101-110 online, "
                   "200 intentional offline, 99 unknown).")  # fmt: skip
@click.argument("resource")
@click.pass_obj
def monitor_cmd(obj: dict[str, Any], resource: str) -> None:
    handle = load_handle(obj, resource, EXIT_UNKNOWN)
    result = monitor_once(handle)
    handle.close()
    if as_json(obj):
        # Any monitor answer, UNKNOWN included, is the command succeeding: the state is
        # the answer (and the exit code); "ok": false is for a monitor that could not run.
        click.echo(json.dumps({**result.as_dict(), "ok": True}))
    else:
        click.echo(result.line(resource))
    finish(result.exit_code)


@resource_command("online", "Bring the guest online (define it first if needed).")
@click.argument("resource")
@click.pass_obj
def online_cmd(obj: dict[str, Any], resource: str) -> None:
    handle = load_handle(obj, resource, EXIT_FAIL)
    done(obj, handle, handle.online())


@resource_command("offline", "Shut the guest down gracefully.")
@click.argument("resource")
@click.pass_obj
def offline_cmd(obj: dict[str, Any], resource: str) -> None:
    handle = load_handle(obj, resource, EXIT_FAIL)
    done(obj, handle, handle.offline())


@resource_command("clean", "Force the guest off after a failure.")
@click.argument("resource")
@click.option("--reason", type=click.IntRange(0, 5), default=4, show_default=True,
              help="VCS clean reason: " + "; ".join(f"{k} {v}" for k, v in
                                                    CLEAN_REASONS.items()))  # fmt: skip
@click.pass_obj
def clean_cmd(obj: dict[str, Any], resource: str, reason: int) -> None:
    handle = load_handle(obj, resource, EXIT_FAIL)
    done(obj, handle, handle.clean(reason))


@resource_command("migrate", "Live-migrate the guest to another system.")
@click.argument("resource")
@click.option("--to", "target", required=True, help="target system name")
@click.pass_obj
def migrate_cmd(obj: dict[str, Any], resource: str, target: str) -> None:
    handle = load_handle(obj, resource, EXIT_FAIL)
    done(obj, handle, handle.migrate(target))


@resource_command("action", "Run an action: guestmigrated, vmconfigsync, DevScan.")
@click.argument("resource")
@click.argument("token")
@click.argument("args", nargs=-1)
@click.pass_obj
def action_cmd(obj: dict[str, Any], resource: str, token: str, args: tuple[str, ...]) -> None:
    handle = load_handle(obj, resource, EXIT_FAIL)
    done(obj, handle, handle.action(token, list(args)))
