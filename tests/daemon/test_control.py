"""The control API (JSON lines over a Unix socket): framing, progress, errors, permissions."""

from __future__ import annotations

import asyncio
import grp
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kvmguest.daemon.control import (
    MAX_REQUEST,
    ControlError,
    ControlServer,
    exchange,
    peer_allowed,
    request,
)

Progress = Callable[[str], Awaitable[None]]


async def _handler(req: dict[str, Any], progress: Progress) -> dict[str, Any]:
    if req["cmd"] == "steps":
        for i in range(int(req.get("n", 3))):
            await progress(f"step {i}")
        return {"ok": True, "done": req.get("n", 3)}
    if req["cmd"] == "fail":
        return {"ok": False, "error": "nope"}
    return {"ok": True, "echo": req}


def _serve(
    path: Path, body: Callable[[ControlServer], Awaitable[None]], group: str | None = None
) -> None:
    async def main() -> None:
        server = ControlServer(str(path), _handler, group)
        await server.start()
        try:
            await body(server)
        finally:
            await server.close()

    asyncio.run(main())


def _client(path: Path, cmd: str, **args: Any) -> list[dict[str, Any]]:
    return list(request(str(path), cmd, timeout=10, **args))


def _raw(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_progress_lines_then_one_final_reply(tmp_path: Path) -> None:
    sock = tmp_path / "a.sock"

    async def body(_s: ControlServer) -> None:
        msgs = await asyncio.to_thread(_client, sock, "steps", n=2)
        assert msgs == [{"progress": "step 0"}, {"progress": "step 1"}, {"ok": True, "done": 2}]
        assert (await asyncio.to_thread(_client, sock, "fail")) == [{"ok": False, "error": "nope"}]
        echo = await asyncio.to_thread(_client, sock, "x", resource="vm1")
        assert echo == [{"ok": True, "echo": {"cmd": "x", "resource": "vm1"}}]

    _serve(sock, body)


def test_socket_is_0660_a_stale_one_is_replaced_and_close_removes_it(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "a.sock"
    sock.parent.mkdir()
    sock.write_text("stale")  # what a SIGKILLed daemon leaves behind

    async def body(_s: ControlServer) -> None:
        st = os.stat(sock)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660

    _serve(sock, body)
    assert not sock.exists()


def test_socket_group(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another group needs root")
    group = "kvm" if _has_group("kvm") else grp.getgrgid(os.getgid()).gr_name
    sock = tmp_path / "a.sock"

    async def body(_s: ControlServer) -> None:
        assert os.stat(sock).st_gid == grp.getgrnam(group).gr_gid

    _serve(sock, body, group=group)


def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def test_bad_requests_are_answered_not_fatal(tmp_path: Path) -> None:
    sock = tmp_path / "a.sock"

    async def body(_s: ControlServer) -> None:
        for data, why in [
            (b"{not json\n", b"bad request"),
            (b'["cmd"]\n', b"bad request"),
            (b'{"nocmd": 1}\n', b"bad request"),
            (b"\n", b"bad request"),
            (b"", b"empty or oversized"),
            (b'{"cmd": "' + b"x" * MAX_REQUEST + b'"}\n', b"empty or oversized"),
        ]:
            reply = await asyncio.to_thread(_raw, sock, data)
            assert why in reply and b'"ok": false' in reply, (data[:20], reply)
        # ... and the server still serves.
        assert (await asyncio.to_thread(_client, sock, "x"))[-1]["ok"] is True

    _serve(sock, body)


def test_client_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no kvmguest agent listening"):
        _client(tmp_path / "missing.sock", "status")
    path = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))  # bound, never listening: connection refused
    try:
        with pytest.raises(ControlError, match="cannot reach the agent"):
            _client(path, "status")
    finally:
        s.close()


def test_client_times_out_on_a_silent_server(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    try:
        with pytest.raises(ControlError, match="did not answer"):
            list(request(str(path), "status", timeout=0.3))
    finally:
        srv.close()


def test_peer_credentials(tmp_path: Path) -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert peer_allowed(a, None)  # our own uid (and root) are always allowed
        assert peer_allowed(a, os.getgid())


def test_an_answer_before_the_request_is_read_is_returned_without_error() -> None:
    """The agent answers "busy" at once and closes, before reading the request (every slot
    taken): the client reads that answer and raises nothing (a buffered request that met
    the closed socket used to raise BrokenPipeError after the answer was read)."""
    ours, agent = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.sendall(b'{"ok": false, "busy": true, "error": "busy"}\n')
    agent.close()
    with ours:
        replies = list(exchange(ours, b'{"cmd": "status"}\n', "agent.sock"))
    assert replies == [{"ok": False, "busy": True, "error": "busy"}]
