"""The daemon's event source for containers: each engine's ``/events`` stream, followed in
a thread per engine (the SDK's stream is blocking), reconnecting by itself.

A container's start, die, stop, pause, health change ... reaches its resource at once
(the daemon then monitors it); a lost stream is the engine going away: every container of
that engine is re-monitored (UNKNOWN while the engine does not answer), never faulted for
it. The container's own death is seen faster still by the daemon's pidfd watch of its main
process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from kvmguest.agents.base import EventSink
from kvmguest.agents.docker import engine_api as api
from kvmguest.agents.docker.params import event_key
from kvmguest.agents.docker.table import MANAGED
from kvmguest.errors import AgentError

log = logging.getLogger("kvmguest.docker.events")

RETRY_MIN, RETRY_MAX = 0.2, 5.0
CONNECT_TIMEOUT = 5.0
# The events that may change a container's state (the rest: exec, attach, top ...).
ACTIONS = {"start", "die", "stop", "kill", "pause", "unpause", "oom", "destroy", "remove",
           "create", "restart", "health_status", "died", "cleanup"}  # fmt: skip


class _Follower:
    def __init__(self, host: str, owner: EngineEvents) -> None:
        self.host = host
        self.owner = owner
        self.name = f"engine {host}"
        self.stream: Any = None
        self.thread = threading.Thread(target=self._run, name=f"events:{host}", daemon=True)
        self.up = False

    def _report(self, up: bool, why: str) -> None:
        self.up = up
        self.owner.loop.call_soon_threadsafe(self.owner.connection, f"{self.name}: {why}")
        # Reconnected or lost: whatever happened meanwhile, every container is re-read.
        self.owner.loop.call_soon_threadsafe(self.owner.changed_all, self.host, why)

    def _run(self) -> None:
        delay = RETRY_MIN
        while not self.owner.stopping.is_set():
            try:
                client = api.client(self.host, CONNECT_TIMEOUT)
                api.ping(client, self.host)
                # No read timeout on the stream: it is silent while nothing happens, and it
                # ends (EOF) when the engine goes away.
                client.api.timeout = None
                with api.calling(self.host, "events"):
                    only = {"type": "container", "label": f"{MANAGED}=1"}
                    self.stream = client.events(decode=True, filters=only)
                self._report(True, f"following the events of the engine at {self.host}")
                delay = RETRY_MIN
                with api.calling(self.host, "events"):
                    for event in self.stream:
                        self._event(event)
                why = "the engine closed its event stream"
            except AgentError as e:
                why = str(e)
            except Exception as e:  # the stream's transport: a broken connection
                why = f"event stream lost: {type(e).__name__}"
            if self.owner.stopping.is_set():
                return
            if self.up or self.owner.connected is None:
                self._report(False, why)
            time.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)

    def _event(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        action = str(event.get("Action") or event.get("status") or "").split(":")[0]
        if action not in ACTIONS:
            return
        attrs = (event.get("Actor") or {}).get("Attributes") or {}
        name = attrs.get("name")
        if isinstance(name, str):
            self.owner.loop.call_soon_threadsafe(self.owner.changed, self.host, name, action)

    def close(self) -> None:
        stream = self.stream
        if stream is not None:
            # The SDK's CancellableStream closes its socket (the engine may have already).
            with contextlib.suppress(Exception):
                stream.close()


class EngineEvents:
    """The :class:`~kvmguest.agents.base.EventSource` of the DockerContainer agent."""

    name = "container engines"

    def __init__(self, hosts: Sequence[str], sink: EventSink, loop: asyncio.AbstractEventLoop,
                 handles: Sequence[Any]) -> None:  # fmt: skip
        self.sink = sink
        self.loop = loop
        self.handles = list(handles)
        self.stopping = threading.Event()
        self.followers = [_Follower(h, self) for h in hosts]
        self.connected: bool | None = None  # every engine's stream is up; None: not known yet

    def connection(self, why: str) -> None:
        up = all(f.up for f in self.followers)
        changed = up != self.connected
        self.connected = up
        self.sink.connection(self.name, up, why, changed)

    def changed(self, host: str, name: str, action: str) -> None:
        key = event_key(host, name)
        for h in self.handles:
            if h.key == key:
                h.wake()
        self.sink.resource_changed(key, f"container {action}")

    def changed_all(self, host: str, why: str) -> None:
        for h in self.handles:
            if h.host == host:
                h.wake()
                self.sink.resource_changed(h.key, why)

    async def start(self) -> None:
        for f in self.followers:
            f.thread.start()

    async def stop(self) -> None:
        self.stopping.set()
        for f in self.followers:
            f.close()
