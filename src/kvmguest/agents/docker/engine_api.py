"""The Engine API through the Docker SDK, for both engines (dockerd, Podman's service).

Every client has a timeout; every error is classified by its exception type and HTTP
status, never by its message: :class:`~kvmguest.errors.Unreachable` for an engine that
refuses, is absent or does not answer in time (monitor: UNKNOWN), :class:`EngineError` for
an answer that says no.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from kvmguest.errors import AgentError, Unreachable

T = TypeVar("T")
# The API version both engines speak (dockerd 20.10 and Podman 4 serve 1.41): pinned, so
# that a client costs no version round trip.
API_VERSION = "1.41"


class EngineError(AgentError):
    """The engine answered, with an error; ``status`` is its HTTP status (0: none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class TimedOutError(Unreachable):
    """The engine did not answer within the call's timeout (a hung engine)."""


def client(host: str, timeout: float) -> Any:
    """A client of the engine at ``host``; no connection is made until the first call."""
    return docker.DockerClient(
        base_url=host, version=API_VERSION, timeout=max(1, int(timeout + 0.999))
    )


def _status(e: docker.errors.APIError) -> int:
    code = e.status_code
    return int(code) if code is not None else 0


def classify(e: BaseException, host: str, what: str) -> AgentError:
    """An SDK or transport exception as our error (by type and status only)."""
    if isinstance(e, requests.exceptions.Timeout):
        return TimedOutError(f"{what}: the engine at {host} did not answer in time")
    if isinstance(e, requests.exceptions.ConnectionError | ConnectionError | FileNotFoundError):
        return Unreachable(f"{what}: cannot reach the engine at {host}")
    if isinstance(e, docker.errors.NotFound):
        return EngineError(f"{what}: not found", 404)
    if isinstance(e, docker.errors.APIError):
        expl = e.explanation if isinstance(e.explanation, str) else str(e.explanation or "")
        return EngineError(f"{what}: engine error {_status(e)}: {expl}".strip(), _status(e))
    if isinstance(
        e, docker.errors.DockerException | requests.exceptions.RequestException | OSError
    ):
        # A broken answer or transport (a connection cut mid-stream, a garbled reply).
        return Unreachable(f"{what}: engine at {host}: {type(e).__name__}")
    raise e


@contextmanager
def calling(host: str, what: str) -> Iterator[None]:
    """Translate what the SDK raises inside the block into our errors."""
    try:
        yield
    except AgentError:
        raise
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
        raise classify(e, host, what) from None


def call(host: str, what: str, fn: Callable[[], T]) -> T:
    with calling(host, what):
        return fn()


def inspect(api: Any, host: str, name: str) -> dict[str, Any] | None:
    """``GET /containers/NAME/json``; None when there is no such container."""
    try:
        with calling(host, f"inspect {name}"):
            doc = api.api.inspect_container(name)
    except EngineError as e:
        if e.status == 404:
            return None
        raise
    return doc if isinstance(doc, dict) else None


def ping(api: Any, host: str) -> None:
    with calling(host, "ping"):
        api.api.ping()
