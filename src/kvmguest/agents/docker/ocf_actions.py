"""The OCF actions of ocf:kvmguest:DockerContainer and ocf:kvmguest:DockerDaemon, on the
same entry points as the VCS ones: the resource comes from the OCF parameters (or from a
main.cf resource), each action is bounded by Pacemaker's op timeout."""

from __future__ import annotations

import shlex
from collections.abc import Callable

from kvmguest.agents.base import Outcome, local_system
from kvmguest.agents.docker import checks
from kvmguest.agents.docker import container as cep
from kvmguest.agents.docker import engine_ep as dep
from kvmguest.agents.docker.lean import budget
from kvmguest.agents.docker.params import (
    ContainerParams,
    DaemonParams,
    container_params,
    daemon_params,
    default_host,
)
from kvmguest.agents.ocf_interface import Ocf, OcfEnv, OcfError, monitor_code
from kvmguest.deadline import Deadline
from kvmguest.model.config import ConfigInvalid
from kvmguest.model.states import ResourceState

DEFAULT_BUDGET = 60.0


def _words(env: OcfEnv, name: str) -> list[str]:
    try:
        return shlex.split(env.get(name))
    except ValueError as e:
        raise OcfError(Ocf.ERR_CONFIGURED, f"{name}: {e}") from None


def _pairs(env: OcfEnv, name: str) -> dict[str, str]:
    out = {}
    for word in _words(env, name):
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise OcfError(Ocf.ERR_CONFIGURED, f"{name}: {word!r} is not KEY=value")
        out[key] = value
    return out


def _int(env: OcfEnv, name: str) -> int:
    try:
        return int(env.get(name))
    except ValueError:
        raise OcfError(Ocf.ERR_CONFIGURED, f"{name} must be an integer") from None


def _statics(action: str, env: OcfEnv) -> dict[str, int]:
    secs = max(1, int(budget(env.meta.timeout_ms, DEFAULT_BUDGET)))
    return {"OnlineTimeout": secs, "OfflineTimeout": secs, "CleanTimeout": secs,
            "MonitorTimeout": secs, "ActionTimeout": secs}  # fmt: skip


def _loaded(env: OcfEnv):  # type: ignore[no-untyped-def]
    from kvmguest.agents.loader import Loaded

    if not env.get("config") or not env.get("resource"):
        raise OcfError(Ocf.ERR_CONFIGURED, "config and resource go together")
    try:
        return Loaded.from_file(env.get("config"))
    except ConfigInvalid as e:
        raise OcfError(Ocf.ERR_CONFIGURED, str(e)) from None
    except OSError as e:
        raise OcfError(Ocf.ERR_ARGS, f"config {env.get('config')}: {e.strerror}") from None


def container_from(action: str, env: OcfEnv) -> ContainerParams:
    statics = _statics(action, env)
    if env.config_mode:
        from dataclasses import replace

        p = container_params(_loaded(env), env.get("resource"), local_system(env.meta.on_node))
        return replace(p, statics={**p.statics, **statics})
    name, image = env.get("container_name"), env.get("image")
    if not name or not image:
        raise OcfError(Ocf.ERR_CONFIGURED, "container_name and image are required")
    engine = env.get("engine") or "docker"
    p = ContainerParams(
        resource=env.instance, container_name=name, image=image,
        host=default_host(engine, env.get("docker_host")), engine=engine,
        command=_words(env, "command"), env=_pairs(env, "env"), volumes=_words(env, "volumes"),
        ports=_words(env, "ports"), network=env.get("network"), labels=_pairs(env, "labels"),
        stop_timeout=_int(env, "stop_timeout"), remove_on_offline=env.flag("remove_on_offline"),
        allow_pull=env.flag("allow_pull"), delay_online=_int(env, "delay_after_online"),
        statics=statics,
    )  # fmt: skip
    errors = (checks.check_engine(engine) + checks.check_host(env.get("docker_host"))
              + checks.check_name(name) + checks.check_image(image)
              + checks.check_volumes(p.volumes) + checks.check_ports(p.ports))  # fmt: skip
    if errors:
        raise OcfError(Ocf.ERR_CONFIGURED, "; ".join(errors))
    return p


def daemon_from(action: str, env: OcfEnv) -> DaemonParams:
    from kvmguest.agents.docker.params import DEFAULT_COMMANDS, DEFAULT_UNITS

    statics = _statics(action, env)
    if env.config_mode:
        from dataclasses import replace

        p = daemon_params(_loaded(env), env.get("resource"), local_system(env.meta.on_node))
        return replace(p, statics={**p.statics, **statics})
    engine = env.get("engine") or "docker"
    errors = checks.check_engine(engine) + checks.check_host(env.get("docker_host"))
    if errors:
        raise OcfError(Ocf.ERR_CONFIGURED, "; ".join(errors))
    return DaemonParams(
        resource=env.instance, engine=engine, host=default_host(engine, env.get("docker_host")),
        unit=env.get("unit") or DEFAULT_UNITS[engine],
        command=env.get("daemon_command") or DEFAULT_COMMANDS[engine],
        options=_words(env, "daemon_options"), delay_online=_int(env, "delay_after_online"),
        delay_offline=_int(env, "delay_after_offline"), env=_pairs(env, "daemon_env"),
        statics=statics,
    )  # fmt: skip


def _code(out: Outcome) -> tuple[Ocf, str]:
    return (Ocf.SUCCESS if out.ok else Ocf.ERR_GENERIC), out.message


def _stop(offline: Callable[[], Outcome], clean: Callable[[], Outcome]) -> tuple[Ocf, str]:
    """Stop must succeed or the node is fenced: offline, then clean (a kill) if it failed.
    Neither touches a foreign container or an engine it cannot verify."""
    out = offline()
    return _code(out if out.ok else clean())


def run_container(action: str, env: OcfEnv) -> tuple[Ocf, str]:
    ctx = cep.Context(container_from(action, env))
    p = ctx.params
    if action in ("validate-all", "reload", "reload-agent"):
        return Ocf.SUCCESS, f"{p.container_name}: parameters valid"
    if action in ("monitor", "status"):
        result, _ = cep.monitor(ctx, Deadline(p.timeout("Monitor")))
        return monitor_code(
            result, None, probe=env.meta.probe
        ), f"{p.container_name}: {result.detail}"
    if action == "start":
        return _code(cep.online(ctx))
    if action == "stop":
        return _stop(lambda: cep.offline(ctx), lambda: cep.clean(ctx, 0))
    if action in ("migrate_to", "migrate_from"):
        return Ocf.ERR_UNIMPLEMENTED, "a container does not live-migrate"
    return Ocf.ERR_UNIMPLEMENTED, f"action {action} is not implemented"


def run_daemon(action: str, env: OcfEnv) -> tuple[Ocf, str]:
    ctx = dep.Context(daemon_from(action, env))
    p = ctx.params
    if action in ("validate-all", "reload", "reload-agent"):
        return Ocf.SUCCESS, f"{p.engine} engine at {p.host}: parameters valid"
    if action in ("monitor", "status"):
        result = dep.monitor(ctx, Deadline(p.timeout("Monitor")))
        alive = ctx.engine_pid() is not None if result.state is ResourceState.UNKNOWN else None
        return monitor_code(result, alive, probe=env.meta.probe), result.detail
    if action == "start":
        return _code(dep.online(ctx))
    if action == "stop":
        return _stop(lambda: dep.offline(ctx), lambda: dep.clean(ctx, 0))
    return Ocf.ERR_UNIMPLEMENTED, f"action {action} is not implemented"
