"""The OCF resource agent's entry: ``python -m kvmguest.ocf ACTION``, or what the installed
shell wrapper runs for every action but meta-data (:func:`run`).

The imports are deferred and chosen per action: a monitor whose parameters describe a KVM
guest takes the lean path (:mod:`kvmguest.ocf.fastmon`), which imports libvirt and the state
table only; everything else loads the entry points and the configuration model. The wrapper
runs Python without ``site`` (``-S``: its .pth processing costs the monitor ~2 ms) and puts
kvmguest's and libvirt's directories on sys.path itself; the full path runs ``site`` first,
for whatever else the installation's .pth files set up.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

USAGE = (
    "usage: KVMGuest {start|stop|monitor|migrate_to|migrate_from|validate-all|meta-data|"
    "reload|reload-agent|usage}"
)
# OCF exit codes used before kvmguest.ocf.codes is imported.
_SUCCESS, _ERR_GENERIC, _ERR_ARGS, _ERR_UNIMPLEMENTED, _ERR_INSTALLED = 0, 1, 2, 3, 5
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


def _act(action: str, environ: Mapping[str, str]) -> tuple[int, str]:
    from kvmguest.ocf.codes import OcfError

    try:
        from kvmguest.ocf.params import from_environ

        env = from_environ(environ)
        if action in ("monitor", "status"):
            from kvmguest.ocf import fastmon

            if fastmon.applies(env):
                code, message = fastmon.monitor(env)
                return int(code), message
        _full_python()
        _setup_logging(environ)
        from kvmguest.ocf.agent import run

        code, message = run(action, env)
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


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    if len(args) != 1:
        sys.stderr.write(USAGE + "\n")
        return _ERR_ARGS
    action = args[0]
    if action in ("usage", "help", "--help"):
        sys.stdout.write(USAGE + "\n")
        return _SUCCESS
    if action == "meta-data":
        from kvmguest.ocf.metadata import render

        sys.stdout.write(render())
        return _SUCCESS
    if action not in _KNOWN:
        # notify, promote, demote (not a promotable resource) and anything unknown.
        sys.stderr.write(f"kvmguest: action {action!r} is not implemented\n{USAGE}\n")
        return _ERR_UNIMPLEMENTED
    code, message = _act(action, env)
    if code == _SUCCESS:
        if action not in ("monitor", "status") and message:
            sys.stdout.write(f"kvmguest: {action}: {message}\n")
    else:
        prefix = env.get("OCF_EXIT_REASON_PREFIX") or "ocf-exit-reason:"
        # Pacemaker keeps one line as the exit reason (shown by crm_mon); keep it short.
        reason = " ".join(message.split())
        sys.stderr.write(f"{prefix}{reason[:400]}\n")
    return code


def run() -> None:
    """Run the action named in ``sys.argv`` and exit with its OCF code."""
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # At once: a libvirt call abandoned past its deadline may still hold a worker thread.
    os._exit(rc)
