"""The container state table (ours, docs/containers.md): an engine's inspect document ->
a monitor result. Pure and cheap: the lean monitor (standard library only) and the full
monitor (the Docker SDK) read the same table."""

from __future__ import annotations

from kvmguest.model import states
from kvmguest.model.states import MonitorResult

# What kvmguest writes on every container it creates, and the only proof it may touch one.
MANAGED = "io.kvmguest.managed"
RESOURCE = "io.kvmguest.resource"
DEFINITION = "io.kvmguest.definition"

# A running container whose HEALTHCHECK has not passed yet: up, but not proven to serve.
CONF_STARTING = 50


def is_managed(doc: dict[str, object]) -> bool:
    config = doc.get("Config")
    labels = config.get("Labels") if isinstance(config, dict) else None
    return isinstance(labels, dict) and labels.get(MANAGED) == "1"


def health_of(state: dict[str, object]) -> str:
    """The HEALTHCHECK's status ("starting", "healthy", "unhealthy"), "" without one."""
    health = state.get("Health") or state.get("Healthcheck")  # Podman 4 spells it so too
    if isinstance(health, dict):
        status = health.get("Status")
        if isinstance(status, str) and status.lower() != "none":
            return status.lower()
    return ""


def container_state(name: str, doc: dict[str, object] | None) -> MonitorResult:
    """``doc``: the engine's ``GET /containers/NAME/json``, None when there is no such
    container."""
    if doc is None:
        return states.offline(f"no container {name}")
    if not is_managed(doc):
        # Not ours: whatever it does, our resource is not running (and online refuses it).
        return states.offline(f"container {name} exists but kvmguest did not create it")
    raw = doc.get("State")
    state = raw if isinstance(raw, dict) else {}
    status = str(state.get("Status", "")).lower()
    if status == "paused" or (status == "running" and state.get("Paused") is True):
        return states.intentional_offline(f"container {name} is paused")
    if status == "running":
        pid = state.get("Pid")
        health = health_of(state)
        if health == "starting":
            return states.online(CONF_STARTING, f"container {name} running (pid {pid}), "
                                 "health check starting")  # fmt: skip
        if health == "unhealthy":
            # The HEALTHCHECK's own retries already debounced it: the service is down even
            # though its process runs. OFFLINE lets the framework (or Pacemaker) recover it.
            return states.offline(f"container {name} is running but unhealthy")
        what = ", healthy" if health == "healthy" else ""
        return states.online(100, f"container {name} running (pid {pid}){what}")
    if status == "restarting":
        # Only an engine restart policy restarts a container (kvmguest sets none): neither up
        # nor down, and not ours to decide.
        return states.unknown(f"container {name} is being restarted by the engine")
    code = state.get("ExitCode")
    tail = f", exit code {code}" if status in ("exited", "stopped") and code is not None else ""
    return states.offline(f"container {name} {status or 'not running'}{tail}")
