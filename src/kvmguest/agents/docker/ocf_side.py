"""ocf:kvmguest:DockerContainer and ocf:kvmguest:DockerDaemon: the Pacemaker side of the
two container agents (parameters, meta-data text, the lean monitor, the actions). Cheap to
import: the lean monitor path comes through here and never imports the Docker SDK."""

from __future__ import annotations

from collections.abc import Mapping

from kvmguest.agents.ocf_interface import Ocf, OcfError, OcfParam, OcfSide, read_environ
from kvmguest.agents.ocf_interface import OcfEnv as _OcfEnv
from kvmguest.agents.ocf_interface import param as _p

_WORDS = " Shell words separated by spaces (quote a word that holds a space)."
_CONFIG = (
    _p("config", "string", "", "main.cf holding the resource",
       "A VCS main.cf (the kvmguest configuration language). With 'resource', the resource "
       "of that name in this file, resolved for the node the action runs on; the other "
       "parameters are then ignored."),
    _p("resource", "string", "", "resource name in main.cf",
       "The resource of 'config' that this Pacemaker resource runs.", unique=True),
)  # fmt: skip


def _host(*, unique: bool) -> OcfParam:
    return _p("docker_host", "string", "", "DockerHost: the engine's API socket URL",
              "DockerHost. unix:///PATH or tcp://HOST:PORT; empty: the engine's default "
              "socket.", attr="DockerHost", unique=unique)  # fmt: skip


CONTAINER_PARAMS: tuple[OcfParam, ...] = (
    *_CONFIG,
    _p("container_name", "string", "", "ContainerName", "ContainerName. The container's "
       "name on its engine. Required unless config and resource are given.",
       attr="ContainerName", unique=True),
    _p("image", "string", "", "Image", "Image. The image the container is created from; it "
       "must be present on the engine unless allow_pull is true.", attr="Image"),
    _p("command", "string", "", "Command (argv)", "Command. The container's argv; empty: "
       "the image's own command." + _WORDS, attr="Command"),
    _host(unique=False),
    _p("engine", "string", "docker", "Engine (docker or podman)",
       "Engine. Which engine's default socket an empty docker_host means.", attr="Engine"),
    _p("env", "string", "", "Env (NAME=value ...)", "Env. The container's environment as "
       "NAME=value words." + _WORDS, attr="Env"),
    _p("volumes", "string", "", "Volumes (SOURCE:TARGET[:ro] ...)", "Volumes. Bind mounts or "
       "named volumes." + _WORDS, attr="Volumes"),
    _p("ports", "string", "", "Ports (HOSTPORT:PORT[/tcp|udp] ...)",
       "Ports. Published ports." + _WORDS, attr="Ports"),
    _p("network", "string", "", "Network", "Network. The network (or none, host); empty: the "
       "engine's default.", attr="Network"),
    _p("labels", "string", "", "Labels (KEY=value ...)", "Labels. Extra labels; kvmguest "
       "adds its own (io.kvmguest.*)." + _WORDS, attr="Labels"),
    _p("stop_timeout", "integer", "10", "StopTimeout (s)", "StopTimeout. Seconds stop gives "
       "the container between SIGTERM and SIGKILL.", attr="StopTimeout"),
    _p("remove_on_offline", "boolean", "false", "RemoveOnOffline",
       "RemoveOnOffline. With true, stop removes the container after stopping it.",
       attr="RemoveOnOffline"),
    _p("allow_pull", "boolean", "false", "AllowPull", "AllowPull. With true, start pulls a "
       "missing image; otherwise a missing image is an error.", attr="AllowPull"),
    _p("delay_after_online", "integer", "30", "DelayAfterOnline (s)", "DelayAfterOnline. Upper "
       "bound of start's wait for the container to run (and be healthy, with a "
       "HEALTHCHECK); the wait ends as soon as it is.", attr="DelayAfterOnline"),
)  # fmt: skip

DAEMON_PARAMS: tuple[OcfParam, ...] = (
    *_CONFIG,
    _p("engine", "string", "docker", "Engine (docker or podman)", "Engine. docker or podman.",
       attr="Engine"),
    _host(unique=True),
    _p("unit", "string", "", "Unit (systemd)", "Unit. The engine's systemd unit, used where "
       "systemd runs; empty: docker.service or podman.service.", attr="Unit"),
    _p("daemon_command", "string", "", "DaemonCommand", "DaemonCommand. Where systemd does not "
       "run: the engine's command; empty: dockerd, or podman system service --time=0.",
       attr="DaemonCommand"),
    _p("daemon_options", "string", "", "DaemonOptions", "DaemonOptions. The command's "
       "arguments." + _WORDS, attr="DaemonOptions"),
    _p("delay_after_online", "integer", "30", "DelayAfterOnline (s)",
       "DelayAfterOnline. Upper bound of start's wait for the API to answer.",
       attr="DelayAfterOnline"),
    _p("delay_after_offline", "integer", "30", "DelayAfterOffline (s)",
       "DelayAfterOffline. Upper bound of stop's wait for the engine to exit.",
       attr="DelayAfterOffline"),
    _p("daemon_env", "string", "", "DaemonEnv (NAME=value ...)",
       "DaemonEnv. Environment of daemon_command (for example CONTAINERS_CONF for "
       "Podman)." + _WORDS, attr="DaemonEnv"),
)  # fmt: skip


class ContainerEnv(_OcfEnv):
    __slots__ = ()
    table = {p.name: p for p in CONTAINER_PARAMS}


class DaemonEnv(_OcfEnv):
    __slots__ = ()
    table = {p.name: p for p in DAEMON_PARAMS}


class ContainerOcfSide(OcfSide):
    params = CONTAINER_PARAMS
    shortdesc = "container on Docker or Podman (kvmguest DockerContainer)"
    longdesc = (
        "Keeps a container running on one node, on dockerd or on Podman's API service: "
        "kvmguest's DockerContainer agent. Start creates the container from these parameters "
        "when it does not exist (labelled io.kvmguest.managed=1; a container of that name "
        "that kvmguest did not create is never touched), never pulls unless allow_pull, "
        "starts it and waits until it runs (and is healthy, with a HEALTHCHECK). Stop stops "
        "it with stop_timeout (and removes it with remove_on_offline). Monitor: running is "
        "success, unhealthy, exited or absent is not running, an engine that does not "
        "answer is degraded (190) on a recurring monitor. Details: kvmguest's "
        "docs/containers.md."
    )
    # Not the Docker SDK: a node without it still installs the other agents; the full path
    # (site on) finds it, or answers "not installed" (OCF 5).
    imports = ("kvmguest.agents.docker.lean",)

    def from_environ(self, environ: Mapping[str, str]) -> ContainerEnv:
        env = read_environ(environ, ContainerEnv, "DockerContainer")
        assert isinstance(env, ContainerEnv)
        return env

    def lean_monitor(self, env: _OcfEnv) -> tuple[Ocf, str] | None:
        if env.config_mode or env.check_level >= 10:
            return None
        from kvmguest.agents.docker import lean
        from kvmguest.agents.ocf_interface import monitor_code

        name = env.get("container_name")
        if not name:
            raise OcfError(
                Ocf.ERR_CONFIGURED, "container_name is required (or config and resource)"
            )
        engine = env.get("engine")
        host = env.get("docker_host") or (
            "unix:///run/podman/podman.sock"
            if engine == "podman"
            else "unix:///var/run/docker.sock"
        )
        result = lean.probe(host, name, lean.budget(env.meta.timeout_ms, 20.0), engine)
        return monitor_code(result, None, probe=env.meta.probe), f"{name}: {result.detail}"

    def run(self, action: str, env: _OcfEnv) -> tuple[Ocf, str]:
        from kvmguest.agents.docker.ocf_actions import run_container

        return run_container(action, env)


class DaemonOcfSide(OcfSide):
    params = DAEMON_PARAMS
    shortdesc = "container engine: dockerd or Podman's API service (kvmguest DockerDaemon)"
    longdesc = (
        "Keeps a container engine running on a node (run it as a clone: one engine per "
        "node): dockerd, or Podman's API service. Start goes through systemd where systemd "
        "runs, else runs daemon_command with daemon_options, and waits until the API "
        "answers. Monitor is the API's ping plus the engine's process (the one listening on "
        "the socket); a process that lives while the API does not answer is degraded (190). "
        "Details: kvmguest's docs/containers.md."
    )
    imports = ("kvmguest.agents.docker.lean",)
    per_node = True

    def from_environ(self, environ: Mapping[str, str]) -> DaemonEnv:
        env = read_environ(environ, DaemonEnv, "DockerDaemon")
        assert isinstance(env, DaemonEnv)
        return env

    def run(self, action: str, env: _OcfEnv) -> tuple[Ocf, str]:
        from kvmguest.agents.docker.ocf_actions import run_daemon

        return run_daemon(action, env)


CONTAINER_SIDE = ContainerOcfSide()
DAEMON_SIDE = DaemonOcfSide()
