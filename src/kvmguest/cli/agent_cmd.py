"""``kvmguest agent`` and the commands that talk to it over its control socket."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any, NoReturn

import click

from kvmguest.cli.app import cli, emit, fail, finish, iso_time, print_table
from kvmguest.cli.commands import show_resource

# Kept here, not imported from kvmguest.daemon: the one-shot entry points load this module
# too, and must not pay for asyncio.
DEFAULT_SOCKET = "/run/kvmguest/agent.sock"
COMPANION_SOCKET = "/run/kvmguest/pacemaker.sock"

socket_option = click.option(
    "--socket", "socket_path", envvar="KVMGUEST_SOCKET", default=DEFAULT_SOCKET,
    show_default=True, help="the agent's control socket",
)  # fmt: skip


@cli.command("agent")
@socket_option
@click.option("--db", envvar="KVMGUEST_DB", default="/var/lib/kvmguest/agent.db",
              show_default=True, help="state and history (SQLite)")  # fmt: skip
@click.option("--socket-group", help="group allowed on the control socket (mode 0660)")
@click.option("--metrics-port", type=int,
              help="serve Prometheus metrics on this port (needs prometheus-client)")  # fmt: skip
@click.option("--metrics-addr", default="127.0.0.1", show_default=True)
@click.option("--no-autostart", is_flag=True, help="do not bring AutoStartList groups online")
@click.option("--check", is_flag=True, help="validate the configuration and exit")
@click.option("--pacemaker", is_flag=True,
              help="observe-only companion of Pacemaker on this node (docs/pacemaker.md); "
                   f"its socket defaults to {COMPANION_SOCKET}")  # fmt: skip
@click.option("--agent-socket", default=DEFAULT_SOCKET, show_default=True,
              help="with --pacemaker: refuse to run while this agent socket answers")  # fmt: skip
@click.pass_context
def agent_cmd(
    cctx: click.Context, socket_path: str, db: str, socket_group: str | None,
    metrics_port: int | None, metrics_addr: str, no_autostart: bool, check: bool,
    pacemaker: bool, agent_socket: str,
) -> None:  # fmt: skip
    """Run the agent daemon for this system's resources (or, with --pacemaker, the
    observe-only companion of Pacemaker)."""
    import asyncio
    import logging

    obj: dict[str, Any] = cctx.obj
    if pacemaker:
        source = cctx.get_parameter_source("socket_path")
        default = os.environ.get("KVMGUEST_COMPANION_SOCKET", COMPANION_SOCKET)
        explicit = source is not click.core.ParameterSource.DEFAULT
        _companion(obj, socket_path if explicit else default, socket_group, agent_socket)

    from kvmguest.agents.base import Env
    from kvmguest.agents.coverage import groups_not_run
    from kvmguest.agents.loader import Loaded
    from kvmguest.daemon import logs, metrics
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
    # --check answers valid (0) or invalid (1); the daemon exits EX_CONFIG, which the unit's
    # RestartPreventExitStatus keeps systemd from restarting every few seconds.
    invalid = 1 if check else EX_CONFIG
    try:
        loaded = Loaded.from_file(env.config)
    except ConfigInvalid as e:
        fail(obj, f"{env.config} is invalid; not starting", e.diagnostics, code=invalid)
    except OSError as e:
        fail(obj, f"cannot read {env.config}: {e.strerror}; not starting", code=invalid)
    try:
        loaded.require_system(env.system)
    except KeyError as e:
        fail(obj, f"{e.args[0]}; not starting", code=invalid)
    here = [
        g for g, b in loaded.cfg.groups.items()
        if not isinstance(b.attrs.get("SystemList"), dict)
        or env.system in b.attrs["SystemList"]
    ]  # fmt: skip
    not_run = {g: why for g, why in groups_not_run(loaded).items() if g in here}
    mine = [g for g in here if g not in not_run]
    if check:
        emit(obj, {"config": env.config, "system": env.system, "groups": mine,
                   "not_run": not_run},
             f"{env.config}: valid; system {env.system} runs group(s): "
             f"{', '.join(mine) or 'none'}" + not_run_text(not_run))  # fmt: skip
    if metrics_port is not None and not metrics.AVAILABLE:
        fail(obj, f"--metrics-port: {metrics.MISSING}", code=EX_CONFIG)
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
        fail(obj, f"{e}; not starting", code=e.code)
    except Fatal:
        finish(EX_SOFTWARE)  # logged by the daemon, in one line
    finish(0)


def _companion(obj: dict[str, Any], path: str, group: str | None, agent_socket: str) -> NoReturn:
    import asyncio

    from kvmguest.daemon.companion import CompanionError, pacemaker_node, refuse_beside_agent, serve

    try:
        refuse_beside_agent(agent_socket)
    except CompanionError as e:
        fail(obj, f"--pacemaker: {e}")
    env = obj["env"]
    # This node's name as Pacemaker knows it, unless --system (or KVMGUEST_SYSTEM) says.
    node = env.system if obj.get("system_given") else (pacemaker_node() or env.system)
    asyncio.run(serve(node, path, group, ready=lambda: sd_notify("READY=1")))
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


def _call(obj: dict[str, Any], socket_path: str, cmd: str, **args: Any) -> dict[str, Any]:
    """One request to the agent; on any failure prints it (JSON envelope or text) and exits."""
    from kvmguest.daemon.control import ControlError, request

    final: dict[str, Any] = {}
    try:
        for msg in request(socket_path, cmd, timeout=3600, **args):
            if "progress" in msg:
                if not obj["json"]:
                    click.echo(f"  {msg['progress']}", err=True)
                continue
            final = msg
    except ControlError as e:
        fail(obj, str(e))
    if not final.get("ok"):
        if final.get("output") and not obj["json"]:
            click.echo(final["output"])  # a failed action's report (DevScan's missing devices)
        why = final.get("error") or final.get("message") or final.get("log") or "failed"
        extra = {k: v for k, v in final.items() if k not in ("ok", "error")}
        fail(obj, str(why), extra=extra)
    return final


def _time(ts: float | None) -> str:
    return iso_time(ts) or "-"


def status_data(reply: dict[str, Any]) -> dict[str, Any]:
    """The one `status --json` document (docs/cli.md): timestamps as ISO 8601, the fields
    a daemon may not report yet present as null."""
    frozen: dict[str, bool] = {}
    resources = []
    for r in reply.get("resources", []):
        frozen[r["group"]] = frozen.get(r["group"], False) or bool(r.get("frozen"))
        resources.append({**r, "since": iso_time(r.get("since")),
                          "last_monitor": iso_time(r.get("last_monitor")),
                          "admin_wait": r.get("admin_wait")})  # fmt: skip
    groups = {}
    for g, state in reply.get("groups", {}).items():
        if isinstance(state, dict):
            groups[g] = state
        else:
            groups[g] = {"state": state, "frozen": frozen.get(g, False)}
    return {
        "system": reply.get("system"),
        "connected": bool(reply.get("connected")),
        "state_saved": reply.get("state_saved"),
        "state_error": reply.get("state_error"),
        "reset_at": reply.get("reset_at"),
        "resources": resources,
        "groups": groups,
        "not_run": reply.get("not_run", {}),
    }


def not_run_text(not_run: dict[str, str]) -> str:
    """One line per group the daemon does not run, with the reason."""
    return "".join(f"\ngroup {g} is not run: {why}" for g, why in not_run.items())


def status_text(data: dict[str, Any]) -> None:
    title = f"kvmguest agent on {data['system']}"
    if not data["connected"]:
        title += " (libvirt NOT connected)"
    columns = ["resource", "group", "state", "confidence", "since", "last monitor"]
    waiting = any(r["admin_wait"] for r in data["resources"])
    if waiting:
        columns.append("admin wait")
    rows = []
    for r in data["resources"]:
        row = [r["resource"], r["group"], r["state"] + (" (frozen)" if r["frozen"] else ""),
               str(r["confidence"]) if r["state"] == "ONLINE" else "-",
               r["since"] or "-", r["last_monitor"] or "-"]  # fmt: skip
        if waiting:
            row.append(r["admin_wait"] or "-")
        rows.append(row)
    print_table(columns, rows, title=title)
    for g, s in data["groups"].items():
        click.echo(f"group {g}: {s['state']}" + (" (frozen)" if s["frozen"] else ""))
    if data["not_run"]:
        click.echo(not_run_text(data["not_run"]).lstrip("\n"))
    for r in data["resources"]:
        if r["admin_wait"]:
            click.echo(f"{r['resource']} waits for the operator: {r['admin_wait']}")
    if data["reset_at"]:
        click.echo(f"state lost, reset at {data['reset_at']}: every group is frozen until "
                   "an operator unfreezes it")  # fmt: skip
    if data["state_saved"] is False:
        click.echo(f"state NOT being saved: {data['state_error'] or 'database error'} "
                   "(monitoring and recovery go on)")  # fmt: skip


@cli.command("status")
@click.argument("resource", required=False)
@socket_option
@click.pass_obj
def status_cmd(obj: dict[str, Any], resource: str | None, socket_path: str) -> None:
    """Show the resources the agent runs (a table, or --json)."""
    data = status_data(_call(obj, socket_path, "status", resource=resource))
    if obj["json"]:
        emit(obj, data)
    status_text(data)
    finish(0)


@cli.command("history")
@click.argument("resource", required=False)
@click.option("-n", "limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="the last N rows")  # fmt: skip
@socket_option
@click.pass_obj
def history_cmd(obj: dict[str, Any], resource: str | None, limit: int, socket_path: str) -> None:
    """Show transitions and entry-point results, oldest first."""
    reply = _call(obj, socket_path, "history", resource=resource, limit=limit)
    rows = [{**row, "ts": iso_time(row["ts"])} for row in reply["history"]]
    if obj["json"]:
        emit(obj, {"history": rows})
    for row in rows:
        click.echo(f"{row['ts'] or '-'}  {row['resource']:<12} {row['kind']:<9} {row['detail']}")
    finish(0)


def _done(obj: dict[str, Any], reply: dict[str, Any], text: str) -> NoReturn:
    emit(obj, {k: v for k, v in reply.items() if k != "ok"}, text)


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
    reply = _call(obj, socket_path, "group", op=op, group=group, to=target)
    state = reply.get("group_state", "done")
    done_as = {"freeze": f"frozen ({state})", "unfreeze": f"unfrozen ({state})"}
    text = reply.get("message") or f"group {group}: {done_as.get(op, state)}"
    _done(obj, reply, text)


@cli.command("resource")
@click.argument("op", type=click.Choice(
    ["show", "probe", "clear", "online", "offline", "action"]))  # fmt: skip
@click.argument("resource")
@click.argument("args", nargs=-1)
@socket_option
@click.pass_obj
def resource_cmd(
    obj: dict[str, Any], op: str, resource: str, args: tuple[str, ...], socket_path: str
) -> None:
    """Show a resource's attributes (show: from main.cf, no agent needed), or ask the agent
    to probe, clear, online, offline it or run an action (TOKEN [ARG...])."""
    if op == "show":
        if args:
            raise click.UsageError("show takes no arguments after RESOURCE")
        show_resource(obj, resource)
    extra: dict[str, Any] = {}
    if op == "action":
        if not args:
            raise click.UsageError("action needs a TOKEN")
        extra = {"token": args[0], "args": list(args[1:])}
    reply = _call(obj, socket_path, "resource", op=op, resource=resource, **extra)
    if reply.get("output") and not obj["json"]:
        click.echo(reply["output"])
    _done(obj, reply, reply.get("message") or reply.get("log") or reply.get("state", "done"))
