"""libvirt connections: opened under a deadline, errors classified by code and domain.

Never by message text: libvirt's messages are translated and change between releases.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt
from kvmguest.deadline import Deadline, DeadlineExceeded, call_with_deadline
from kvmguest.errors import AgentError, Unreachable

T = TypeVar("T")

# Errors that mean "the daemon (or the link to it) is gone", not "the request was bad".
_CONNECTION_CODES = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
}
_CONNECTION_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}

_event_lock = threading.Lock()
_event_impl: str | None = None


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error on stderr by default; we report them ourselves."""


libvirt.registerErrorHandler(_quiet, None)


def use_default_event_loop() -> None:
    """Run libvirt's own event loop in a daemon thread (one-shot commands).

    Must happen before the first connection is opened. The agent daemon registers
    libvirtaio instead and then calls :func:`mark_event_impl`.
    """
    global _event_impl
    with _event_lock:
        if _event_impl is not None:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_impl = "default"


def mark_event_impl(name: str) -> None:
    global _event_impl
    with _event_lock:
        _event_impl = name


def is_connection_error(err: libvirt.libvirtError) -> bool:
    code = err.get_error_code()
    return code in _CONNECTION_CODES or (
        err.get_error_domain() in _CONNECTION_DOMAINS and code == libvirt.VIR_ERR_INTERNAL_ERROR
    )


def error_code(err: libvirt.libvirtError) -> int:
    return int(err.get_error_code() or 0)


def describe(err: libvirt.libvirtError) -> str:
    msg = err.get_error_message() or str(err)
    return " ".join(msg.split())


def bounded(fn: Callable[[], T], deadline: Deadline, what: str, uri: str) -> T:
    """Run a libvirt call under the deadline; connection trouble becomes Unreachable."""
    try:
        return call_with_deadline(fn, deadline, what)
    except DeadlineExceeded as e:
        raise Unreachable(f"libvirt at {uri}: {e}") from None
    except libvirt.libvirtError as e:
        if is_connection_error(e):
            raise Unreachable(f"libvirt at {uri} unreachable: {describe(e)}") from None
        raise


def open_connection(uri: str, deadline: Deadline) -> Any:
    """Open ``uri`` within the deadline, with keepalive so a dead peer is noticed."""

    def do_open() -> Any:
        conn = libvirt.open(uri)
        if not uri.startswith("test:"):
            # Local drivers without keepalive support are fine without it.
            with contextlib.suppress(libvirt.libvirtError):
                conn.setKeepAlive(5, 3)
        return conn

    try:
        return call_with_deadline(do_open, deadline, f"connect to {uri}")
    except DeadlineExceeded as e:
        raise Unreachable(f"libvirt at {uri}: {e}") from None
    except libvirt.libvirtError as e:
        raise Unreachable(f"cannot connect to libvirt at {uri}: {describe(e)}") from None


def agent_error(what: str, err: libvirt.libvirtError) -> AgentError:
    if is_connection_error(err):
        return Unreachable(f"{what}: libvirt unreachable: {describe(err)}")
    return AgentError(f"{what}: {describe(err)}")
