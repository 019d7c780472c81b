"""``kvmguest agent``: the daemon's life cycle, AutoStart, group operations and the
control API's commands."""

from __future__ import annotations

import asyncio
import logging
import os
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
from kvmguest.daemon.store import Store
from kvmguest.framework.decision import State
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
            name: GroupSpec.from_config(engine.loaded.cfg, name)
            for name in {r.group for r in engine.resources.values()}
        }
        self._locks: dict[str, asyncio.Lock] = {g: asyncio.Lock() for g in self.specs}

    def states(self) -> dict[str, State]:
        return {n: r.machine.state for n, r in self.engine.resources.items()}

    def spec(self, group: str) -> GroupSpec:
        try:
            spec = self.specs[group]
        except KeyError:
            raise KeyError(f"no group {group!r} runs on {self.engine.env.system}") from None
        frozen = any(self.engine.resources[r].machine.frozen for r in spec.resources)
        return spec.with_frozen(frozen)

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
        else:
            names = list(spec.resources)
            frozen = [self.engine.resources[n].machine.frozen for n in names]
            if (what == "freeze" and all(frozen)) or (what == "unfreeze" and not any(frozen)):
                state = "frozen" if what == "freeze" else "not frozen"
                return {"ok": True, "done": [], "message": f"group {group} is already {state}",
                        **self._gstatus(group)}  # fmt: skip
        for name in names:
            self.engine.request(self.engine.resources[name], what)
        return {"ok": True, "done": names, **self._gstatus(group)}

    async def autostart(self) -> None:
        """Bring up the groups whose AutoStartList names this system, once probed."""
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
        cmd = req["cmd"]
        try:
            async with asyncio.timeout(3600):
                return await self._handle(cmd, req, progress)
        except (KeyError, GroupError) as e:
            return {"ok": False, "error": str(e.args[0]) if e.args else str(e)}

    async def _handle(self, cmd: str, req: dict[str, Any], progress: Progress) -> dict[str, Any]:
        eng = self.engine
        if cmd == "status":
            names = [req["resource"]] if req.get("resource") else sorted(eng.resources)
            res = [eng.resource(n).status() for n in names]
            groups = {g: str(group_status(self.spec(g), self.states())) for g in self.specs}
            return {"ok": True, "system": eng.env.system, "connected": eng.connected,
                    "resources": res, "groups": groups}  # fmt: skip
        if cmd == "history":
            if req.get("resource"):
                eng.resource(req["resource"])  # an unknown resource is an error, as for status
            rows = eng.store.history(req.get("resource"), int(req.get("limit", 50)))
            return {"ok": True, "history": [r.as_dict() for r in rows]}
        if cmd == "group":
            op, group = req["op"], req["group"]
            async with self._locks.setdefault(group, asyncio.Lock()):
                if op == "online":
                    return await self.group_online(group, progress)
                if op == "offline":
                    return await self.group_offline(group, progress)
                if op == "switch":
                    return await self.group_switch(group, req["to"], progress)
                if op in ("clear", "freeze", "unfreeze"):
                    return await self.group_simple(group, op)
            return {"ok": False, "error": f"unknown group operation {op!r}"}
        if cmd == "resource":
            r = eng.resource(req["resource"])
            op = req["op"]
            if op in ("probe", "clear", "online", "offline"):
                d = eng.request(r, op)
                return {"ok": not d.rejected, "state": d.state.value, "log": d.log}
            if op == "action":
                out = await eng.run_action(r, req["token"], list(req.get("args", [])))
                return {"ok": out.ok, "message": out.message, "output": out.output}
            return {"ok": False, "error": f"unknown resource operation {op!r}"}
        return {"ok": False, "error": f"unknown command {cmd!r}"}


async def serve(
    loaded: Loaded, opts: AgentOptions, ready: Callable[[], None] | None = None
) -> None:
    loop = asyncio.get_running_loop()
    for agent in registry.agents():
        agent.prepare_loop(loop)
    store = Store(opts.db)
    metrics = Metrics()
    engine = Engine(loaded, opts.env, store, metrics)
    service = Service(engine, opts)
    control = ControlServer(opts.socket, service.handle, opts.group)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await engine.start()
    await control.start()
    if opts.metrics_port is not None:
        metrics.serve(opts.metrics_port, opts.metrics_addr)
    log.info(
        "agent running on system %s: %d resource(s), control socket %s, pid %d",
        opts.env.system, len(engine.resources), opts.socket, os.getpid(),
    )  # fmt: skip
    store.record("-", "agent", f"started (pid {os.getpid()}, {time.strftime('%FT%T')})")
    if ready:
        ready()
    runner = asyncio.ensure_future(engine.run())
    autostart = asyncio.ensure_future(service.autostart()) if opts.autostart else None
    await stop.wait()
    log.info("agent stopping: in-flight entry points get up to 30 s; guests are left as they are")
    await control.close()
    await engine.stop(grace=30.0)
    runner.cancel()
    if autostart is not None:
        autostart.cancel()
    store.record("-", "agent", "stopped")
    store.close()
