"""The daemon's Prometheus metrics: names, one-hot state, the HTTP endpoint."""

from __future__ import annotations

import socket
import urllib.request

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
    port = _free_port()
    m.serve(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
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


def test_two_daemons_in_one_process_do_not_share_a_registry() -> None:
    a, b = Metrics(), Metrics()
    a.faults.labels("vm1").inc()
    assert b.registry.get_sample_value("kvmguest_faults_total", {"resource": "vm1"}) is None
