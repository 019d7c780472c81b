"""``kvmguest agent``: the daemon's life cycle, AutoStart, group operations and the
control API's commands."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from kvmguest.agents import registry
from kvmguest.agents.base import Env
from kvmguest.daemon.control import ControlServer
from kvmguest.daemon.engine import Engine, Resource
from kvmguest.daemon.metrics import Metrics
from kvmguest.daemon.store import Store, StoreError
from kvmguest.errors import ConfigError
from kvmguest.framework.decision import State
from kvmguest.framework.faults import parents_to_offline
from kvmguest.framework.groups import (
    GroupError,
    GroupSpec,
    autostart_groups,
    group_status,
    next_to_offline,
    next_to_online,
    plan_clear,
    plan_offline,
    plan_online,
    plan_switch,
)
from kvmguest.framework.policy import PolicyError
from kvmguest.model.resolver import Loaded

log = logging.getLogger("kvmguest.daemon")

DEFAULT_DB = "/var/lib/kvmguest/agent.db"
Progress = Callable[[str], Coroutine[Any, Any, None]]
_DOWN = (State.OFFLINE, State.INTENTIONAL_OFFLINE, State.FAULTED)


@dataclass(frozen=True)
class AgentOptions:
    env: Env
    socket: str
    db: str = DEFAULT_DB
    group: str | None = None  # the control socket's group
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    autostart: bool = True


class Service:
    def __init__(self, engine: Engine, opts: AgentOptions) -> None:
        self.engine = engine
        self.opts = opts
        self.specs = {
            name: GroupSpec.from_config(engine.loaded, name)
            for name in {r.group for r in engine.resources.values()}
        }
        # One per group that runs here, made once: a request naming another group is
        # refused before any lock is looked up, so nothing grows per request.
        self._locks: dict[str, asyncio.Lock] = {g: asyncio.Lock() for g in self.specs}
        engine.on_change = self._propagate_fault

    def states(self) -> dict[str, State]:
        return {n: r.machine.state for n, r in self.engine.resources.items()}

    def spec(self, group: str) -> GroupSpec:
        try:
            spec = self.specs[group]
        except KeyError:
            if group in self.engine.not_run:
                why = self.engine.not_run[group]
                raise KeyError(f"group {group} is not run by kvmguest: {why}") from None
            raise KeyError(f"no group {group!r} runs on {self.engine.env.system}") from None
        frozen = any(self.engine.resources[r].machine.frozen for r in spec.resources)
        return spec.with_frozen(frozen)

    def _propagate_fault(self, r: Resource) -> None:
        """VCS takes the resources that require a FAULTED one offline (framework/faults.py)."""
        if r.group not in self.specs:
            return
        spec = self.spec(r.group)
        if spec.frozen:
            return
        for name in parents_to_offline(spec, self.states()):
            parent = self.engine.resources[name]
            log.warning("%s: taken offline, a resource it requires has FAULTED", name)
            self.engine.request(parent, "offline")

    # --- group operations --------------------------------------------------------------

    async def _drive(
        self, group: str, pick: Callable[[GroupSpec, dict[str, State]], tuple[str, ...]],
        request: str, settled: Callable[[State], bool], progress: Progress,
    ) -> dict[str, Any]:  # fmt: skip
        """Ask ``pick``'s resources, wave by wave, until nothing is left to ask."""
        spec = self.spec(group)
        asked: set[str] = set()
        while True:
            todo = [r for r in pick(spec, self.states()) if r not in asked]
            if not todo:
                break
            for name in todo:
                r = self.engine.resources[name]
                d = self.engine.request(r, request)
                asked.add(name)
                if d.rejected:
                    return {"ok": False, "error": d.log}
                await progress(f"{name}: {request} ({d.state.value})")
            for name in todo:
                r = self.engine.resources[name]
                limit = float(r.handle.timeout("Online" if request == "online" else "Offline"))
                state = await self.engine.wait_for(r, settled, limit * 3 + 30)
                await progress(f"{name}: {state.value}")
                if not settled(state) or state is State.FAULTED:
                    return {
                        "ok": False,
                        "error": f"{name} is {state.value}",
                        **self._gstatus(group),
                    }
        return {"ok": True, **self._gstatus(group)}

    def _gstatus(self, group: str) -> dict[str, Any]:
        return {"group": group, "group_state": str(group_status(self.spec(group), self.states()))}

    async def group_online(self, group: str, progress: Progress) -> dict[str, Any]:
        plan_online(self.spec(group), self.states())  # refuses early, with the reason
        return await self._drive(
            group, next_to_online, "online",
            lambda s: s in (State.ONLINE, State.FAULTED) or s.admin_wait, progress,
        )  # fmt: skip

    async def group_offline(self, group: str, progress: Progress) -> dict[str, Any]:
        plan_offline(self.spec(group), self.states())
        return await self._drive(
            group, next_to_offline, "offline", lambda s: s in _DOWN or s.admin_wait, progress
        )

    async def group_switch(self, group: str, target: str, progress: Progress) -> dict[str, Any]:
        """Live-migrate the group's guests to ``target``, children first (KVMGuest supports
        migrate); the guests keep running throughout."""
        spec = self.spec(group)
        # Refuses (GroupError) a parallel or frozen group, a target outside SystemList or
        # this system itself, and a group with a resource starting, cleaning or unprobed.
        plan_switch(spec, self.states(), self.engine.env.system or "", target)
        for wave in spec.online_waves():
            for name in wave:
                r = self.engine.resources[name]
                if r.machine.state is not State.ONLINE:
                    continue
                self._progress_from_threads(r, progress)
                d = self.engine.request(r, "migrate", target)
                if d.rejected:
                    return {"ok": False, "error": d.log}
                await progress(f"{name}: migrating to {target}")
                limit = float(r.handle.timeout("Migrate")) + 60
                state = await self.engine.wait_for(r, lambda s: s is not State.MIGRATING, limit)
                last = r.machine.last_result
                if state is State.ONLINE:
                    why = r.last_failure or (last.detail if last else state.value)
                    return {"ok": False, "error": f"{name} did not migrate: {why}"}
                await progress(f"{name}: {state.value} here")
        return {"ok": True, **self._gstatus(group)}

    def _progress_from_threads(self, r: Resource, progress: Progress) -> None:
        loop = asyncio.get_running_loop()

        def forward(msg: str) -> None:
            asyncio.run_coroutine_threadsafe(progress(msg), loop)

        r.handle.set_progress(forward)

    async def group_simple(self, group: str, what: str) -> dict[str, Any]:
        spec = self.spec(group)
        if what == "clear":
            names = [s.resource for s in plan_clear(spec, self.states()).steps]
            # ... and the ADMIN_WAIT ones: clear verifies them with a monitor.
            names += [
                n for n in spec.resources if self.engine.resources[n].machine.state.admin_wait
            ]
        else:
            names = list(spec.resources)
            frozen = [self.engine.resources[n].machine.frozen for n in names]
            if (what == "freeze" and all(frozen)) or (what == "unfreeze" and not any(frozen)):
                state = "frozen" if what == "freeze" else "not frozen"
                return {"ok": True, "done": [], "message": f"group {group} is already {state}",
                        **self._gstatus(group)}  # fmt: skip
        for name in names:
            self.engine.request(self.engine.resources[name], what)
        if what == "unfreeze":
            self._forget_reset()
        return {"ok": True, "done": names, **self._gstatus(group)}

    async def oneshot_monitor(self, req: dict[str, Any]) -> dict[str, Any]:
        """``kvmguest monitor RES`` asked us: probe the resource now, when it is ours (the
        same configuration file, system and managed system); else the caller probes."""
        eng = self.engine
        r = eng.resources.get(str(req.get("resource")))
        same = (
            os.path.realpath(str(req.get("config"))) == os.path.realpath(eng.env.config)
            and req.get("system") == eng.env.system
            and req.get("uri") == eng.env.uri
        )
        if r is None or not same:
            return {"ok": False, "error": "not a resource of this agent: probe it directly"}
        result = await eng.probe_now(r)
        return {"ok": True, **result.as_dict()}

    def _forget_reset(self) -> None:
        """'state lost' stays in status until the operator has unfrozen every group."""
        store = self.engine.store
        if store.reset_at and not any(r.machine.frozen for r in self.engine.resources.values()):
            log.warning("every group unfrozen after the reset at %s", store.reset_at)
            store.set_meta("reset_at", None)

    async def autostart(self) -> None:
        """Bring up the groups whose AutoStartList names this system, once probed."""
        if self.engine.store.reset_at is not None:
            log.error(
                "AutoStart skipped: state was lost (database reset at %s); every group is "
                "frozen until an operator unfreezes it", self.engine.store.reset_at,
            )  # fmt: skip
            return
        for r in self.engine.resources.values():
            await self.engine.wait_for(r, lambda s: s is not State.PROBING, 300)
        names = autostart_groups(self.specs.values(), self.engine.env.system or "", self.states())
        for group in names:
            if any(
                s is State.INTENTIONAL_OFFLINE
                for n, s in self.states().items() if n in self.specs[group].resources
            ):  # fmt: skip
                log.info("AutoStart %s skipped: a guest was migrated away", group)
                continue

            async def quiet(msg: str) -> None:
                log.info("AutoStart: %s", msg)

            try:
                result = await self.group_online(group, quiet)
                log.info("AutoStart %s: %s", group, result.get("group_state", result))
            except GroupError as e:
                log.warning("AutoStart %s: %s", group, e)

    # --- the control API ---------------------------------------------------------------

    async def handle(self, req: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Every request gets an answer: a refusal, a bad request and an internal error
        alike become ``{"ok": false, "error": ...}``."""
        cmd = req.get("cmd")
        try:
            async with asyncio.timeout(3600):
                return await self._handle(str(cmd), req, progress)
        except (KeyError, GroupError, BadRequest) as e:
            return {"ok": False, "error": str(e.args[0]) if e.args else str(e)}
        except TimeoutError:
            return {"ok": False, "error": "the request did not finish within an hour"}
        except Exception as e:
            log.error("control request %.200s: %s: %s", cmd, type(e).__name__, e)
            log.debug("control request failure", exc_info=True)
            return {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}

    def status(self, resource: str | None) -> dict[str, Any]:
        eng = self.engine
        names = [resource] if resource else sorted(eng.resources)
        res = [eng.resource(n).status() for n in names]
        groups = {g: str(group_status(self.spec(g), self.states())) for g in self.specs}
        store = eng.store
        return {"ok": True, "system": eng.env.system, "connected": eng.connected,
                "state_saved": store.saved, "state_error": store.error,
                "reset_at": store.reset_at, "resources": res, "groups": groups,
                "not_run": eng.not_run}  # fmt: skip

    async def _handle(self, cmd: str, req: dict[str, Any], progress: Progress) -> dict[str, Any]:
        eng = self.engine
        if cmd == "status":
            return self.status(_text(req, "resource", required=False))
        if cmd == "oneshot-monitor":
            return await self.oneshot_monitor(req)
        if cmd == "history":
            limit = req.get("limit", 50)
            if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= 100_000:
                raise BadRequest(f"limit must be an integer from 1 to 100000, not {limit!r:.40}")
            resource = _text(req, "resource", required=False)
            if resource:
                eng.resource(resource)  # an unknown resource is an error, as for status
            rows = eng.store.history(resource, limit)
            return {"ok": True, "history": [r.as_dict() for r in rows]}
        if cmd == "group":
            op, group = _text(req, "op"), _text(req, "group")
            self.spec(group)  # KeyError for a group that does not run here
            async with self._locks[group]:
                if op == "online":
                    return await self.group_online(group, progress)
                if op == "offline":
                    return await self.group_offline(group, progress)
                if op == "switch":
                    return await self.group_switch(group, _text(req, "to"), progress)
                if op in ("clear", "freeze", "unfreeze"):
                    return await self.group_simple(group, op)
            return {"ok": False, "error": f"unknown group operation {op!r:.60}"}
        if cmd == "resource":
            r = eng.resource(_text(req, "resource"))
            op = _text(req, "op")
            if op in ("probe", "clear", "online", "offline"):
                d = eng.request(r, op)
                return {"ok": not d.rejected, "state": d.state.value, "log": d.log}
            if op == "action":
                args = req.get("args", [])
                if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                    raise BadRequest("args must be a list of strings")
                out = await eng.run_action(r, _text(req, "token"), args)
                return {"ok": out.ok, "message": out.message, "output": out.output}
            return {"ok": False, "error": f"unknown resource operation {op!r:.60}"}
        return {"ok": False, "error": f"unknown command {cmd!r:.60}"}


class BadRequest(Exception):
    """A control request with a missing or mistyped field: answered, never raised on."""


def _text(req: dict[str, Any], key: str, *, required: bool = True) -> Any:
    value = req.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 256:
        what = "missing" if value is None else f"must be a non-empty string, not {value!r:.40}"
        raise BadRequest(f"{key} {what}")
    return value


class StartupError(Exception):
    """The daemon cannot start: one line for the operator, and the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Fatal(Exception):
    """A task the daemon owns died: exit non-zero so that systemd restarts the agent."""


async def serve(
    loaded: Loaded,
    opts: AgentOptions,
    ready: Callable[[], None] | None = None,
    notify: Callable[[str], None] = lambda _state: None,
) -> None:
    """Run the daemon until SIGTERM. Raises StartupError (nothing started) or Fatal."""
    loop = asyncio.get_running_loop()
    failed: asyncio.Future[str] = loop.create_future()

    def fatal(what: str, e: BaseException) -> None:
        log.debug("%s failed", what, exc_info=e)
        if not failed.done():
            failed.set_result(f"{what}: {type(e).__name__}: {e}")

    loop.set_exception_handler(_LoopErrors(fatal))
    raise_fd_limit()
    for agent in registry.agents():
        agent.prepare_loop(loop)
    metrics = Metrics()
    try:
        store = Store(opts.db, on_failure=metrics.state_write_failures.inc)
    except StoreError as e:
        raise StartupError(str(e), EX_CANTCREAT) from None
    try:
        engine = Engine(loaded, opts.env, store, metrics, fatal=fatal)
    except (PolicyError, ConfigError, KeyError) as e:
        store.close()
        raise StartupError(str(e.args[0]) if e.args else str(e), EX_CONFIG) from None
    service = Service(engine, opts)
    control = ControlServer(opts.socket, service.handle, opts.group)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await engine.start()
    try:
        await control.start()
    except KeyError:
        raise StartupError(f"--socket-group {opts.group}: no such group", EX_CONFIG) from None
    except OSError as e:
        raise StartupError(f"control socket {opts.socket}: {e.strerror}", EX_CANTCREAT) from None
    if opts.metrics_port is not None:
        try:
            await metrics.serve(opts.metrics_port, opts.metrics_addr)
        except OSError as e:
            raise StartupError(f"metrics on {opts.metrics_addr}:{opts.metrics_port}: "
                               f"{e.strerror}", EX_UNAVAILABLE) from None  # fmt: skip
    log.info(
        "agent running on system %s: %d resource(s), control socket %s, pid %d",
        opts.env.system, len(engine.resources), opts.socket, os.getpid(),
    )  # fmt: skip
    if store.reset_at:
        log.error("state lost, reset at %s: every group is frozen until an operator "
                  "unfreezes it (kvmguest group unfreeze GROUP)", store.reset_at)  # fmt: skip
    store.record("-", "agent", f"started (pid {os.getpid()}, {time.strftime('%FT%T')})")
    if ready:
        ready()
    interval = watchdog_interval()
    if interval is not None:
        engine.max_sleep = interval
    tasks = {"engine loop": engine.run(), "state saving": _save_retry(store, metrics)}
    if opts.autostart:
        tasks["AutoStart"] = service.autostart()
    if interval is not None:
        tasks["watchdog"] = _watchdog(engine, interval, notify)
    running = [_supervised(name, coro, fatal) for name, coro in tasks.items()]
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
    if failed.done():
        why = failed.result()
        log.critical("internal error, exiting so that the agent is restarted: %s", why)
        with contextlib.suppress(Exception):
            store.record("-", "agent", f"failed: {why}")
            store.flush()
        raise Fatal(why)
    notify("STOPPING=1")
    log.info("agent stopping: in-flight entry points get up to 30 s; guests are left as they are")
    for task in running:  # first: the engine loop ending now is no failure
        task.cancel()
    await control.close()
    await metrics.close()
    await engine.stop(grace=30.0)
    store.record("-", "agent", "stopped")
    store.close()


# sysexits.h: what an exit code tells systemd (RestartPreventExitStatus=78 in the unit).
EX_SOFTWARE = 70  # an internal error: restarted
EX_UNAVAILABLE = 69
EX_CANTCREAT = 73  # the database or the socket cannot be created: restarted (a late mount)
EX_CONFIG = 78  # a configuration error: not restarted until the operator fixes it


def _supervised(
    name: str, coro: Coroutine[Any, Any, None], fatal: Callable[[str, BaseException], None]
) -> asyncio.Task[None]:
    """A task that must run as long as the daemon: its end is a fatal error."""
    task = asyncio.ensure_future(coro)

    def done(t: asyncio.Task[None]) -> None:
        if t.cancelled():
            return
        e = t.exception()
        if e is not None:
            fatal(name, e)
        elif name != "AutoStart":
            fatal(name, RuntimeError("ended"))

    task.add_done_callback(done)
    return task


SAVE_RETRY = 2.0  # seconds between attempts to save state while the database fails


async def _save_retry(store: Store, metrics: Metrics) -> None:
    while True:
        await asyncio.sleep(SAVE_RETRY)
        if not store.saved:
            store.flush()
        metrics.state_saved.set(1 if store.saved else 0)


def watchdog_interval() -> float | None:
    """Half systemd's WatchdogSec (WATCHDOG_USEC), when the watchdog is meant for us."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1e6 / 2


async def _watchdog(engine: Engine, interval: float, notify: Callable[[str], None]) -> None:
    """WATCHDOG=1 from the loop itself, and only while the engine's loop goes round: a
    stalled loop or a stuck engine stops the pings and systemd restarts the daemon."""
    while True:
        if engine.clock() - engine.last_pass <= 2 * interval:
            notify("WATCHDOG=1")
        else:
            log.error("engine loop stalled for %.0f s: no watchdog ping",
                      engine.clock() - engine.last_pass)  # fmt: skip
        await asyncio.sleep(interval)


class _LoopErrors:
    """The loop's exception handler. An exception in a callback of ours is fatal (a live
    process that does nothing is worse than a restart); an OSError of a socket (EMFILE on
    accept, a peer reset) is a warning, at most one a minute."""

    def __init__(self, fatal: Callable[[str, BaseException], None]) -> None:
        self.fatal = fatal
        self.last = -1e9
        self.muted = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        e = context.get("exception")
        if isinstance(e, BaseException) and not isinstance(e, OSError):
            self.fatal(str(context.get("message", "callback")), e)
            return
        now = time.monotonic()
        if now - self.last < 60:
            self.muted += 1
            return
        more = f" ({self.muted} more like it in the last minute)" if self.muted else ""
        self.last, self.muted = now, 0
        log.warning("%s%s%s", context.get("message", "I/O error"), f": {e}" if e else "", more)


def raise_fd_limit() -> None:
    """The soft RLIMIT_NOFILE up to the hard one: a pidfd per guest, clients, libvirt."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
