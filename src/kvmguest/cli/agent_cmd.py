"""``kvmguest agent`` and the commands that talk to it over its control socket."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sys
from typing import Any

import click

from kvmguest.cli.app import cli, config_option, finish

# Kept here, not imported from kvmguest.daemon: the one-shot entry points load this module
# too, and must not pay for asyncio.
DEFAULT_SOCKET = "/run/kvmguest/agent.sock"

socket_option = click.option(
    "--socket", "socket_path", envvar="KVMGUEST_SOCKET", default=DEFAULT_SOCKET,
    show_default=True, help="the agent's control socket",
)  # fmt: skip


@cli.command("agent")
@config_option
@socket_option
@click.option("--db", envvar="KVMGUEST_DB", default="/var/lib/kvmguest/agent.db",
              show_default=True, help="state and history (SQLite)")  # fmt: skip
@click.option("--socket-group", help="group allowed on the control socket (mode 0660)")
@click.option("--metrics-port", type=int, help="serve Prometheus metrics on this port")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True)
@click.option("--no-autostart", is_flag=True, help="do not bring AutoStartList groups online")
@click.option("--check", is_flag=True, help="validate the configuration and exit")
@click.pass_obj
def agent_cmd(
    obj: dict[str, Any], config: str | None, socket_path: str, db: str,
    socket_group: str | None, metrics_port: int | None, metrics_addr: str,
    no_autostart: bool, check: bool,
) -> None:  # fmt: skip
    """Run the agent daemon for this system's resources."""
    import asyncio
    import logging

    from kvmguest.agents.base import Env
    from kvmguest.agents.loader import Loaded
    from kvmguest.daemon import logs
    from kvmguest.daemon.service import (
        EX_CONFIG,
        EX_SOFTWARE,
        AgentOptions,
        Fatal,
        StartupError,
        serve,
    )
    from kvmguest.model.config import ConfigInvalid

    env: Env = obj["env"]
    if config:
        env = Env(config=config, system=env.system, uri=env.uri)
    try:
        loaded = Loaded.from_file(env.config)
    except ConfigInvalid as e:
        for d in e.diagnostics:
            click.echo(str(d), err=True)
        click.echo(f"kvmguest agent: {env.config} is invalid; not starting", err=True)
        # --check answers valid (0) or invalid (1); the daemon exits EX_CONFIG, which the
        # unit's RestartPreventExitStatus keeps systemd from restarting every few seconds.
        finish(1 if check else EX_CONFIG)
    mine = [
        g for g, b in loaded.cfg.groups.items()
        if not isinstance(b.attrs.get("SystemList"), dict)
        or env.system in b.attrs["SystemList"]
    ]  # fmt: skip
    if check:
        click.echo(f"{env.config}: valid; system {env.system} runs group(s): "
                   f"{', '.join(mine) or 'none'}")  # fmt: skip
        finish(0)
    opts = AgentOptions(env=env, socket=socket_path, db=db, group=socket_group,
                        metrics_port=metrics_port, metrics_addr=metrics_addr,
                        autostart=not no_autostart)  # fmt: skip
    # -v / -vv as the global option set them (app.py: WARNING less 10 per -v).
    logs.setup(max(0, (logging.WARNING - logging.getLogger().level) // 10))
    # Not asyncio.run(): its clean-up joins executor threads, and one stuck in a hung
    # libvirt call would keep a process alive that protects nothing. finish() exits now.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(
            serve(loaded, opts, ready=lambda: sd_notify("READY=1"), notify=sd_notify)
        )
    except StartupError as e:
        click.echo(f"kvmguest agent: {e}; not starting", err=True)
        finish(e.code)
    except Fatal:
        finish(EX_SOFTWARE)  # logged by the daemon, in one line
    finish(0)


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) how we are; a no-op when not started by systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):  # an abstract socket
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(state.encode())


def _call(socket_path: str, cmd: str, as_json: bool, **args: Any) -> dict[str, Any]:
    from kvmguest.daemon.control import ControlError, request

    final: dict[str, Any] = {}
    try:
        for msg in request(socket_path, cmd, timeout=3600, **args):
            if "progress" in msg:
                if not as_json:
                    click.echo(f"  {msg['progress']}", err=True)
                continue
            final = msg
    except ControlError as e:
        click.echo(f"kvmguest: {e}", err=True)
        finish(1)
    if not final.get("ok"):
        if as_json:
            click.echo(json.dumps(final))
        else:
            if final.get("output"):  # a failed action's report (e.g. DevScan's missing devices)
                click.echo(final["output"])
            why = final.get("error") or final.get("message") or final.get("log") or "failed"
            click.echo(f"kvmguest: {why}", err=True)
        finish(1)
    return final


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


@cli.command("status")
@click.argument("resource", required=False)
@socket_option
@click.pass_obj
def status_cmd(obj: dict[str, Any], resource: str | None, socket_path: str) -> None:
    """Show the resources the agent runs (a table, or --json)."""
    reply = _call(socket_path, "status", obj["json"], resource=resource)
    if obj["json"]:
        click.echo(json.dumps(reply))
        finish(0)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"kvmguest agent on {reply['system']}"
                  + ("" if reply["connected"] else " — libvirt NOT connected"))  # fmt: skip
    for col in ("resource", "group", "state", "confidence", "since", "last monitor"):
        table.add_column(col)
    for r in reply["resources"]:
        table.add_row(r["resource"], r["group"], r["state"] + (" (frozen)" if r["frozen"] else ""),
                      str(r["confidence"]) if r["state"] == "ONLINE" else "-",
                      _when(r["since"]), _when(r["last_monitor"]))  # fmt: skip
    Console(file=sys.stdout).print(table)
    for g, s in reply["groups"].items():
        click.echo(f"group {g}: {s}")
    for r in reply["resources"]:
        if r.get("admin_wait"):
            click.echo(f"{r['resource']} waits for the operator: {r['admin_wait']}")
    if reply.get("reset_at"):
        click.echo(f"state lost, reset at {reply['reset_at']}: every group is frozen until "
                   "an operator unfreezes it")  # fmt: skip
    if reply.get("state_saved") is False:
        click.echo(f"state NOT being saved: {reply.get('state_error') or 'database error'} "
                   "(monitoring and recovery go on)")  # fmt: skip
    finish(0)


@cli.command("history")
@click.argument("resource", required=False)
@click.option("-n", "limit", type=int, default=50, show_default=True)
@socket_option
@click.pass_obj
def history_cmd(obj: dict[str, Any], resource: str | None, limit: int, socket_path: str) -> None:
    """Show transitions and entry-point results, oldest first."""
    reply = _call(socket_path, "history", obj["json"], resource=resource, limit=limit)
    if obj["json"]:
        click.echo(json.dumps(reply["history"]))
    else:
        for row in reply["history"]:
            click.echo(f"{_when(row['ts'])}  {row['resource']:<12} {row['kind']:<9} "
                       f"{row['detail']}")  # fmt: skip
    finish(0)


@cli.command("group")
@click.argument("op", type=click.Choice(
    ["online", "offline", "switch", "clear", "freeze", "unfreeze"]))  # fmt: skip
@click.argument("group")
@click.option("--to", "target", help="switch: the system to live-migrate the group to")
@socket_option
@click.pass_obj
def group_cmd(
    obj: dict[str, Any], op: str, group: str, target: str | None, socket_path: str
) -> None:
    """Operate a service group on this system."""
    if op == "switch" and not target:
        raise click.UsageError("switch needs --to SYSTEM")
    reply = _call(socket_path, "group", obj["json"], op=op, group=group, to=target)
    click.echo(json.dumps(reply) if obj["json"] else f"group {group}: "
               f"{reply.get('group_state', 'done')}")  # fmt: skip
    finish(0)


@cli.command("resource")
@click.argument("op", type=click.Choice(["probe", "clear", "online", "offline", "action"]))
@click.argument("resource")
@click.argument("args", nargs=-1)
@socket_option
@click.pass_obj
def resource_cmd(
    obj: dict[str, Any], op: str, resource: str, args: tuple[str, ...], socket_path: str
) -> None:
    """Probe, clear, online, offline a resource, or run an action (TOKEN [ARG...])."""
    extra: dict[str, Any] = {}
    if op == "action":
        if not args:
            raise click.UsageError("action needs a TOKEN")
        extra = {"token": args[0], "args": list(args[1:])}
    reply = _call(socket_path, "resource", obj["json"], op=op, resource=resource, **extra)
    if obj["json"]:
        click.echo(json.dumps(reply))
    else:
        if reply.get("output"):
            click.echo(reply["output"])
        click.echo(reply.get("message") or reply.get("log") or reply.get("state", "done"))
    finish(0)
