"""A stateful oVirt Engine (RHV-M) API v4 simulator served over HTTPS.

Faithful enough that the official ``ovirtsdk4`` client works against it unchanged: SSO
tokens, bearer authentication, the API's XML documents and faults, asynchronous VM
transitions, and injectable misbehaviour (latency, resets, HTTP errors, a wrong
certificate, expired tokens). See ``docs/ovirt-simulator.md``.
"""

from .model import ApiFault, Durations, ManualClock, MonotonicClock
from .pki import TestPki, generate_pki
from .server import FaultRule, RecordedRequest
from .simulator import CERT_MODES, DEFAULT_USER, OvirtSimulator

__all__ = [
    "CERT_MODES",
    "DEFAULT_USER",
    "ApiFault",
    "Durations",
    "FaultRule",
    "ManualClock",
    "MonotonicClock",
    "OvirtSimulator",
    "RecordedRequest",
    "TestPki",
    "generate_pki",
]
