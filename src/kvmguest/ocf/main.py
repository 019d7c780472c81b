"""The OCF resource agents' entry: ``python -m kvmguest.ocf ACTION``, or what an installed
shell wrapper runs for every action but meta-data (:func:`run`).

The type comes from the wrapper (``run(TYPE)``), else from ``OCF_RESOURCE_TYPE``, else it is
the only agent with a Pacemaker side; its agent is found through the registry. The imports
are deferred and chosen per action: a monitor the agent can answer on its lean path (for
KVMGuest: libvirt and the state table only) never loads the configuration model; everything
else does. The wrapper runs Python without ``site`` (``-S``: its .pth processing costs the
monitor ~2 ms) and puts kvmguest's and its drivers' directories on sys.path itself; the full
path runs ``site`` first, for whatever else the installation's .pth files set up.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing costs the lean monitor path
if TYPE_CHECKING:
    # Not at run time either: collections.abc pulls in collections (~3 ms a monitor).
    from collections.abc import Mapping, Sequence

    from kvmguest.agents.ocf_interface import OcfSide

USAGE = (
    "usage: {type} {{start|stop|monitor|migrate_to|migrate_from|validate-all|meta-data|"
    "reload|reload-agent|usage}}"
)
# OCF exit codes used before kvmguest.agents.ocf_interface is imported.
_SUCCESS, _ERR_GENERIC, _ERR_ARGS, _ERR_UNIMPLEMENTED, _ERR_INSTALLED = 0, 1, 2, 3, 5
_DEGRADED = 190
_NOTIFIED = ("start", "stop", "migrate_to", "migrate_from")
_KNOWN = {
    "start",
    "stop",
    "monitor",
    "status",
    "migrate_to",
    "migrate_from",
    "validate-all",
    "reload",
    "reload-agent",
}


def _type_label(type_name: str | None, environ: Mapping[str, str]) -> str:
    name = type_name or environ.get("OCF_RESOURCE_TYPE")
    if name:
        return name
    from kvmguest.agents import registry

    try:
        return registry.default_ocf_agent().type_name
    except KeyError:
        return "TYPE"


def _side(type_name: str | None, environ: Mapping[str, str]) -> OcfSide:
    from kvmguest.agents import registry
    from kvmguest.agents.ocf_interface import Ocf, OcfError

    name = type_name or environ.get("OCF_RESOURCE_TYPE")
    try:
        agent = registry.require(name) if name else registry.default_ocf_agent()
    except KeyError as e:
        raise OcfError(Ocf.ERR_CONFIGURED, str(e.args[0])) from None
    side = agent.ocf()
    if side is None:
        raise OcfError(Ocf.ERR_CONFIGURED, f"type {agent.type_name} has no OCF agent")
    return side


def _quick(type_name: str | None, environ: Mapping[str, str]) -> tuple[int, str] | None:
    """The agent's quickest monitor, before the OCF interface is imported (None: none)."""
    from kvmguest.agents import registry

    name = type_name or environ.get("OCF_RESOURCE_TYPE")
    agent = registry.get(name) if name else None
    return agent.ocf_quick_monitor(environ) if agent is not None else None


def _act(action: str, environ: Mapping[str, str], type_name: str | None) -> tuple[int, str]:
    if action in ("monitor", "status"):
        quick = _quick(type_name, environ)
        if quick is not None:
            return quick
    from kvmguest.agents.ocf_interface import OcfError

    try:
        side = _side(type_name, environ)
        env = side.from_environ(environ)
        if action in ("monitor", "status"):
            lean = side.lean_monitor(env)
            if lean is not None:
                return int(lean[0]), lean[1]
        _full_python()
        _setup_logging(environ)
        code, message = side.run(action, env)
        return int(code), message
    except OcfError as e:
        return int(e.code), str(e)
    except ImportError as e:
        # libvirt's binding, the RHV-M SDK or kvmguest itself is missing in this Python.
        return _ERR_INSTALLED, f"cannot import {e.name or e}: not installed for {sys.executable}"
    except Exception as e:
        import traceback  # only here: it costs the monitor path ~5 ms to import

        traceback.print_exc(file=sys.stderr)
        return _ERR_GENERIC, f"{action} failed: {type(e).__name__}: {e}"


def _full_python() -> None:
    """Run ``site`` if the wrapper skipped it: the full path imports many packages."""
    if sys.flags.no_site:
        import site

        site.main()


def _setup_logging(environ: Mapping[str, str]) -> None:
    import logging

    debug = environ.get("HA_debug", "0") not in ("", "0")
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="kvmguest: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    type_name: str | None = None,
) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    usage = USAGE.format(type=_type_label(type_name, env))
    if len(args) != 1:
        sys.stderr.write(usage + "\n")
        return _ERR_ARGS
    action = args[0]
    if action in ("usage", "help", "--help"):
        sys.stdout.write(usage + "\n")
        return _SUCCESS
    if action == "meta-data":
        from kvmguest.ocf.metadata import render

        sys.stdout.write(render(type_name=_type_label(type_name, env)))
        return _SUCCESS
    if action not in _KNOWN:
        # notify, promote, demote (not a promotable resource) and anything unknown.
        sys.stderr.write(f"kvmguest: action {action!r} is not implemented\n{usage}\n")
        return _ERR_UNIMPLEMENTED
    # The companion (kvmguest agent --pacemaker) is told of every planned change, so that it
    # never reports one as a failure, and of a running resource a direct monitor found.
    from kvmguest.ocf import companion_client

    seen = {**env, "OCF_RESOURCE_TYPE": _type_label(type_name, env)}
    if action in _NOTIFIED:
        companion_client.notify(seen, action, "pre")
    code, message = _act(action, env, type_name)
    if action in _NOTIFIED:
        companion_client.notify(seen, action, "post", code)
    elif code in (_SUCCESS, _DEGRADED) and env.get("OCF_RESKEY_CRM_meta_interval", "0") != "0":
        companion_client.notify(seen, "monitor", "post", code)
    if code == _SUCCESS:
        if action not in ("monitor", "status") and message:
            sys.stdout.write(f"kvmguest: {action}: {message}\n")
    else:
        prefix = env.get("OCF_EXIT_REASON_PREFIX") or "ocf-exit-reason:"
        # Pacemaker keeps one line as the exit reason (shown by crm_mon); keep it short.
        reason = " ".join(message.split())
        sys.stderr.write(f"{prefix}{reason[:400]}\n")
    return code


def run(type_name: str | None = None) -> None:
    """Run the action named in ``sys.argv`` for ``type_name`` and exit with its OCF code."""
    rc = main(type_name=type_name)
    sys.stdout.flush()
    sys.stderr.flush()
    # At once: a libvirt call abandoned past its deadline may still hold a worker thread.
    os._exit(rc)
