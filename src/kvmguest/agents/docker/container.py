"""The DockerContainer entry points on the Docker SDK (Docker and Podman alike).

The rules that keep them safe: kvmguest touches only containers that carry its label
(:data:`~kvmguest.agents.docker.table.MANAGED`); a name held by any other container is a
clear failure and that container is left as it is; an image is pulled only with
AllowPull = 1; a running container is never re-created; every call has a deadline.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from kvmguest.agents.base import Ended, Outcome, Progress, cap_output
from kvmguest.agents.docker import engine_api as api
from kvmguest.agents.docker import procs
from kvmguest.agents.docker.params import ContainerParams
from kvmguest.agents.docker.table import (
    DEFINITION,
    MANAGED,
    RESOURCE,
    container_state,
    health_of,
    is_managed,
)
from kvmguest.deadline import Deadline
from kvmguest.errors import AgentError, Unreachable
from kvmguest.model import states
from kvmguest.model.states import MonitorResult, ResourceState

POLL = 0.1
# How a monitor's detail starts when the engine is gone and the container verifiably with
# it (procs.engine_absent): the daemon's handle tells it from a plain OFFLINE by this.
ENGINE_GONE = "engine gone"  # the longest a wait sleeps between two inspects when no event wakes it
LOG_TAIL = 20


@dataclass
class Context:
    params: ContainerParams
    progress: Progress | None = None
    # Set by the daemon's event source (or anything else) to cut a wait short.
    changed: threading.Event = field(default_factory=threading.Event)
    _client: Any = None

    def client(self, deadline: Deadline) -> Any:
        """A client whose calls end by ``deadline`` (a fresh one per deadline: the SDK's
        timeout is per client)."""
        return api.client(self.params.host, max(1.0, deadline.remaining()))

    def say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)

    def wait(self, seconds: float) -> None:
        self.changed.wait(seconds)
        self.changed.clear()


def _fail(message: str, ended: Ended = Ended.FAILED) -> Outcome:
    return Outcome(False, message, ended=ended)


def _error(e: AgentError) -> Outcome:
    if isinstance(e, api.TimedOutError):
        return _fail(str(e), Ended.TIMED_OUT)
    if isinstance(e, Unreachable):
        return _fail(str(e), Ended.UNREACHABLE)
    return _fail(str(e))


def monitor(ctx: Context, deadline: Deadline) -> tuple[MonitorResult, dict[str, Any] | None]:
    """The state (the table of :mod:`.table`) and the inspect document it came from (None
    when the engine gave none: no such container, or no answer)."""
    p = ctx.params
    try:
        doc = api.inspect(ctx.client(deadline), p.host, p.container_name)
    except api.TimedOutError as e:
        return states.unknown(str(e)), None  # a hung engine: its containers may well run
    except AgentError as e:
        absent = procs.engine_absent(p.host, p.engine, p.container_name)
        if absent is not None and isinstance(e, Unreachable):
            return states.offline(f"{ENGINE_GONE}: {absent}"), None
        return states.unknown(str(e)), None
    return container_state(p.container_name, doc), doc


def _create_args(p: ContainerParams) -> dict[str, Any]:
    labels = {**p.labels, MANAGED: "1", RESOURCE: p.resource, DEFINITION: p.definition_hash()}
    ports: dict[str, int | tuple[str, int]] = {}
    for item in p.ports:
        spec, _, proto = item.partition("/")
        host_part, _, port = spec.rpartition(":")
        ip, _, hostport = host_part.rpartition(":")
        key = f"{port}/{proto or 'tcp'}"
        ports[key] = (ip.strip("[]"), int(hostport)) if ip else int(hostport)
    args: dict[str, Any] = {
        "image": p.image, "name": p.container_name, "labels": labels, "detach": True,
        "environment": dict(p.env), "volumes": list(p.volumes), "stop_signal": "SIGTERM",
    }  # fmt: skip
    if p.command:
        args["command"] = list(p.command)
    if ports:
        args["ports"] = ports
    if p.network:
        args["network_mode" if p.network in ("none", "host") else "network"] = p.network
    return args


def _ensure_image(ctx: Context, client: Any) -> None:
    p = ctx.params
    try:
        api.call(p.host, f"image {p.image}", lambda: client.images.get(p.image))
        return
    except api.EngineError as e:
        if e.status != 404:
            raise
    if not p.allow_pull:
        raise AgentError(f"image {p.image} is not on the engine at {p.host}, and AllowPull = 0: "
                         "kvmguest pulls nothing unless told to")  # fmt: skip
    ctx.say(f"pulling {p.image}")
    api.call(p.host, f"pull {p.image}", lambda: client.images.pull(p.image))


def _create(ctx: Context, client: Any) -> None:
    p = ctx.params
    _ensure_image(ctx, client)
    ctx.say(f"creating container {p.container_name} from {p.image}")
    args = _create_args(p)
    api.call(p.host, f"create {p.container_name}", lambda: client.containers.create(**args))


def _foreign(name: str) -> str:
    return (f"a container named {name} exists that kvmguest did not create (no {MANAGED} "
            "label): refused, and left as it is")  # fmt: skip


def _logs(client: Any, p: ContainerParams) -> str:
    try:
        raw = api.call(p.host, "logs", lambda: client.api.logs(p.container_name, tail=LOG_TAIL))
    except AgentError:
        return ""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return " | ".join(line for line in text.splitlines()[-3:] if line)


def online(ctx: Context) -> Outcome:
    p = ctx.params
    deadline = Deadline(p.timeout("Online"))
    try:
        client = ctx.client(deadline)
        doc = api.inspect(client, p.host, p.container_name)
        warnings: list[str] = []
        if doc is not None and not is_managed(doc):
            return _fail(_foreign(p.container_name))
        state = container_state(p.container_name, doc).state if doc is not None else None
        running = state is ResourceState.ONLINE or (
            doc is not None and doc.get("State", {}).get("Status") == "running"
        )
        if doc is not None and _label(doc, DEFINITION) != p.definition_hash():
            if running:
                warnings.append(f"container {p.container_name}'s definition differs from the "
                                "configuration: not re-created while it runs")  # fmt: skip
            else:
                ctx.say(f"re-creating {p.container_name}: its definition changed")
                api.call(
                    p.host,
                    "remove",
                    lambda: client.api.remove_container(p.container_name, force=True),
                )
                doc = None
        if doc is None:
            _create(ctx, client)
        status = doc.get("State", {}).get("Status") if doc is not None else None
        if status == "paused":
            api.call(p.host, "unpause", lambda: client.api.unpause(p.container_name))
        elif not running:
            api.call(p.host, "start", lambda: client.api.start(p.container_name))
        return _wait_online(ctx, client, deadline, warnings)
    except AgentError as e:
        return _error(e)


def _label(doc: dict[str, Any], key: str) -> str | None:
    labels = (doc.get("Config") or {}).get("Labels") or {}
    value = labels.get(key)
    return value if isinstance(value, str) else None


def _wait_online(ctx: Context, client: Any, deadline: Deadline, warnings: list[str]) -> Outcome:
    p = ctx.params
    wait = deadline.sub(p.delay_online)
    last = ""
    while True:
        doc = api.inspect(client, p.host, p.container_name)
        result = container_state(p.container_name, doc)
        if result.state is ResourceState.ONLINE and result.confidence == 100:
            return Outcome(True, result.detail, warnings)
        status = (doc or {}).get("State", {}).get("Status")
        if status in ("exited", "dead", "stopped") or doc is None:
            logs = _logs(client, p)
            return _fail(f"{result.detail} right after its start" + (f": {logs}" if logs else ""))
        last = result.detail
        if wait.expired():
            if result.state is ResourceState.ONLINE:
                warnings.append(f"not healthy within DelayAfterOnline ({p.delay_online} s)")
                return Outcome(True, result.detail, warnings)
            return _fail(f"{last} after DelayAfterOnline ({p.delay_online} s)")
        ctx.wait(min(POLL, wait.remaining()))


def offline(ctx: Context) -> Outcome:
    p = ctx.params
    deadline = Deadline(p.timeout("Offline"))
    try:
        client = api.client(p.host, p.stop_timeout + max(5.0, deadline.remaining()))
        doc = api.inspect(client, p.host, p.container_name)
        if doc is None:
            return Outcome(True, f"no container {p.container_name}")
        if not is_managed(doc):
            return Outcome(True, f"container {p.container_name} is not kvmguest's: left as it is")
        ctx.say(f"stopping {p.container_name} (StopTimeout {p.stop_timeout} s)")
        api.call(p.host, "stop", lambda: client.api.stop(p.container_name, timeout=p.stop_timeout))
        return _after_stop(ctx, client, "stopped")
    except AgentError as e:
        return _error(e)


def clean(ctx: Context, reason: int) -> Outcome:
    p = ctx.params
    deadline = Deadline(p.timeout("Clean"))
    try:
        client = ctx.client(deadline)
        try:
            doc = api.inspect(client, p.host, p.container_name)
        except api.TimedOutError:
            raise
        except Unreachable:
            # A hung engine's container is never declared gone; a gone engine's is.
            absent = procs.engine_absent(p.host, p.engine, p.container_name)
            if absent is None:
                raise
            return Outcome(True, f"nothing to kill: {absent}")
        if doc is None:
            return Outcome(True, f"no container {p.container_name}")
        if not is_managed(doc):
            return Outcome(True, f"container {p.container_name} is not kvmguest's: left as it is")
        if doc.get("State", {}).get("Status") in ("running", "paused", "restarting"):
            try:
                api.call(p.host, "kill", lambda: client.api.kill(p.container_name))
            except api.EngineError as e:
                if e.status not in (404, 409):  # 409: it stopped meanwhile
                    raise
        while True:
            doc = api.inspect(client, p.host, p.container_name)
            status = (doc or {}).get("State", {}).get("Status")
            if status not in ("running", "paused", "restarting"):
                break
            if deadline.expired():
                return _fail(f"container {p.container_name} still {status} after kill",
                             Ended.TIMED_OUT)  # fmt: skip
            ctx.wait(POLL)
        return _after_stop(ctx, client, "killed")
    except AgentError as e:
        return _error(e)


def _after_stop(ctx: Context, client: Any, how: str) -> Outcome:
    p = ctx.params
    if p.remove_on_offline:
        try:
            api.call(p.host, "remove", lambda: client.api.remove_container(p.container_name))
        except api.EngineError as e:
            if e.status != 404:
                raise
        return Outcome(True, f"container {p.container_name} {how} and removed")
    return Outcome(True, f"container {p.container_name} {how}")


ACTIONS = ("inspect", "logs")


def action(ctx: Context, token: str, args: list[str]) -> Outcome:
    p = ctx.params
    deadline = Deadline(p.timeout("Action"))
    try:
        client = ctx.client(deadline)
        if token == "inspect":
            doc = api.inspect(client, p.host, p.container_name)
            if doc is None:
                return _fail(f"no container {p.container_name}")
            state = doc.get("State", {})
            summary = {
                "Id": str(doc.get("Id", ""))[:12], "Name": p.container_name,
                "Image": (doc.get("Config") or {}).get("Image"), "Status": state.get("Status"),
                "Pid": state.get("Pid"), "ExitCode": state.get("ExitCode"),
                "StartedAt": state.get("StartedAt"), "Health": health_of(state) or None,
                "Managed": is_managed(doc),
                "Mounts": [m.get("Source") for m in doc.get("Mounts") or []],
            }  # fmt: skip
            return Outcome(True, f"{p.container_name}: {state.get('Status')}",
                           output=cap_output(json.dumps(summary, indent=1)))  # fmt: skip
        if token == "logs":
            tail = int(args[0]) if args and args[0].isdigit() else LOG_TAIL
            raw = api.call(p.host, "logs",
                           lambda: client.api.logs(p.container_name, tail=tail))  # fmt: skip
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            return Outcome(True, f"last {tail} log lines of {p.container_name}",
                           output=cap_output(text))  # fmt: skip
    except AgentError as e:
        return _error(e)
    except ValueError as e:
        return _fail(f"{token}: {e}")
    return _fail(f"unknown action {token!r} (supported: {', '.join(ACTIONS)})")
