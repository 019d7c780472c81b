"""The daemon's Prometheus metrics: names, one-hot state, the HTTP endpoint."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request

import pytest

from kvmguest.daemon import metrics as metrics_mod
from kvmguest.daemon.metrics import STATES, Metrics
from kvmguest.framework.decision import State


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_framework_state_has_a_gauge_value() -> None:
    assert {s.value for s in State} <= set(STATES)


def test_state_gauge_is_one_hot_and_everything_is_served() -> None:
    m = Metrics()
    m.set_state("vm1", "ONLINE")
    m.set_state("vm1", "CLEANING")
    m.monitor_seconds.labels("vm1").observe(0.0007)
    m.event_to_action.labels("vm1").observe(0.004)
    m.faults.labels("vm1").inc()
    m.restarts.labels("vm1").inc(2)
    m.confidence.labels("vm1").set(100)
    m.libvirt_connected.set(1)
    text = asyncio.run(_scrape(m))
    lines = [ln for ln in text.splitlines() if ln.startswith("kvmguest_resource_state{")]
    assert len(lines) == len(STATES)
    assert [ln for ln in lines if ln.endswith(" 1.0")] == [
        'kvmguest_resource_state{resource="vm1",state="CLEANING"} 1.0'
    ]
    for want in (
        "# TYPE kvmguest_monitor_duration_seconds histogram",
        'kvmguest_monitor_duration_seconds_bucket{le="0.001",resource="vm1"} 1.0',
        "# TYPE kvmguest_event_to_action_seconds histogram",
        'kvmguest_event_to_action_seconds_bucket{le="0.005",resource="vm1"} 1.0',
        'kvmguest_faults_total{resource="vm1"} 1.0',
        'kvmguest_restarts_total{resource="vm1"} 2.0',
        'kvmguest_resource_confidence{resource="vm1"} 100.0',
        "kvmguest_libvirt_connected 1.0",
    ):
        assert want in text, want


async def _scrape(m: Metrics) -> str:
    port = _free_port()
    await m.serve(port)

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return str(r.read().decode())

    try:
        return await asyncio.to_thread(get)
    finally:
        await m.close()


def test_idle_connections_cost_no_thread_time_out_and_never_lock_out_a_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """2,000 idle connections: no thread each (the old server made 2,000), those past the
    cap are closed at once, the rest after REQUEST_TIMEOUT; a scrape still gets through."""
    import threading

    m = Metrics()
    m.faults.labels("vm1").inc()
    monkeypatch.setattr(metrics_mod, "REQUEST_TIMEOUT", 1.0)

    async def main() -> tuple[int, int, str]:
        port = _free_port()
        await m.serve(port)
        threads_before = threading.active_count()
        idle = []
        for _ in range(2000):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            idle.append(w)
        threads_during = threading.active_count() - threads_before

        def get() -> str:
            deadline = time.monotonic() + 30
            while True:
                try:
                    url = f"http://127.0.0.1:{port}/metrics"
                    with urllib.request.urlopen(url, timeout=10) as r:
                        return str(r.read().decode())
                except OSError:  # 503 while the idle ones still hold the slots
                    if time.monotonic() > deadline:
                        raise

        text = await asyncio.to_thread(get)
        closed = 0
        for w in idle:
            if w.transport.is_closing() or w.is_closing():
                closed += 1
            w.close()
        await m.close()
        return threads_during, closed, text

    threads, _closed, text = asyncio.run(main())
    assert threads <= 1
    assert 'kvmguest_faults_total{resource="vm1"} 1.0' in text


def test_two_daemons_in_one_process_do_not_share_a_registry() -> None:
    a, b = Metrics(), Metrics()
    a.faults.labels("vm1").inc()
    assert b.registry.get_sample_value("kvmguest_faults_total", {"resource": "vm1"}) is None
