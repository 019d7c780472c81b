"""The lean container monitor: one ``GET /containers/NAME/json`` over the engine's socket
with the standard library alone (``import docker`` costs a process ~130 ms; this whole path
~1 ms of imports). The same state table as the full monitor (:mod:`.table`); the tests run
both on the same containers and compare."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import quote, urlsplit

from kvmguest.agents.docker.table import container_state
from kvmguest.model import states
from kvmguest.model.states import MonitorResult

API_VERSION = "1.41"  # as engine_api's


def budget(timeout_ms: int | None, default: float) -> float:
    """Seconds an action may use: the op timeout less a margin to report before the kill."""
    if timeout_ms is None or timeout_ms <= 0:
        return default
    seconds = timeout_ms / 1000
    return max(1.0, seconds - min(5.0, seconds / 10))


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _connection(host: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(host)
    if parts.scheme == "unix":
        return _UnixConnection(parts.path, timeout)
    return http.client.HTTPConnection(parts.hostname or "localhost", parts.port, timeout=timeout)


def inspect(host: str, name: str, timeout: float) -> tuple[int, dict[str, object] | None]:
    """(HTTP status, document); raises OSError (refused, absent, timed out)."""
    conn = _connection(host, timeout)
    try:
        conn.request("GET", f"/v{API_VERSION}/containers/{quote(name, safe='')}/json")
        resp = conn.getresponse()
        body = resp.read()
    except http.client.HTTPException as e:
        raise OSError(f"bad answer: {type(e).__name__}") from None
    finally:
        conn.close()
    if resp.status != 200:
        return resp.status, None
    try:
        doc = json.loads(body)
    except ValueError:
        raise OSError("the engine's answer is not JSON") from None
    return 200, doc if isinstance(doc, dict) else None


def probe(host: str, name: str, timeout: float, engine: str = "docker") -> MonitorResult:
    """The container's state; UNKNOWN when the engine cannot tell (never OFFLINE then,
    unless the engine is gone and the container verifiably with it)."""
    try:
        status, doc = inspect(host, name, timeout)
    except TimeoutError:
        return states.unknown(f"the engine at {host} did not answer within {timeout:g} s")
    except OSError as e:
        from kvmguest.agents.docker.procs import engine_absent

        why = f"cannot reach the engine at {host}: {e.strerror or e}"
        absent = engine_absent(host, engine, name)
        return states.offline(f"{absent}: {why}") if absent else states.unknown(why)
    if status == 404:
        return container_state(name, None)
    if status != 200 or doc is None:
        return states.unknown(f"the engine at {host} answered HTTP {status}")
    return container_state(name, doc)
