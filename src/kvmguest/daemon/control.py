"""The control API: JSON lines over a Unix socket.

One request per connection: ``{"cmd": "...", ...}`` → zero or more ``{"progress": "..."}``
lines, then one ``{"ok": bool, ...}`` line. The socket is mode 0660 with a configurable
group; the peer's credentials (SO_PEERCRED) are checked as well, so a socket left with
looser permissions by a mistake still refuses other users.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterator
from pathlib import Path
from typing import Any

Reply = dict[str, Any]
# A handler gets the request and a function to send progress lines; returns the reply.
Handler = Callable[[dict[str, Any], Callable[[str], Coroutine[Any, Any, None]]], Awaitable[Reply]]
MAX_REQUEST = 64 * 1024
REFUSE_READ_TIMEOUT = 2.0  # how long a refused peer's request is waited for
# A client has this long to send its request line: an idle connection cannot hold a slot.
REQUEST_READ_TIMEOUT = 5.0
# Connections served at once; one more is answered "busy" and closed at once, so idle or
# stuck clients can neither exhaust the daemon's file descriptors nor lock operators out.
MAX_CLIENTS = 64
# Connections the kernel queues before the daemon accepts them (capped by somaxconn): a
# burst of clients waits there instead of failing with EAGAIN.
BACKLOG = 1024
# Sending one line to a client that does not read: given up after this long.
WRITE_TIMEOUT = 10.0

log = logging.getLogger("kvmguest.daemon")


def peer_allowed(sock: socket.socket, group_gid: int | None) -> bool:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, gid = struct.unpack("3i", creds)
    if uid == 0 or uid == os.geteuid():
        return True
    if group_gid is None:
        return False
    if gid == group_gid:
        return True
    try:
        import pwd

        user = pwd.getpwuid(uid).pw_name
        return user in grp.getgrgid(group_gid).gr_mem
    except KeyError:
        return False


class ControlServer:
    def __init__(self, path: str, handler: Handler, group: str | None = None) -> None:
        self.path = path
        self.handler = handler
        self.group = group
        self._gid: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._clients = 0

    async def start(self) -> None:
        p = Path(self.path)
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()  # a stale socket from a killed daemon
        old = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=self.path, backlog=BACKLOG
            )
        finally:
            os.umask(old)
        if self.group:
            self._gid = grp.getgrnam(self.group).gr_gid
            os.chown(self.path, -1, self._gid)
        os.chmod(self.path, 0o660)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            Path(self.path).unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send(obj: Reply) -> None:
            writer.write(json.dumps(obj).encode() + b"\n")
            async with asyncio.timeout(WRITE_TIMEOUT):
                await writer.drain()

        self._clients += 1
        try:
            if self._clients > MAX_CLIENTS:
                await send({"ok": False, "busy": True, "error": f"busy: {MAX_CLIENTS} "
                            "requests in progress; try again"})  # fmt: skip
                return
            await self._serve_one(reader, writer, send)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception as e:
            log.warning("control connection: %s: %s", type(e).__name__, e)
        finally:
            self._clients -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _serve_one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        send: Callable[[Reply], Coroutine[Any, Any, None]],
    ) -> None:  # fmt: skip
        sock = writer.get_extra_info("socket")
        if sock is None or not peer_allowed(sock, self._gid):
            # Take the request off the wire first (briefly): closing on an unread
            # request makes the client's write fail with EPIPE before it can read why.
            with contextlib.suppress(TimeoutError, ValueError):
                await asyncio.wait_for(reader.readline(), REFUSE_READ_TIMEOUT)
            await send({"ok": False, "error": "permission denied"})
            return
        try:
            async with asyncio.timeout(REQUEST_READ_TIMEOUT):
                line = await reader.readline()
        except ValueError:  # longer than the stream's limit (64 KiB): asyncio raises
            line = b""
        except TimeoutError:
            await send({"ok": False, "error": f"no request within "
                        f"{REQUEST_READ_TIMEOUT:g} s"})  # fmt: skip
            return
        if not line or len(line) > MAX_REQUEST:
            await send({"ok": False, "error": "empty or oversized request"})
            return
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                raise ValueError("request must be an object with a 'cmd'")
        except (ValueError, RecursionError) as e:  # RecursionError: nested too deep
            await send({"ok": False, "error": f"bad request: {type(e).__name__}: "
                        f"{str(e)[:200]}"})  # fmt: skip
            return

        async def progress(msg: str) -> None:
            await send({"progress": msg})

        await send(await self.handler(request, progress))


class ControlError(Exception):
    pass


def _connect(sock: socket.socket, path: str, timeout: float) -> None:
    """connect(), waiting while the daemon's accept queue is full (EAGAIN on a Unix
    socket): a busy daemon is slow, not absent."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def request(path: str, cmd: str, timeout: float = 30.0, **args: Any) -> Iterator[Reply]:
    """Client side (blocking): yields progress lines, then the final reply. A "busy"
    answer (every slot taken) is retried until ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        replies = _request_once(path, cmd, timeout, args)
        first = next(replies)
        if first.get("busy") and time.monotonic() + delay < deadline:
            replies.close()
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            continue
        yield first
        yield from replies
        return


def _request_once(
    path: str, cmd: str, timeout: float, args: dict[str, Any]
) -> Generator[Reply, None, None]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        _connect(sock, path, timeout)
    except FileNotFoundError:
        raise ControlError(f"no kvmguest agent listening at {path} (is it running?)") from None
    except PermissionError:
        raise ControlError(f"permission denied on {path}") from None
    except OSError as e:
        raise ControlError(f"cannot reach the agent at {path}: {e.strerror}") from None
    with sock:
        yield from exchange(sock, json.dumps({"cmd": cmd, **args}).encode() + b"\n", path)


def exchange(sock: socket.socket, data: bytes, path: str) -> Generator[Reply, None, None]:
    """Send one request on a connected socket and yield the answer's lines."""
    # The request goes out unbuffered: a buffered writer whose flush met a closed socket
    # keeps its bytes and raises again when it is closed, after the answer was read.
    with sock.makefile("rb") as f:
        # The agent may answer and close before reading: its answer is still there.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        try:
            for line in f:
                msg = json.loads(line)
                yield msg
                if "ok" in msg:
                    return
        except TimeoutError:
            timeout = sock.gettimeout()
            raise ControlError(f"the agent did not answer within {timeout or 0:g} s") from None
        except ConnectionError as e:
            raise ControlError(f"the agent at {path} dropped the connection: {e}") from None
    raise ControlError("the agent closed the connection without answering")


async def aiter_lines(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while line := await reader.readline():
        yield line
