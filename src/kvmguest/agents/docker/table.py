"""The container state table (ours, docs/containers.md): an engine's inspect document ->
a monitor result. Pure and cheap: the lean monitor (standard library only) and the full
monitor (the Docker SDK) read the same table."""

from __future__ import annotations

TYPE_CHECKING = False  # the quick OCF monitor reads this table without typing or enum
if TYPE_CHECKING:
    from kvmguest.model.states import MonitorResult

# The states of the table, as plain words: model.states' enum costs the quick OCF monitor
# ~3 ms to import; container_state gives the full monitor its MonitorResult.
ONLINE, OFFLINE, INTENTIONAL_OFFLINE, UNKNOWN = "online", "offline", "intentional", "unknown"

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


def classify(name: str, doc: dict[str, object] | None) -> tuple[str, int, str]:
    """The table itself: (state, confidence, detail). ``doc``: the engine's
    ``GET /containers/NAME/json``, None when there is no such container."""
    if doc is None:
        return OFFLINE, 0, f"no container {name}"
    if not is_managed(doc):
        # Not ours: whatever it does, our resource is not running (and online refuses it).
        return OFFLINE, 0, f"container {name} exists but kvmguest did not create it"
    raw = doc.get("State")
    state = raw if isinstance(raw, dict) else {}
    status = str(state.get("Status", "")).lower()
    if status == "paused" or (status == "running" and state.get("Paused") is True):
        return INTENTIONAL_OFFLINE, 0, f"container {name} is paused"
    if status == "running":
        pid = state.get("Pid")
        health = health_of(state)
        if health == "starting":
            return (
                ONLINE,
                CONF_STARTING,
                (f"container {name} running (pid {pid}), health check starting"),
            )
        if health == "unhealthy":
            # The HEALTHCHECK's own retries already debounced it: the service is down even
            # though its process runs. OFFLINE lets the framework (or Pacemaker) recover it.
            return OFFLINE, 0, f"container {name} is running but unhealthy"
        what = ", healthy" if health == "healthy" else ""
        return ONLINE, 100, f"container {name} running (pid {pid}){what}"
    if status == "restarting":
        # Only an engine restart policy restarts a container (kvmguest sets none): neither up
        # nor down, and not ours to decide.
        return UNKNOWN, 0, f"container {name} is being restarted by the engine"
    code = state.get("ExitCode")
    tail = f", exit code {code}" if status in ("exited", "stopped") and code is not None else ""
    return OFFLINE, 0, f"container {name} {status or 'not running'}{tail}"


def container_state(name: str, doc: dict[str, object] | None) -> MonitorResult:
    """The table's answer as the monitors report it."""
    from kvmguest.model import states

    state, confidence, detail = classify(name, doc)
    if state == ONLINE:
        return states.online(confidence, detail)
    if state == INTENTIONAL_OFFLINE:
        return states.intentional_offline(detail)
    if state == UNKNOWN:
        return states.unknown(detail)
    return states.offline(detail)
