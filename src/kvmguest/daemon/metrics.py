"""Prometheus metrics of the agent daemon (opt-in: ``kvmguest agent --metrics-port``)."""

from __future__ import annotations

from typing import Any

try:
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        start_http_server,
    )

    AVAILABLE = True
except ImportError:  # optional (the `metrics` extra; Debian: Recommends)
    AVAILABLE = False

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

MISSING = "install prometheus-client (python3-prometheus-client) to serve metrics"

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

    def set_state(self, resource: str, state: str) -> None:
        for s in STATES:
            self.state.labels(resource, s).set(1 if s == state else 0)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        if not AVAILABLE:
            raise RuntimeError(MISSING)
        start_http_server(port, addr=addr, registry=self.registry)
