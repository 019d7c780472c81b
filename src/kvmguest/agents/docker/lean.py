"""The lean container monitor: one ``GET /containers/NAME/json`` over the engine's socket
with the standard library's C modules alone (``import docker`` costs a process ~130 ms).
The same state table as the full monitor (:mod:`.table`); the tests run both on the same
containers and compare."""

from __future__ import annotations

# The C modules, not socket.py and json: socket.py imports enum's flags and selectors,
# json the re module (~2 ms each, on every monitor of every interval).
import _socket

from kvmguest.agents.docker.table import (
    INTENTIONAL_OFFLINE,
    OFFLINE,
    ONLINE,
    classify,
    container_state,
)
from kvmguest.agents.ocf_names import IGNORED_RESKEYS, META, NOT_RUNNING, RESKEY, SUCCESS

TYPE_CHECKING = False  # typing and model.states' enum cost the quick monitor ~4 ms
if TYPE_CHECKING:
    from collections.abc import Mapping

    from kvmguest.model.states import MonitorResult

try:
    import _json

    class _Strict:
        """What the C scanner reads from its context (json.decoder.JSONDecoder's)."""

        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        memo: dict[str, object] = {}
        parse_constant = {"NaN": float("nan"), "Infinity": float("inf"),
                          "-Infinity": float("-inf")}.__getitem__  # fmt: skip

    _scan = _json.make_scanner(_Strict())  # type: ignore[arg-type]  # duck-typed context

    def _loads(text: str) -> object:
        value, end = _scan(text, 0)
        if text[end:].strip():
            raise ValueError("extra data")
        return value

except (ImportError, AttributeError):  # another Python than CPython
    import json

    def _loads(text: str) -> object:
        return json.loads(text)


API_VERSION = "1.41"  # as engine_api's
# Not http.client (with email and ssl it costs this path ~25 ms of imports): one HTTP/1.0
# request, whose answer ends when the engine closes the connection.
MAX_ANSWER = 8 << 20


def budget(timeout_ms: int | None, default: float) -> float:
    """Seconds an action may use: the op timeout less a margin to report before the kill."""
    if timeout_ms is None or timeout_ms <= 0:
        return default
    seconds = timeout_ms / 1000
    return max(1.0, seconds - min(5.0, seconds / 10))


def _address(host: str) -> tuple[int, str | tuple[str, int]]:
    if host.startswith("unix://"):
        return _socket.AF_UNIX, host[len("unix://") :]
    rest = host.split("://", 1)[-1].split("/", 1)[0]
    name, _, port = rest.rpartition(":")
    return _socket.AF_INET, (name.strip("[]") or "localhost", int(port or 2375))


def _plain(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "_.-" for c in name)


def inspect(host: str, name: str, timeout: float) -> tuple[int, dict[str, object] | None]:
    """(HTTP status, document); raises OSError (refused, absent, timed out, garbled)."""
    if not _plain(name):
        raise OSError(f"{name!r} is not a container name")
    family, address = _address(host)
    request = f"GET /v{API_VERSION}/containers/{name}/json HTTP/1.0\r\nHost: docker\r\n\r\n"
    sock = _socket.socket(family, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(request.encode())
        chunks, size = [], 0
        while size <= MAX_ANSWER:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        sock.close()
    head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if not sep or len(parts) < 2 or not parts[1].isdigit():
        raise OSError("the engine's answer is not HTTP")
    status = int(parts[1])
    if status != 200:
        return status, None
    try:
        doc = _loads(body.decode())
    except (ValueError, StopIteration, UnicodeDecodeError):
        raise OSError("the engine's answer is not JSON") from None
    return 200, doc if isinstance(doc, dict) else None


def probe(host: str, name: str, timeout: float, engine: str = "docker") -> MonitorResult:
    """The container's state; UNKNOWN when the engine cannot tell (never OFFLINE then,
    unless the engine is gone and the container verifiably with it)."""
    from kvmguest.model import states

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


# The DockerContainer OCF agent's parameters (ocf_side.CONTAINER_PARAMS; a test holds the
# two equal): a misspelt one is refused by the usual path, so the quick one steps aside.
CONTAINER_PARAM_NAMES = frozenset({
    "config", "resource", "container_name", "image", "command", "docker_host", "engine",
    "env", "volumes", "ports", "network", "labels", "stop_timeout", "remove_on_offline",
    "allow_pull", "delay_after_online",
})  # fmt: skip
DEFAULT_HOSTS = {
    "docker": "unix:///var/run/docker.sock",
    "podman": "unix:///run/podman/podman.sock",
}
QUICK_TIMEOUT = 20.0


def quick_ocf(environ: Mapping[str, str]) -> tuple[int, str] | None:
    """The OCF monitor of a container from its parameters alone, for the two answers that
    need no judgement: it runs (0) or it does not (7). Everything else (a config file, a
    deep check, an unknown parameter, an engine that does not answer, a state the table
    cannot place) returns None: the usual path decides, with the evidence it gathers."""
    params: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith(RESKEY) and not key.startswith(META):
            name = key[len(RESKEY) :]
            if name not in IGNORED_RESKEYS:
                if name not in CONTAINER_PARAM_NAMES:
                    return None
                params[name] = value
    if params.get("config") or environ.get("OCF_CHECK_LEVEL", "0") not in ("", "0"):
        return None
    name = params.get("container_name", "")
    engine = params.get("engine") or "docker"
    if not _plain(name) or engine not in DEFAULT_HOSTS:
        return None
    host = params.get("docker_host") or DEFAULT_HOSTS[engine]
    raw_timeout = environ.get(META + "timeout", "")
    timeout_ms = int(raw_timeout) if raw_timeout.isascii() and raw_timeout.isdigit() else None
    try:
        status, doc = inspect(host, name, budget(timeout_ms, QUICK_TIMEOUT))
    except OSError:  # TimeoutError included: unreachable is the usual path's to judge
        return None
    if status not in (200, 404) or (status == 200 and doc is None):
        return None
    state, _, detail = classify(name, doc if status == 200 else None)
    if state == ONLINE:
        return SUCCESS, f"{name}: {detail}"
    if state in (OFFLINE, INTENTIONAL_OFFLINE):  # as ocf_interface.monitor_code says
        return NOT_RUNNING, f"{name}: {detail}"
    return None
