"""The ``kvmguest`` command group, its global options and the helpers its commands share.

Every command module registers its commands on :data:`cli`; :mod:`kvmguest.cli.main`
imports them all. Exit codes follow the VCS script conventions (README, "Exit codes").

One contract for every command (docs/cli.md): the global options (``-c``, ``--system``,
``--connect``, ``--json``, ``-v``) stand before or after any command name, and with
``--json`` every command prints one JSON object: its documented keys plus ``"ok": true``,
or ``{"ok": false, "error": {"message", "diagnostics"}}``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import click

from kvmguest.agents import registry
from kvmguest.agents.base import Env, Handle, Outcome
from kvmguest.agents.loader import Loaded
from kvmguest.model.config import ConfigInvalid, Diagnostic

EXIT_FAIL = 1
EXIT_USAGE = 2


def finish(code: int) -> NoReturn:
    """Exit at once: a libvirt call abandoned past its deadline must not hold us."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# --- output -----------------------------------------------------------------------------


def as_json(obj: dict[str, Any] | None) -> bool:
    return bool(obj and obj.get("json"))


def iso_time(ts: float | None) -> str | None:
    """A daemon timestamp (seconds since the epoch) as ISO 8601 with the local offset."""
    if not ts:
        return None
    return dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def emit(obj: dict[str, Any], data: dict[str, Any], text: str | None = None) -> NoReturn:
    """A command's success: its keys plus ``"ok": true`` with --json, else ``text``."""
    if as_json(obj):
        click.echo(json.dumps({**data, "ok": True}))
    elif text is not None:
        click.echo(text)
    finish(0)


def error_envelope(message: str, diagnostics: Sequence[Diagnostic] = ()) -> dict[str, Any]:
    return {
        "ok": False,
        "error": {"message": message, "diagnostics": [d.as_dict() for d in diagnostics]},
    }


def fail(
    obj: dict[str, Any] | None,
    message: str,
    diagnostics: Sequence[Diagnostic] = (),
    code: int = EXIT_FAIL,
    extra: dict[str, Any] | None = None,
) -> NoReturn:
    """A command's failure: the envelope on stdout with --json, else each diagnostic and
    ``kvmguest: message`` on stderr. ``extra`` keys go beside ``error`` in the envelope."""
    if as_json(obj):
        # The extra keys (a failed entry point's output, the agent's answer) never replace
        # the envelope's own.
        click.echo(json.dumps({**(extra or {}), **error_envelope(message, diagnostics)}))
    else:
        for d in diagnostics:
            click.echo(str(d), err=True)
        click.echo(f"kvmguest: {message}", err=True)
    finish(code)


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None
) -> None:
    """A rich table on a terminal; else plain: one line per row, columns padded with
    spaces, no box drawing and no wrapping (so that ``| grep`` and ``| awk`` work)."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*row)
        Console(file=sys.stdout).print(table)
        return
    if title:
        click.echo(f"# {title}")
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    for line in [columns, *rows]:
        cells = [cell.replace("\n", " ") for cell in line]
        click.echo("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())


class Progress:
    """Progress of a long entry point on stderr, through rich, only on a terminal."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self._status: Any = None
        self._enabled = sys.stderr.isatty() and not as_json(obj)

    def __call__(self, msg: str) -> None:
        if not self._enabled:
            return
        if self._status is None:
            from rich.console import Console

            self._status = Console(stderr=True).status(msg)
            self._status.start()
        else:
            self._status.update(msg)

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def load_handle(obj: dict[str, Any], resource: str, fail_code: int) -> Handle:
    """The resource bound to this system through its type's agent; exits on an error."""
    env: Env = obj["env"]
    progress = Progress(obj)
    obj["progress"] = progress
    try:
        loaded = Loaded.from_file(env.config)
        kind = loaded.cfg.resource(resource).kind
        return registry.require(kind).runtime(env).bind(loaded, resource, progress=progress)
    except ConfigInvalid as e:
        fail(obj, f"{env.config} is invalid; nothing was done", e.diagnostics, fail_code)
    except KeyError as e:
        fail(obj, str(e.args[0]), code=fail_code)
    except OSError as e:
        fail(obj, f"cannot read {env.config}: {e.strerror}", code=fail_code)


def load_config(obj: dict[str, Any]) -> Loaded:
    """main.cf, parsed and validated; exits with the diagnostics when it is invalid."""
    env: Env = obj["env"]
    try:
        return Loaded.from_file(env.config)
    except ConfigInvalid as e:
        fail(obj, f"{env.config} is invalid", e.diagnostics)
    except OSError as e:
        fail(obj, f"cannot read {env.config}: {e.strerror}")


def report(obj: dict[str, Any], outcome: Outcome) -> NoReturn:
    progress = obj.get("progress")
    if isinstance(progress, Progress):
        progress.stop()
    data = {"message": outcome.message, "warnings": outcome.warnings, "output": outcome.output}
    if not outcome.ok:
        if not as_json(obj):
            for w in outcome.warnings:
                click.echo(f"WARNING: {w}", err=True)
            if outcome.output:
                click.echo(outcome.output)
        fail(obj, outcome.message, extra={"warnings": outcome.warnings, "output": outcome.output})
    if not as_json(obj):
        for w in outcome.warnings:
            click.echo(f"WARNING: {w}", err=True)
        if outcome.output:
            click.echo(outcome.output)
    emit(obj, data, outcome.message)


def done(obj: dict[str, Any], handle: Handle, outcome: Outcome) -> NoReturn:
    handle.close()  # RHEV: log out, or every one-shot leaves an SSO session behind
    report(obj, outcome)


# --- the global options, before or after the command ----------------------------------


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="kvmguest: %(levelname)s: %(message)s")
    root.setLevel(level)


def _check_config_path(config: str | None) -> None:
    if config and "://" in config:
        raise click.BadParameter(
            f"{config!r} looks like a libvirt URI: -c is the configuration file (main.cf); "
            "the libvirt URI is --connect URI",
            param_hint="'-c' / '--config'",
        )


def _global_params() -> list[click.Parameter]:
    """The global options as a command repeats them (no envvar: the group reads those)."""
    return [
        click.Option(["-c", "--config", "_g_config"],
                     help="main.cf (default $KVMGUEST_CONFIG, else /etc/kvmguest/main.cf)"),
        click.Option(["--system", "_g_system"], help="this system's name in main.cf"),
        click.Option(["--connect", "_g_uri"], help="libvirt URI of this host"),
        click.Option(["--json", "_g_json"], is_flag=True, help="machine-readable output"),
        click.Option(["-v", "--verbose", "_g_verbose"], count=True,
                     help="log more (-vv for debug)"),
    ]  # fmt: skip


def _apply_globals(ctx: click.Context) -> None:
    """Merge the global options given after a command (or a subgroup) name into ctx.obj."""
    p = ctx.params
    config, system, uri = p.pop("_g_config"), p.pop("_g_system"), p.pop("_g_uri")
    local_json, verbose = p.pop("_g_json"), p.pop("_g_verbose")
    obj = ctx.find_object(dict)
    if obj is None:  # invoked without the group (tests)
        obj = ctx.ensure_object(dict)
        obj.update(env=Env.from_environ(None, None, None), json=False, verbose=0)
    if local_json:
        obj["json"] = True
    if verbose:
        obj["verbose"] = obj.get("verbose", 0) + verbose
        _setup_logging(obj["verbose"])
    _check_config_path(config)
    env: Env = obj["env"]
    obj["env"] = Env(config=config or env.config, system=system or env.system, uri=uri or env.uri)
    obj["system_given"] = bool(system) or obj.get("system_given", False)


class _TakesGlobals(click.Command):
    """Accepts the global options after its name too (``kvmguest monitor --json RES``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(_global_params())

    def invoke(self, ctx: click.Context) -> Any:
        _apply_globals(ctx)
        return super().invoke(ctx)


class Command(_TakesGlobals):
    """A command that accepts the global options after its name too."""


class SubGroup(_TakesGlobals, click.Group):
    """A command group below the top (export, ocf): its commands take the global options,
    and so does the group itself (``kvmguest export --json pacemaker``)."""

    command_class = Command
    group_class = type  # its own subgroups are SubGroups too


class Group(click.Group):
    command_class = Command
    group_class = SubGroup


@click.group(cls=Group)
@click.option("-c", "--config", envvar="KVMGUEST_CONFIG",
              help="main.cf (default $KVMGUEST_CONFIG, else /etc/kvmguest/main.cf)")  # fmt: skip
@click.option("--connect", "uri", envvar="KVMGUEST_LIBVIRT_URI", help="libvirt URI of this host")
@click.option("--system", envvar="KVMGUEST_SYSTEM", help="this system's name in main.cf")
@click.option("--json", "json_output", is_flag=True, help="machine-readable output")
@click.option("-v", "--verbose", count=True, help="log more (-vv for debug)")
@click.version_option(package_name="kvmguest")
@click.pass_context
def cli(
    ctx: click.Context, config: str | None, uri: str | None, system: str | None,
    json_output: bool, verbose: int,
) -> None:  # fmt: skip
    """kvmguest: keeps KVM guests and RHEV/oVirt VMs available."""
    _setup_logging(verbose)
    _check_config_path(config)
    ctx.ensure_object(dict)
    ctx.obj.update(env=Env.from_environ(config, system, uri), json=json_output, verbose=verbose,
                   system_given=bool(system))  # fmt: skip


def resource_command(name: str, help_text: str) -> Callable[[Callable[..., Any]], Any]:
    """An entry-point command (every command takes the global options after its name)."""

    def wrap(fn: Callable[..., Any]) -> Any:
        return cli.command(name, help=help_text)(fn)

    return wrap
