"""The man page and the bash completion, rendered from the click definitions themselves,
so that they cannot drift from the CLI (the Debian package builds them; docs/cli.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
from collections.abc import Iterator

import click

SEE_ALSO = "virsh(1), crm(8), pcs(8), ocf-tester(8), kvmguest-net-reconfig(8)"


def walk(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[
    tuple[tuple[str, ...], click.Command]
]:  # fmt: skip
    """Every visible command under ``group`` as (path, command), depth first, by name."""
    for name in sorted(group.commands):
        cmd = group.commands[name]
        if cmd.hidden:
            continue
        path = (*prefix, name)
        yield path, cmd
        if isinstance(cmd, click.Group):
            yield from walk(cmd, path)


def _roff(text: str) -> str:
    """Text safe in a roff line: backslashes and hyphens escaped, no leading dot/quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + ln) if ln[:1] in (".", "'") else ln for ln in text.splitlines())


def _usage(path: tuple[str, ...], cmd: click.Command, ctx: click.Context) -> str:
    pieces = cmd.collect_usage_pieces(ctx)
    return " ".join(["kvmguest", *path, *pieces])


def _options(
    cmd: click.Command, ctx: click.Context, globals_too: bool = True
) -> list[tuple[str, str]]:
    out = []
    for param in cmd.get_params(ctx):
        if not isinstance(param, click.Option):
            continue  # arguments are in the usage line
        if not globals_too and (param.name or "").startswith("_g_"):
            continue  # the global options, listed once under GLOBAL OPTIONS
        record = param.get_help_record(ctx)
        if record is not None:
            out.append(record)
    return out


def render_man(group: click.Group, prog: str, version: str, date: dt.date) -> str:
    """kvmguest(1) in man(7) roff: synopsis, global options, every command and its options."""
    ctx = click.Context(group, info_name=prog)
    lines = [
        f'.TH {prog.upper()} 1 "{date.isoformat()}" "{prog} {version}" "User Commands"',
        ".SH NAME",
        f"{prog} \\- {_roff((group.help or '').splitlines()[0].split(': ', 1)[-1])}",
        ".SH SYNOPSIS",
        f".B {prog}",
        "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR] [\\fIGLOBAL OPTIONS\\fR]",
        ".SH DESCRIPTION",
        _roff(
            "kvmguest keeps KVM guests (through libvirt) and RHEV/oVirt VMs (through the "
            "RHV-M REST API) available. It re-implements the VCS KVMGuest agent: one-shot "
            "entry points with the VCS exit codes, an agent daemon, and Pacemaker resource "
            "agents (ocf:kvmguest:TYPE). The global options may stand before or after any "
            "command name. With --json every command prints one JSON object: its keys and "
            '"ok": true, or {"ok": false, "error": {"message", "diagnostics"}}.'
        ),
        ".SH GLOBAL OPTIONS",
    ]
    for opts, help_text in _options(group, ctx):
        lines += [".TP", f"\\fB{_roff(opts)}\\fR", _roff(help_text)]
    lines.append(".SH COMMANDS")
    for path, cmd in walk(group):
        sub = click.Context(cmd, info_name=path[-1], parent=ctx)
        lines += [".SS " + _roff(" ".join(path)), f".B {_roff(_usage(path, cmd, sub))}", ".PP"]
        lines.append(_roff(cmd.help or cmd.short_help or ""))
        if isinstance(cmd, click.Group):
            continue
        for opts, help_text in _options(cmd, sub, globals_too=False):
            lines += [".TP", f"\\fB{_roff(opts)}\\fR", _roff(help_text)]
    lines += [
        ".SH EXIT STATUS",
        _roff(
            "monitor: 100 offline, 101..110 online with confidence 10..100, 200 intentional "
            "offline, 99 unknown (also for a configuration that cannot be read). Every other "
            "command: 0 success, 1 failure, 2 a usage error."
        ),
        ".SH ENVIRONMENT",
        _roff(
            "KVMGUEST_CONFIG (-c), KVMGUEST_SYSTEM (--system), KVMGUEST_LIBVIRT_URI "
            "(--connect), KVMGUEST_SOCKET (the agent's control socket), KVMGUEST_KEY_FILE "
            "(encrypt)."
        ),
        ".SH FILES",
        _roff(
            "/etc/kvmguest/main.cf, /etc/kvmguest/secret.key, /run/kvmguest/agent.sock, "
            "/var/lib/kvmguest/agent.db, /usr/lib/ocf/resource.d/kvmguest/, "
            "/usr/share/doc/kvmguest/"
        ),
        ".SH SEE ALSO",
        _roff(SEE_ALSO),
        "",
    ]
    return "\n".join(lines)


def render_man_argparse(parser: argparse.ArgumentParser, section: int, version: str,
                        date: dt.date, description: str) -> str:  # fmt: skip
    """The man page of an argparse program (kvmguest-net-reconfig): its own help text."""
    prog = parser.prog
    return "\n".join([
        f'.TH {prog.upper()} {section} "{date.isoformat()}" "kvmguest {version}" '
        '"System Administration"',
        ".SH NAME",
        f"{prog} \\- {_roff(description)}",
        ".SH SYNOPSIS",
        ".nf",
        _roff(parser.format_usage().removeprefix("usage: ").strip()),
        ".fi",
        ".SH DESCRIPTION",
        _roff(parser.description or description),
        ".SH OPTIONS",
        ".nf",
        _roff(parser.format_help().split("\n\n", 2)[-1].strip()),
        ".fi",
        ".SH SEE ALSO",
        _roff("kvmguest(1), /usr/share/doc/kvmguest-guest/disaster-recovery.md"),
        "",
    ])  # fmt: skip


def _words(cmd: click.Command) -> list[str]:
    """What may follow the command: its subcommands, options and choice values."""
    words: list[str] = []
    if isinstance(cmd, click.Group):
        words += sorted(n for n, c in cmd.commands.items() if not c.hidden)
    for param in cmd.params:
        if isinstance(param, click.Option):
            words += [*param.opts, *param.secondary_opts]
        elif isinstance(param.type, click.Choice):
            words += [str(c) for c in param.type.choices]
    if not isinstance(cmd, click.Group) or cmd.params:
        words.append("--help")
    return words


def render_bash(group: click.Group, prog: str) -> str:
    """A static bash completion: commands, subcommands, options, choices; files after -c,
    -o, --db, --key-file, --dir."""
    fn = "_" + prog.replace("-", "_")
    paths = [" ".join(path) for path, _ in walk(group)]
    known = "\n".join(f"            {shlex.quote(p)}) path=$next ;;" for p in paths)
    cases = "\n".join(
        f"        {shlex.quote(' '.join(path))}) words={shlex.quote(' '.join(_words(cmd)))} ;;"
        for path, cmd in walk(group)
    )
    top = shlex.quote(" ".join(_words(group)))
    return (
        f"# bash completion for {prog} -- generated from its click definitions; do not edit.\n"
        f"{fn}() {{\n"
        "    local cur prev path='' next w words i\n"
        "    cur=${COMP_WORDS[COMP_CWORD]}\n"
        "    prev=${COMP_WORDS[COMP_CWORD-1]}\n"
        "    case $prev in\n"
        "        -c|--config|-o|--output|--db|--key-file|--socket|--workdir|--dir|--units-dir)\n"
        '            COMPREPLY=($(compgen -f -- "$cur")); return ;;\n'
        "    esac\n"
        "    # The command path: the words that name a (sub)command; options are skipped.\n"
        "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
        "        w=${COMP_WORDS[i]}\n"
        "        [[ $w == -* ]] && continue\n"
        '        next="${path:+$path }$w"\n'
        "        case $next in\n"
        f"{known}\n"
        "        esac\n"
        "    done\n"
        "    case $path in\n"
        f"        '') words={top} ;;\n"
        f"{cases}\n"
        "        *) words='' ;;\n"
        "    esac\n"
        '    COMPREPLY=($(compgen -W "$words" -- "$cur"))\n'
        "}\n"
        f"complete -o default -F {fn} {prog}\n"
    )
