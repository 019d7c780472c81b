"""Prometheus metrics of the agent daemon (opt-in: ``kvmguest agent --metrics-port``).

Served on the daemon's own asyncio loop, not by prometheus_client's thread-per-connection
server: a connection costs a file descriptor and no thread, a request must arrive within
REQUEST_TIMEOUT, and connections beyond MAX_CONNECTIONS are closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
    )

    AVAILABLE = True
except ImportError:  # optional (the `metrics` extra; Debian: Recommends)
    AVAILABLE = False
    CONTENT_TYPE_LATEST = "text/plain"

    class _Unused:
        """Stands in for a metric when prometheus-client is absent: the engine records its
        numbers as always, and nothing serves them."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def labels(self, *args: Any) -> _Unused:
            return self

        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: None

    CollectorRegistry = Counter = Gauge = Histogram = _Unused  # type: ignore[misc,assignment]

    def generate_latest(*_args: Any, **_kwargs: Any) -> bytes:  # type: ignore[misc]
        return b""


MISSING = "install prometheus-client (python3-prometheus-client) to serve metrics"

log = logging.getLogger("kvmguest.daemon")

REQUEST_TIMEOUT = 5.0  # seconds for the request line and headers
MAX_CONNECTIONS = 64
MAX_HEADER = 16 * 1024

STATES = (
    "ONLINE", "OFFLINE", "INTENTIONAL OFFLINE", "UNKNOWN", "FAULTED", "PROBING",
    "GOING ONLINE", "GOING OFFLINE", "CLEANING", "MIGRATING", "RESTARTING",
    "ONLINE|ADMIN_WAIT", "GOING ONLINE|ADMIN_WAIT", "GOING OFFLINE|ADMIN_WAIT",
)  # fmt: skip


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.state = Gauge(
            "kvmguest_resource_state", "1 for the state the resource is in, 0 for the others",
            ["resource", "state"], registry=r,
        )  # fmt: skip
        self.confidence = Gauge(
            "kvmguest_resource_confidence", "Confidence of the last ONLINE monitor (0..100)",
            ["resource"], registry=r,
        )  # fmt: skip
        self.monitor_seconds = Histogram(
            "kvmguest_monitor_duration_seconds", "Time a monitor entry point took",
            ["resource"], registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30, 60),
        )  # fmt: skip
        self.faults = Counter(
            "kvmguest_faults_total", "Resources declared FAULTED", ["resource"], registry=r
        )
        self.restarts = Counter(
            "kvmguest_restarts_total", "Local restarts (clean, then online) by RestartLimit",
            ["resource"], registry=r,
        )  # fmt: skip
        self.event_to_action = Histogram(
            "kvmguest_event_to_action_seconds",
            "From a lifecycle event (libvirt or QEMU exit) to the entry point it caused",
            ["resource"], registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )  # fmt: skip
        self.libvirt_connected = Gauge(
            "kvmguest_libvirt_connected", "1 while the daemon's libvirt connection is up",
            registry=r,
        )  # fmt: skip

        self.state_saved = Gauge(
            "kvmguest_state_saved", "1 while state and history are being saved to the database",
            registry=r,
        )  # fmt: skip
        self.state_saved.set(1)
        self.state_write_failures = Counter(
            "kvmguest_state_write_failures_total", "Failed writes to the state database",
            registry=r,
        )  # fmt: skip
        self.monitor_timeouts = Counter(
            "kvmguest_monitor_timeouts_total", "Monitors with no answer within MonitorTimeout",
            ["resource"], registry=r,
        )  # fmt: skip
        self._server: asyncio.AbstractServer | None = None
        self._open = 0

    def set_state(self, resource: str, state: str) -> None:
        for s in STATES:
            self.state.labels(resource, s).set(1 if s == state else 0)

    async def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        if not AVAILABLE:
            raise RuntimeError(MISSING)
        self._server = await asyncio.start_server(self._client, addr, port, limit=MAX_HEADER)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open > MAX_CONNECTIONS:
                writer.write(_response(503, b"too many connections\n", "text/plain"))
                return
            async with asyncio.timeout(REQUEST_TIMEOUT):
                request = await reader.readline()
                while await reader.readline() not in (b"\r\n", b"\n", b""):
                    pass
            parts = request.split()
            if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
                writer.write(_response(405, b"only GET\n", "text/plain"))
                return
            path = parts[1].split(b"?")[0]
            if path not in (b"/", b"/metrics"):
                writer.write(_response(404, b"not found: try /metrics\n", "text/plain"))
                return
            body = generate_latest(self.registry)
            writer.write(_response(200, body if parts[0] == b"GET" else b"", CONTENT_TYPE_LATEST,
                                   len(body)))  # fmt: skip
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass  # an idle, slow or broken client: dropped
        finally:
            self._open -= 1
            writer.close()


def _response(code: int, body: bytes, ctype: str, length: int | None = None) -> bytes:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
              503: "Service Unavailable"}[code]  # fmt: skip
    head = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n"
            "Connection: close\r\n\r\n")  # fmt: skip
    return head.encode() + body
