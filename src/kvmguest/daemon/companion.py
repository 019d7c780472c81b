"""``kvmguest agent --pacemaker``: the observe-only companion of Pacemaker on one node.

Pacemaker decides every action; the companion never starts, stops, cleans or migrates
anything. It watches the resources Pacemaker runs on this node through their agents' event
sources (libvirt lifecycle events) and a pidfd on each one's main process (a guest's QEMU),
and when one of them dies behind Pacemaker's back it reports the failure at once, exactly
once per death: ``crm_resource --fail --resource R --node N``. Pacemaker's own recovery then
starts in milliseconds instead of at the next recurring monitor.

What runs here it learns from the OCF agent, which notifies it before and after start, stop,
migrate_to and migrate_from (a planned stop or migration is never reported: the resource is
no longer watched from the moment the stop begins), and from the CIB when it starts. The OCF
monitor asks it for a resource's state over the socket: the answer is the event-driven
state, re-probed directly when its last confirmation is older than the monitor's interval.
With the managed system unreachable, only the verified death of the main process is a
failure: the monitor answers 190 while the process lives, as the direct path does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kvmguest.agents import registry
from kvmguest.agents.base import Env, EventSource, Runtime, monitor_once
from kvmguest.agents.loader import Loaded
from kvmguest.agents.ocf_interface import Observed, Ocf, OcfError, OcfSide
from kvmguest.daemon.control import ControlError, ControlServer, request
from kvmguest.daemon.events import QemuWatch
from kvmguest.model.config import ConfigInvalid

log = logging.getLogger("kvmguest.companion")

DEFAULT_SOCKET = "/run/kvmguest/pacemaker.sock"
COMMAND_TIMEOUT = 30.0  # crm_resource, crm_mon, cibadmin, crm_node
PROBE_BOUND = 3.0  # a re-probe for a monitor: below the client's 5 s bound
_RUNNING = (Ocf.SUCCESS, Ocf.DEGRADED)
# Notified actions: before them the resource is not watched (a planned change); after a
# successful start or migrate_from it is.
_STARTS = ("start", "migrate_from")
_STOPS = ("stop", "migrate_to")

Progress = Callable[[str], Coroutine[Any, Any, None]]


class CompanionError(Exception):
    """The companion cannot start (message says why)."""


@dataclass
class Watch:
    resource: str  # Pacemaker's resource id
    kind: str  # its type
    params: dict[str, str]
    observed: Observed
    code: Ocf = Ocf.SUCCESS
    reason: str = ""
    confirmed: float = 0.0  # monotonic time of the last probe
    pid: int | None = None  # the main process watched
    reported: bool = False  # a failure of this run was reported to Pacemaker
    probing: asyncio.Lock = field(default_factory=asyncio.Lock)


def run_command(
    argv: list[str], timeout: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def pacemaker_node() -> str | None:
    """This node's name in the cluster (``crm_node -n``), or None when it cannot be asked."""
    try:
        proc = run_command(["crm_node", "-n"], 10.0)
    except (OSError, subprocess.TimeoutExpired):
        return None
    name = proc.stdout.strip()
    return name if proc.returncode == 0 and name else None


def running_here(node: str, agent_types: set[str]) -> dict[str, tuple[str, dict[str, str]]]:
    """{resource id: (type, its parameters)} of our agents' resources active on ``node``,
    from the CIB (``crm_mon`` for where, ``cibadmin`` for the parameters)."""
    out: dict[str, tuple[str, dict[str, str]]] = {}
    try:
        status = run_command(["crm_mon", "--output-as=xml", "--one-shot", "--inactive"])
        cib = run_command(["cibadmin", "--query", "--scope", "resources"])
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("cannot read the CIB: %s", e)
        return out
    if status.returncode != 0 or cib.returncode != 0:
        log.warning("cannot read the CIB: %s", (status.stderr or cib.stderr).strip())
        return out
    try:
        mon, res = ET.fromstring(status.stdout), ET.fromstring(cib.stdout)
    except ET.ParseError as e:
        log.warning("cannot parse the CIB: %s", e)
        return out
    params: dict[str, dict[str, str]] = {}
    for prim in res.iter("primitive"):
        values: dict[str, str] = {}
        for attrs in prim.findall("instance_attributes"):
            for nv in attrs.findall("nvpair"):
                values[nv.get("name", "")] = nv.get("value", "")
        params[prim.get("id", "")] = values
    for r in mon.iter("resource"):
        agent = r.get("resource_agent", "")
        kind = agent.rpartition(":")[2]
        if not agent.startswith("ocf:kvmguest:") or kind not in agent_types:
            continue
        if r.get("active") != "true" or r.get("failed") == "true":
            continue
        if any(n.get("name") == node for n in r.findall("node")):
            rid = r.get("id", "")
            out[rid] = (kind, params.get(rid, {}))
    return out


class _Sink:
    """An agent's event source reports here: re-probe the resources it names."""

    def __init__(self, companion: Companion, kind: str) -> None:
        self.companion = companion
        self.kind = kind

    def resource_changed(self, key: str, what: str) -> None:
        for w in list(self.companion.watches.values()):
            if w.kind == self.kind and w.observed.key == key:
                self.companion.spawn(self.companion.reprobe(w, what))

    def all_changed(self, what: str) -> None:
        for w in list(self.companion.watches.values()):
            if w.kind == self.kind:
                self.companion.spawn(self.companion.reprobe(w, what))

    def connection(self, source: str, up: bool, why: str, changed: bool) -> None:
        if changed:
            (log.info if up else log.warning)("%s: %s", source, why)


class Companion:
    def __init__(self, node: str, loop: asyncio.AbstractEventLoop) -> None:
        self.node = node
        self.loop = loop
        self.watches: dict[str, Watch] = {}
        # Resources whose stop or migration away has begun: a late monitor's notification
        # must not start watching them again until they start anew.
        self.leaving: set[str] = set()
        # Bumped at every notification of a resource: a watch that began before a newer
        # notification (a stop that began while a monitor's "running" was being acted on)
        # is dropped instead of watching a resource that is going away.
        self.epochs: dict[str, int] = {}
        self.pool: Executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="companion")
        self.process = QemuWatch(loop)
        self.runtimes: dict[tuple[str, str], Runtime] = {}
        self.sources: list[EventSource] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.reports = 0

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("companion task failed: %r", task.exception())

    # --- what is watched ---------------------------------------------------------------

    def side(self, kind: str) -> OcfSide:
        agent = registry.require(kind)
        side = agent.ocf()
        if side is None:
            raise KeyError(f"type {kind} has no OCF agent")
        return side

    async def _events_for(self, kind: str, uri: str) -> None:
        """The agent's event source for this managed system, started once."""
        if (kind, uri) in self.runtimes:
            return
        runtime = registry.require(kind).runtime(Env(uri=uri, system=self.node), shared=True)
        self.runtimes[(kind, uri)] = runtime
        source = runtime.events(_Sink(self, kind), self.loop, self.pool)
        if source is not None:
            self.sources.append(source)
            await source.start()

    async def watch(self, rid: str, kind: str, params: dict[str, str]) -> Watch | None:
        epoch = self.epochs.get(rid, 0)
        side = self.side(kind)
        env = side.from_environ({f"OCF_RESKEY_{k}": v for k, v in params.items()}
                                | {"OCF_RESOURCE_INSTANCE": rid})  # fmt: skip
        observed = await self.loop.run_in_executor(self.pool, side.observe, env)
        if self.epochs.get(rid, 0) != epoch:
            return None  # superseded while we looked (a stop, a new start)
        if observed is None:
            log.info("%s: not watched (its monitor needs the direct path)", rid)
            self.unwatch(rid)
            return None
        old = self.watches.get(rid)
        if old is not None and old.params == params and not old.reported:
            return old
        self.unwatch(rid)
        for other in list(self.watches.values()):
            # One guest, one resource: a resource that still claims this guest here (its
            # stop went unnoticed) must not report the new one's deaths as its own.
            if other.kind == kind and (other.observed.key, other.observed.uri) == (
                observed.key,
                observed.uri,
            ):
                log.warning("%s: %s is %s now; no longer watched as %s", other.resource,
                            observed.key, rid, other.resource)  # fmt: skip
                self.unwatch(other.resource)
        w = Watch(rid, kind, params, observed)
        self.watches[rid] = w
        log.info("%s: watching %s (%s)", rid, observed.key, kind)
        await self._events_for(kind, observed.uri)
        await self.reprobe(w, "watch")
        return self.watches.get(rid)

    def unwatch(self, rid: str) -> None:
        if self.watches.pop(rid, None) is not None:
            self.process.unwatch(rid)
            log.info("%s: no longer watched", rid)

    # --- probes and failures -------------------------------------------------------------

    async def reprobe(self, w: Watch, why: str, *, report: bool = True) -> None:
        """Probe ``w`` now; a death it finds is reported unless the caller is a monitor
        (which tells Pacemaker itself: reporting it too would count it twice)."""
        async with w.probing:
            if self.watches.get(w.resource) is not w:
                return
            code, reason = await self.loop.run_in_executor(
                self.pool, w.observed.probe, 1, PROBE_BOUND
            )
            if self.watches.get(w.resource) is not w:
                return  # unwatched (a planned stop began) while probing
            w.code, w.reason, w.confirmed = code, reason, time.monotonic()
            if code in _RUNNING:
                pid = await self.loop.run_in_executor(self.pool, w.observed.main_pid)
                if pid is not None and pid != w.pid:
                    w.pid = pid
                    self.process.watch(w.resource, pid, lambda p: self._exited(w, p))
            elif code is Ocf.NOT_RUNNING:
                if report:
                    self.fail(w, f"{reason} ({why})")
                else:
                    w.reported = True

    def _exited(self, w: Watch, pid: int) -> None:
        if self.watches.get(w.resource) is not w:
            return
        w.code, w.reason, w.confirmed = Ocf.NOT_RUNNING, f"main process {pid} exited", 0.0
        self.fail(w, f"main process {pid} of {w.observed.key} exited")

    def fail(self, w: Watch, why: str) -> None:
        """Report the failure to Pacemaker, once for this run of the resource."""
        if w.reported:
            return
        w.reported = True
        self.reports += 1
        log.warning("%s: failed: %s; reporting it to Pacemaker", w.resource, why)
        argv = ["crm_resource", "--fail", "--resource", w.resource, "--node", self.node]

        def report() -> None:
            try:
                proc = run_command(argv)
            except (OSError, subprocess.TimeoutExpired) as e:
                log.error("%s: crm_resource --fail: %s", w.resource, e)
                return
            if proc.returncode != 0:
                log.error("%s: crm_resource --fail: %s", w.resource, proc.stderr.strip())

        self.loop.run_in_executor(self.pool, report)

    # --- requests ------------------------------------------------------------------------

    async def handle(self, req: dict[str, Any], _progress: Progress) -> dict[str, Any]:
        try:
            cmd = req["cmd"]
            if cmd == "monitor":
                return await self.monitor(req)
            if cmd == "notify":
                return await self.notify(req)
            if cmd == "oneshot-monitor":
                return await self.oneshot_monitor(req)
            if cmd == "status":
                return {"ok": True, "mode": "pacemaker", "node": self.node,
                        "reports": self.reports, "resources": [
                            {"resource": w.resource, "type": w.kind, "key": w.observed.key,
                             "rc": int(w.code), "reason": w.reason, "pid": w.pid}
                            for w in self.watches.values()]}  # fmt: skip
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        except (KeyError, TypeError, ValueError, OcfError) as e:
            return {"ok": False, "error": f"bad request: {e}"}

    @staticmethod
    def _params(req: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
        rid, kind, params = req["resource"], req["type"], req.get("params") or {}
        if not isinstance(rid, str) or not isinstance(kind, str) or not isinstance(params, dict):
            raise ValueError("resource, type and params are a string, a string and an object")
        return rid, kind, {str(k): str(v) for k, v in params.items()}

    async def monitor(self, req: dict[str, Any]) -> dict[str, Any]:
        rid, kind, params = self._params(req)
        w = self.watches.get(rid)
        interval = max(0, int(req.get("interval_ms") or 0)) / 1000
        if w is None or w.kind != kind or w.params != params or interval == 0:
            # A probe ("does it run here?") is always the direct path's to answer.
            return {"ok": True, "rc": None, "reason": "not watched: take the direct path"}
        if w.code in _RUNNING and time.monotonic() - w.confirmed > interval:
            await self.reprobe(w, "monitor", report=False)
        return {"ok": True, "rc": int(w.code), "reason": w.reason}

    async def notify(self, req: dict[str, Any]) -> dict[str, Any]:
        rid, kind, params = self._params(req)
        action, phase, rc = req["action"], req["phase"], req.get("rc")
        if action != "monitor":
            self.epochs[rid] = self.epochs.get(rid, 0) + 1
        if phase == "pre" and action in _STOPS:
            self.leaving.add(rid)
            self.unwatch(rid)
        elif phase == "pre" and action in _STARTS:
            self.leaving.discard(rid)
            self.unwatch(rid)
        elif phase == "post" and action in _STARTS:
            if rc == 0:
                await self.watch(rid, kind, params)
            else:
                self.unwatch(rid)
        elif (
            phase == "post" and action == "monitor" and rc in _RUNNING
            and rid not in self.watches and rid not in self.leaving
        ):  # fmt: skip
            # A monitor that took the direct path found it running: watch it (a companion
            # restarted since it started, or one the CIB did not show).
            await self.watch(rid, kind, params)
        return {"ok": True, "watched": rid in self.watches}

    async def oneshot_monitor(self, req: dict[str, Any]) -> dict[str, Any]:
        """``kvmguest monitor RES -c main.cf`` asked us: probe it now through its agent (a
        process that already has the drivers loaded); any problem: the caller probes."""
        config, rid = str(req["config"]), str(req["resource"])
        env = Env(config=config, system=str(req["system"]), uri=str(req["uri"]))

        def probe() -> dict[str, Any]:
            loaded = Loaded.cached(config) or Loaded.from_file(config)
            kind = loaded.cfg.resource(rid).kind
            handle = registry.require(kind).runtime(env).bind(loaded, rid)
            try:
                return {"ok": True, **monitor_once(handle).as_dict()}
            finally:
                handle.close()

        try:
            return await self.loop.run_in_executor(self.pool, probe)
        except (ConfigInvalid, KeyError) as e:
            return {"ok": False, "error": str(e)}

    async def rebuild(self) -> None:
        """Watch what Pacemaker runs here now (the CIB), once, at start."""
        types = {a.type_name for a in registry.ocf_agents()}
        found = await self.loop.run_in_executor(self.pool, running_here, self.node, types)
        for rid, (kind, params) in found.items():
            try:
                await self.watch(rid, kind, params)
            except (KeyError, OcfError) as e:
                log.warning("%s: cannot watch it: %s", rid, e)

    async def stop(self) -> None:
        for source in self.sources:
            await source.stop()
        self.process.close()
        for t in list(self._tasks):
            t.cancel()
        with contextlib.suppress(TimeoutError):
            closing = [
                self.loop.run_in_executor(self.pool, r.close) for r in self.runtimes.values()
            ]
            if closing:
                await asyncio.wait_for(asyncio.gather(*closing), 5.0)
        self.pool.shutdown(wait=False, cancel_futures=True)


def refuse_beside_agent(agent_socket: str) -> None:
    """The companion never runs beside a managing ``kvmguest agent``: two deciders."""
    if not os.path.exists(agent_socket):
        return
    with contextlib.suppress(ControlError):
        for reply in request(agent_socket, "status", timeout=5.0):
            if reply.get("mode") == "pacemaker":
                return  # a companion's socket at that path: not a managing agent
            raise CompanionError(
                f"a managing kvmguest agent runs on this node (control socket {agent_socket}):"
                " stop it first; the companion only observes what Pacemaker manages"
            )


async def serve(
    node: str,
    socket_path: str,
    group: str | None,
    ready: Callable[[], None] | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    for agent in registry.agents():
        agent.prepare_loop(loop)
    companion = Companion(node, loop)
    control = ControlServer(socket_path, companion.handle, group)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await control.start()
    await companion.rebuild()
    log.info("companion running on node %s: watching %d resource(s), socket %s, pid %d",
             node, len(companion.watches), socket_path, os.getpid())  # fmt: skip
    if ready:
        ready()
    await stop.wait()
    log.info("companion stopping: nothing more is reported")
    await control.close()
    await companion.stop()
