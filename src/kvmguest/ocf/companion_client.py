"""The OCF agents' client of the Pacemaker companion (``kvmguest agent --pacemaker``).

Standard library only, and no import of kvmguest: the installed wrapper runs this file as
``python3 -I -S companion_client.py monitor`` for every recurring monitor, so what it
imports is the monitor's whole cost. It asks the companion for the resource's state and
exits with the OCF code the companion gives; when the companion does not run, does not
answer within a short bound or does not watch the resource, it exits with
:data:`FALLBACK` and the wrapper takes the direct path.

The OCF entry (:mod:`kvmguest.ocf.main`) also uses :func:`notify` to tell the companion
before and after start, stop, migrate_to and migrate_from, so that a planned stop or
migration is never reported to Pacemaker as a failure.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing and collections.abc cost every monitor a few ms
if TYPE_CHECKING:
    from collections.abc import Mapping

SOCKET_ENV = "KVMGUEST_COMPANION_SOCKET"
DEFAULT_SOCKET = "/run/kvmguest/pacemaker.sock"
# The wrapper's signal to take the direct path (not an OCF code).
FALLBACK = 254
# How long a monitor waits for the companion before it falls back (the companion answers in
# about a millisecond, or re-probes with its own bound below this one).
MONITOR_BOUND = 5.0
NOTIFY_BOUND = 1.0
RESKEY = "OCF_RESKEY_"
META = "OCF_RESKEY_CRM_meta_"


def socket_path(environ: Mapping[str, str]) -> str:
    return environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def _int(raw: str | None) -> int:
    try:
        return int(raw or 0)
    except ValueError:
        return 0


def invocation(environ: Mapping[str, str]) -> dict[str, object]:
    """The resource and its parameters as Pacemaker gave them to this action."""
    params = {
        k[len(RESKEY) :]: v
        for k, v in environ.items()
        if k.startswith(RESKEY) and not k.startswith(META) and k != RESKEY + "crm_feature_set"
    }
    return {
        "type": environ.get("OCF_RESOURCE_TYPE", ""),
        "resource": environ.get("OCF_RESOURCE_INSTANCE", ""),
        "params": params,
        "interval_ms": _int(environ.get(META + "interval")),
        "timeout_ms": _int(environ.get(META + "timeout")),
        "check_level": _int(environ.get("OCF_CHECK_LEVEL")),
    }


def encode(value: object) -> str:
    """JSON text of ``value`` (str, int, bool, None, dict, list), without the json module:
    importing json costs every monitor ~7 ms of a ~10 ms budget."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        out = []
        for ch in value:
            if ch in ('"', "\\"):
                out.append("\\" + ch)
            elif ch < " " or ch == "\x7f" or "\ud800" <= ch <= "\udfff":
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{encode(str(k))}: {encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(encode(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__}")


def exchange(path: str, message: dict[str, object], bound: float) -> bytes | None:
    """Send one request line, read one reply line; None when there is no answer in time.
    The C socket module: ``socket`` (with enum and selectors) costs ~6 ms more."""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(bound)
        sock.connect(path)
        sock.sendall(encode(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data
    except OSError:
        return None
    finally:
        sock.close()


def ask(path: str, message: dict[str, object], bound: float) -> dict[str, object] | None:
    """One request, one reply as a dict; None when the companion cannot answer in time."""
    data = exchange(path, message, bound)
    if data is None:
        return None
    import json

    try:
        reply = json.loads(data)
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


def monitor_rc(data: bytes) -> int | None:
    """The ``rc`` of a monitor reply, read without the json module: the companion writes
    ``{"ok": true, "rc": N, "reason": ...}`` (anything else: None, and json decides)."""
    head = b'{"ok": true, "rc": '
    if not data.startswith(head):
        return None
    digits = data[len(head) : len(head) + 4].split(b",")[0]
    return int(digits) if digits.isdigit() else None


def notify(environ: Mapping[str, str], action: str, phase: str, rc: int | None = None) -> None:
    """Tell the companion of an action (best effort: it may not run at all)."""
    path = socket_path(environ)
    if not os.path.exists(path):
        return
    ask(path, {"cmd": "notify", "action": action, "phase": phase, "rc": rc,
               **invocation(environ)}, NOTIFY_BOUND)  # fmt: skip


def monitor(environ: Mapping[str, str]) -> int:
    """The OCF code of a monitor answered by the companion, or FALLBACK."""
    if _int(environ.get("OCF_CHECK_LEVEL")) >= 10:
        return FALLBACK  # the deep check (DevScan) is the direct path's
    data = exchange(socket_path(environ), {"cmd": "monitor", **invocation(environ)},
                    MONITOR_BOUND)  # fmt: skip
    if data is None:
        return FALLBACK
    rc = monitor_rc(data)
    if rc == 0:
        return 0  # the common case: no json, no exit reason
    import json

    try:
        reply = json.loads(data)
    except ValueError:
        return FALLBACK
    rc = reply.get("rc") if isinstance(reply, dict) and reply.get("ok") else None
    if not isinstance(rc, int) or isinstance(rc, bool):
        return FALLBACK
    if rc != 0:
        prefix = environ.get("OCF_EXIT_REASON_PREFIX") or "ocf-exit-reason:"
        reason = " ".join(str(reply.get("reason", "")).split())
        sys.stderr.write(f"{prefix}{reason[:400]}\n")
    return rc


def main() -> None:
    """The wrapper's entry: ``companion_client monitor`` (or status)."""
    if len(sys.argv) != 2 or sys.argv[1] not in ("monitor", "status"):
        sys.exit(FALLBACK)
    sys.exit(monitor(os.environ))


if __name__ == "__main__":
    main()
