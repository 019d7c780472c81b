"""The HTTPS front of the simulator: SSO, bearer authentication, routing, injected faults.

What the engine does and the simulator copies (checked against ovirt-engine's SSO
servlets and ovirtsdk4's connection code):

* ``POST /ovirt-engine/sso/oauth/token`` with a form (grant_type=password, username,
  password, scope) answers ``{"access_token", "scope", "exp", "token_type": "bearer"}``.
  A refused login is HTTP 400 with, for the ``ovirt-app-api`` scope,
  ``{"error_code": "access_denied", "error": "Cannot authenticate user ..."}`` (other scopes
  get the OAuth form ``{"error", "error_description"}``); the SDK reads both.
  The request must say ``Accept: application/json``, as the engine demands.
* ``POST /ovirt-engine/services/sso-logout`` (what ``Connection.close()`` calls) and
  ``POST /ovirt-engine/sso/oauth/revoke`` revoke the token in the form and answer ``{}``.
  (The engine's sso-logout servlet answers with a redirect, which the SDK cannot parse;
  the simulator answers JSON so that ``close()`` is clean.)
* Every ``/ovirt-engine/api`` request needs ``Authorization: Bearer <token>``; a missing,
  revoked or expired token is HTTP 401 with an empty body, so ovirtsdk4 logs in again
  once and retries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import routes
from .model import ApiFault, Engine

log = logging.getLogger(__name__)

SSO_TOKEN_PATH = "/ovirt-engine/sso/oauth/token"
SSO_REVOKE_PATHS = ("/ovirt-engine/services/sso-logout", "/ovirt-engine/sso/oauth/revoke")
API_PREFIX = "/ovirt-engine/api"
REST_API_SCOPE = "ovirt-app-api"


@dataclass
class RecordedRequest:
    """One request as the simulator saw it (passwords in SSO forms replaced by ``***``)."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: str
    status: int = 0  # 0: no response was sent (connection reset)
    bearer: str | None = None


@dataclass
class FaultRule:
    """An injected misbehaviour for requests whose path matches ``path`` (a regex)."""

    kind: str  # "latency" | "error" | "reset"
    path: str | None = None
    count: int | None = None  # None: every matching request, for ever
    seconds: float = 0.0
    status: int = 500

    def matches(self, path: str) -> bool:
        return self.path is None or re.search(self.path, path) is not None


@dataclass
class _Token:
    user: str
    scope: str
    expires_at: float  # on the simulator's clock


@dataclass
class SimState:
    """What the handler threads share; every field is guarded by ``lock``."""

    engine: Engine
    user: str
    password: str
    token_lifetime: float
    contexts: dict[str, ssl.SSLContext]
    cert_mode: str = "good"
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    tokens: dict[str, _Token] = field(default_factory=dict)
    faults: list[FaultRule] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)

    def take_faults(self, path: str) -> list[FaultRule]:
        """The rules that apply to this request, consuming one use of each counted rule."""
        hits: list[FaultRule] = []
        with self.lock:
            for rule in list(self.faults):
                if not rule.matches(path):
                    continue
                hits.append(rule)
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count <= 0:
                        self.faults.remove(rule)
        return hits

    def issue_token(self, user: str, scope: str) -> tuple[str, float]:
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = _Token(user, scope, self.engine.clock.now() + self.token_lifetime)
        return token, time.time() + self.token_lifetime

    def token_valid(self, token: str) -> bool:
        with self.lock:
            t = self.tokens.get(token)
            return t is not None and self.engine.clock.now() < t.expires_at

    def revoke(self, token: str) -> None:
        with self.lock:
            self.tokens.pop(token, None)

    def expire_all(self) -> None:
        with self.lock:
            self.tokens.clear()


class SimServer(ThreadingHTTPServer):
    """Wraps each accepted socket in TLS with the certificate of the current mode."""

    daemon_threads = True
    block_on_close = False  # keep-alive connections must not hold stop() up
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: SimState) -> None:
        self.state = state
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        with self.state.lock:
            ctx = self.state.contexts[self.state.cert_mode]
        # The handshake runs in the handler thread (setup), never in the accept loop.
        tls = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self._conns_lock:
            self._conns.add(tls)
        return tls, addr

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client refusing our certificate or hanging up is normal in fault tests.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)


class _Reset(Exception):
    """Abort the request by resetting the TCP connection."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY every response
    # waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server_version = "ovirt-engine-simulator/4.5"
    timeout = 60  # an idle keep-alive connection is closed after this
    server: SimServer

    def setup(self) -> None:
        super().setup()
        self.request.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # -- plumbing ------------------------------------------------------------------------

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query, keep_blank_values=True)
        rec = RecordedRequest(self.command, path, query, _redact(path, body))
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            rec.bearer = auth[len("Bearer ") :]
        # Recorded before the answer goes out: a client that reads the log right after
        # its response must find its request there.
        try:
            self._apply_faults(path)
            status, ctype, payload, extra = self._route(path, query, body, rec)
        except _Reset:
            self._record(rec, 0)
            self._reset()
            return
        except _InjectedError as e:
            status, ctype, payload, extra = self._injected(path, e.status)
        self._record(rec, status)
        self._send(status, ctype, payload, extra)

    def _record(self, rec: RecordedRequest, status: int) -> None:
        rec.status = status
        state = self.server.state
        with state.lock:
            state.requests.append(rec)

    def _apply_faults(self, path: str) -> None:
        state = self.server.state
        for rule in state.take_faults(path):
            if rule.kind == "latency":
                # Wait on the stop event, not a sleep: stop() must not wait for us.
                if state.stopping.wait(rule.seconds):
                    raise _Reset
            elif rule.kind == "reset":
                raise _Reset
            elif rule.kind == "error":
                raise _InjectedError(rule.status)

    def _route(
        self, path: str, query: dict[str, list[str]], body: bytes, rec: RecordedRequest
    ) -> tuple[int, str, bytes, dict[str, str]]:
        if path == SSO_TOKEN_PATH:
            return self._sso_token(query, body)
        if path in SSO_REVOKE_PATHS:
            return self._sso_revoke(query, body)
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            if rec.bearer is None or not self.server.state.token_valid(rec.bearer):
                return 401, "", b"", {"WWW-Authenticate": 'Bearer realm="RESTAPI"'}
            status, payload = routes.handle(
                self.server.state.engine, self.command, path[len(API_PREFIX) :], query, body
            )
            return status, routes.XML_TYPE, payload, {}
        return 404, "text/html", b"<html><body>Not Found</body></html>", {}

    def _injected(self, path: str, status: int) -> tuple[int, str, bytes, dict[str, str]]:
        if path.startswith(API_PREFIX):
            fault = ApiFault(status, "Internal Server Error", "Injected by the simulator")
            return status, routes.XML_TYPE, routes.fault_xml(fault), {}
        # In front of SSO: what a failing proxy would say.
        return status, "text/html", b"<html><body>Internal Server Error</body></html>", {}

    def _send(self, status: int, ctype: str, payload: bytes, extra: dict[str, str]) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _reset(self) -> None:
        # SO_LINGER 0: close() sends a TCP RST instead of an orderly FIN.
        self.close_connection = True
        sock = self.request
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        except OSError:
            pass

    # -- SSO -----------------------------------------------------------------------------

    def _form(self, query: dict[str, list[str]], body: bytes) -> dict[str, str]:
        merged = {k: v[0] for k, v in query.items()}
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        merged.update({k: v[0] for k, v in form.items()})
        return merged

    def _json(self, status: int, data: dict[str, Any]) -> tuple[int, str, bytes, dict[str, str]]:
        return status, "application/json", json.dumps(data).encode(), {}

    def _sso_error(
        self, scope: str, code: str, message: str
    ) -> tuple[int, str, bytes, dict[str, str]]:
        if REST_API_SCOPE in scope.split():
            return self._json(400, {"error_code": code, "error": message})
        return self._json(400, {"error": code, "error_description": message})

    def _sso_token(
        self, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, str, bytes, dict[str, str]]:
        state = self.server.state
        form = self._form(query, body)
        scope = form.get("scope", "")
        grant = form.get("grant_type")
        if grant is None:
            return self._sso_error(scope, "invalid_request", "The request is missing grant_type")
        if grant != "password":
            return self._sso_error(scope, "unsupported_grant_type", "Unsupported grant type")
        if (self.headers.get("Accept") or "") != "application/json":
            return self._sso_error(scope, "invalid_request", "Invalid or missing Accept Header")
        user = form.get("username", "")
        if user != state.user or not secrets.compare_digest(
            form.get("password", "").encode(), state.password.encode()
        ):
            return self._sso_error(
                scope,
                "access_denied",
                f"Cannot authenticate user '{user}': The username or password is incorrect..",
            )
        token, wall_expiry = state.issue_token(user, scope)
        return self._json(
            200,
            {
                "access_token": token,
                "scope": scope,
                # The engine sends the expiry in milliseconds since the epoch, as a string.
                "exp": str(int(wall_expiry * 1000)),
                "token_type": "bearer",
            },
        )

    def _sso_revoke(
        self, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, str, bytes, dict[str, str]]:
        token = self._form(query, body).get("token")
        if token:
            self.server.state.revoke(token)
        return self._json(200, {})


class _InjectedError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _redact(path: str, body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    if path != SSO_TOKEN_PATH:
        return text
    form = parse_qs(text, keep_blank_values=True)
    return "&".join(f"{k}={'***' if k == 'password' else v[0]}" for k, v in sorted(form.items()))
