"""The simulated engine's state: clusters, hosts, VMs, and how they change. No I/O.

Transitions are asynchronous as on a real engine (a started VM goes wait_for_launch →
powering_up → up over seconds), but they are not driven by a background thread: each VM
carries the steps still ahead of it with the time each falls due, and every read applies
the steps whose time has come (:meth:`Engine.tick`). Nothing outside can observe the
difference, and a :class:`ManualClock` makes every transition exactly reproducible.

Validation failures raise :class:`ApiFault` with the HTTP status and the fault text the
engine uses ("Operation Failed" + "[Cannot ... ]", HTTP 409).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

# The API model's VmStatus and HostStatus values (ovirt-engine-api-model 4.x).
VM_STATUSES = frozenset(
    {
        "down",
        "image_locked",
        "migrating",
        "not_responding",
        "paused",
        "powering_down",
        "powering_up",
        "reboot_in_progress",
        "restoring_state",
        "saving_state",
        "suspended",
        "unassigned",
        "unknown",
        "up",
        "wait_for_launch",
    }
)
HOST_STATUSES = frozenset(
    {
        "connecting",
        "down",
        "error",
        "initializing",
        "install_failed",
        "installing",
        "installing_os",
        "kdumping",
        "maintenance",
        "non_operational",
        "non_responsive",
        "pending_approval",
        "preparing_for_maintenance",
        "reboot",
        "unassigned",
        "up",
    }
)
AFFINITIES = ("migratable", "user_migratable", "pinned")

# Statuses in which a VM has no host (the engine clears run_on_vds for these).
HOSTLESS_STATUSES = frozenset({"down", "suspended", "image_locked", "unassigned"})
_SHUTDOWN_FROM = frozenset({"up", "powering_up", "paused", "reboot_in_progress"})


class ApiFault(Exception):
    """A request the engine refuses: HTTP status plus the fault's reason and detail."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


def conflict(detail: str) -> ApiFault:
    # The engine wraps validation messages in brackets: it may return several at once.
    return ApiFault(409, "Operation Failed", f"[{detail}]")


def not_found(kind: str, ident: str) -> ApiFault:
    return ApiFault(404, "Operation Failed", f"Entity not found: {kind} {ident}")


def bad_request(detail: str) -> ApiFault:
    return ApiFault(400, "Incomplete parameters", detail)


class Clock(Protocol):
    def now(self) -> float: ...


class MonotonicClock:
    """Real time: transitions happen on their own while a test or an operator waits."""

    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    """Time moves only when a test says so: every transition is reproducible."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        with self._lock:
            self._now += seconds


@dataclass
class Durations:
    """How long each asynchronous phase lasts, in seconds of the simulator's clock."""

    launch: float = 1.0  # wait_for_launch -> powering_up
    power_up: float = 2.0  # powering_up -> up
    power_down: float = 2.0  # powering_down -> down (a stubborn guest: back to up)
    migrate: float = 2.0  # migrating -> up on the destination
    restore: float = 1.0  # restoring_state -> up (start of a suspended VM)


@dataclass
class Cluster:
    id: str
    name: str


@dataclass
class Host:
    id: str
    name: str
    address: str
    cluster_id: str
    status: str = "up"
    # Set by a manual fence ("Confirm host has been rebooted"); cleared when it comes up.
    fence_confirmed: bool = False


@dataclass
class Disk:
    id: str
    name: str
    active: bool = True
    bootable: bool = False
    interface: str = "virtio_scsi"
    status: str = "ok"
    provisioned_size: int = 10 * 1024**3


@dataclass
class Payload:
    type: str
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """A transition that falls due at ``at``; ``host_id`` applies only if ``move``."""

    at: float
    status: str
    move: bool = False
    host_id: str | None = None


@dataclass
class Vm:
    id: str
    name: str
    cluster_id: str
    status: str = "down"
    host_id: str | None = None
    affinity: str = "migratable"
    placement_host_ids: list[str] = field(default_factory=list)
    payloads: list[Payload] = field(default_factory=list)
    disks: list[Disk] = field(default_factory=list)
    stubborn: bool = False
    steps: list[Step] = field(default_factory=list)
    # What the VM was doing when its host stopped answering; restored if the host returns.
    status_before_unknown: str | None = None


def new_id() -> str:
    return str(uuid.uuid4())


class Engine:
    """All of the simulator's objects, behind one lock. Every public method ticks first."""

    def __init__(self, clock: Clock | None = None, durations: Durations | None = None) -> None:
        self.clock: Clock = clock or MonotonicClock()
        self.durations = durations or Durations()
        self.lock = threading.RLock()
        self.clusters: dict[str, Cluster] = {}
        self.hosts: dict[str, Host] = {}
        self.vms: dict[str, Vm] = {}

    # -- time ----------------------------------------------------------------------------

    def tick(self) -> None:
        """Apply every step whose time has come."""
        with self.lock:
            now = self.clock.now()
            for vm in self.vms.values():
                while vm.steps and vm.steps[0].at <= now:
                    step = vm.steps.pop(0)
                    vm.status = step.status
                    if step.move:
                        vm.host_id = step.host_id

    def _schedule(self, vm: Vm, *chain: tuple[float, str, bool, str | None]) -> None:
        """Replace the VM's pending steps with ``chain`` (delay, status, move, host)."""
        at = self.clock.now()
        vm.steps = []
        for delay, status, move, host_id in chain:
            at += delay
            vm.steps.append(Step(at, status, move, host_id))
        self.tick()

    # -- lookups -------------------------------------------------------------------------

    def vm(self, vm_id: str) -> Vm:
        with self.lock:
            self.tick()
            try:
                return self.vms[vm_id]
            except KeyError:
                raise not_found("vm", vm_id) from None

    def host(self, host_id: str) -> Host:
        with self.lock:
            try:
                return self.hosts[host_id]
            except KeyError:
                raise not_found("host", host_id) from None

    def cluster(self, cluster_id: str) -> Cluster:
        with self.lock:
            try:
                return self.clusters[cluster_id]
            except KeyError:
                raise not_found("cluster", cluster_id) from None

    def _named(self, objs: Iterable[Vm | Host | Cluster], kind: str, name: str) -> str:
        for obj in objs:
            if obj.name == name:
                return obj.id
        raise KeyError(f"no {kind} named {name!r}")

    def vm_id(self, name: str) -> str:
        with self.lock:
            return self._named(self.vms.values(), "VM", name)

    def host_id(self, name: str) -> str:
        with self.lock:
            return self._named(self.hosts.values(), "host", name)

    def cluster_id(self, name: str) -> str:
        with self.lock:
            return self._named(self.clusters.values(), "cluster", name)

    def resolve_host(self, host_id: str | None, host_name: str | None) -> Host | None:
        """A host given in a request body by id or by name (both are valid in the API)."""
        with self.lock:
            if host_id:
                return self.host(host_id)
            if host_name:
                for h in self.hosts.values():
                    if h.name == host_name:
                        return h
                raise not_found("host", host_name)
            return None

    # -- search --------------------------------------------------------------------------

    def search(self, kind: str, query: str | None, case_sensitive: bool = True) -> list[str]:
        """Ids of the ``kind`` objects matching an engine search query ("name=vm1 and ...")."""
        with self.lock:
            self.tick()
            terms = parse_search(query)
            objs: list[Vm | Host | Cluster]
            if kind == "vms":
                objs = list(self.vms.values())
            elif kind == "hosts":
                objs = list(self.hosts.values())
            else:
                objs = list(self.clusters.values())
            return [
                o.id
                for o in sorted(objs, key=lambda o: o.name)
                if all(self._matches(o, f, p, case_sensitive) for f, p in terms)
            ]

    def _matches(self, obj: Vm | Host | Cluster, fld: str, pattern: str, cs: bool) -> bool:
        values: list[str | None]
        if fld == "name":
            values = [obj.name]
        elif fld == "id":
            values = [obj.id]
        elif fld == "cluster" and isinstance(obj, Vm | Host):
            values = [self.clusters[obj.cluster_id].name]
        elif fld == "status" and isinstance(obj, Vm | Host):
            values = [obj.status]
        elif fld == "address" and isinstance(obj, Host):
            values = [obj.address]
        elif fld == "host" and isinstance(obj, Vm):
            values = [self.hosts[obj.host_id].name if obj.host_id else None]
        else:
            raise bad_request(f"Search field '{fld}' is not supported by this simulator")
        regex = re.compile(
            "^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$",
            0 if cs else re.IGNORECASE,
        )
        return any(v is not None and regex.match(v) for v in values)

    # -- actions from the API ------------------------------------------------------------

    def _up_hosts(self, vm: Vm) -> list[Host]:
        hosts = [h for h in self.hosts.values() if h.cluster_id == vm.cluster_id]
        if vm.placement_host_ids:
            hosts = [h for h in hosts if h.id in vm.placement_host_ids]
        return sorted((h for h in hosts if h.status == "up"), key=lambda h: h.name)

    def _schedule_host(self, vm: Vm, wanted: Host | None, action: str) -> Host:
        candidates = self._up_hosts(vm)
        if wanted is not None:
            candidates = [h for h in candidates if h.id == wanted.id]
        if not candidates:
            raise conflict(
                f"Cannot {action} VM. There is no host that satisfies current scheduling "
                "constraints. See below for details:"
            )

        def load(h: Host) -> int:
            return sum(1 for v in self.vms.values() if v.host_id == h.id)

        return min(candidates, key=lambda h: (load(h), h.name))

    def _host_unreachable(self, vm: Vm) -> bool:
        return vm.host_id is not None and self.hosts[vm.host_id].status == "non_responsive"

    def start(self, vm_id: str, wanted: Host | None) -> None:
        with self.lock:
            vm = self.vm(vm_id)
            d = self.durations
            if vm.status == "suspended":
                host = self._schedule_host(vm, wanted, "run")
                vm.status, vm.host_id = "restoring_state", host.id
                self._schedule(vm, (d.restore, "up", False, None))
                return
            if vm.status != "down":
                what = "VM is running." if vm.status == "up" else f"VM status is {vm.status}."
                raise conflict(f"Cannot run VM. {what}")
            host = self._schedule_host(vm, wanted, "run")
            vm.status, vm.host_id = "wait_for_launch", host.id
            self._schedule(
                vm, (d.launch, "powering_up", False, None), (d.power_up, "up", False, None)
            )

    def shutdown(self, vm_id: str) -> None:
        with self.lock:
            vm = self.vm(vm_id)
            if vm.status == "powering_down":
                return  # already on its way down: the engine accepts the repeat
            if vm.status not in _SHUTDOWN_FROM:
                raise conflict(f"Cannot shutdown VM. VM is not running (status {vm.status}).")
            vm.status = "powering_down"
            if vm.stubborn:
                # The guest ignores the ACPI event: the engine gives up and it is up again.
                self._schedule(vm, (self.durations.power_down, "up", False, None))
            else:
                self._schedule(vm, (self.durations.power_down, "down", True, None))

    def stop(self, vm_id: str) -> None:
        with self.lock:
            vm = self.vm(vm_id)
            if vm.status == "down":
                raise conflict("Cannot stop VM. VM is not running.")
            if self._host_unreachable(vm):
                # Nobody can kill a VM on a host that does not answer: confirm the host
                # as rebooted (manual fence) first.
                host = self.hosts[vm.host_id or ""]
                raise conflict(f"Cannot stop VM. Host {host.name} is not responding.")
            vm.steps, vm.status, vm.host_id = [], "down", None

    def migrate(self, vm_id: str, wanted: Host | None, force: bool) -> None:
        with self.lock:
            vm = self.vm(vm_id)
            if vm.affinity == "pinned":
                raise conflict(f"Cannot migrate VM. VM {vm.name} is pinned to Host.")
            if vm.affinity == "user_migratable" and not force:
                raise conflict(
                    f"Cannot migrate VM. VM {vm.name} is non migratable and user did not "
                    "specify the force-migration flag"
                )
            if vm.status != "up":
                raise conflict(f"Cannot migrate VM. VM is not up (status {vm.status}).")
            if wanted is not None and wanted.id == vm.host_id:
                raise conflict("Cannot migrate VM. Source and destination hosts are the same.")
            if wanted is not None and wanted.cluster_id != vm.cluster_id:
                raise conflict("Cannot migrate VM. Destination host is in another cluster.")
            candidates = [h for h in self._up_hosts(vm) if h.id != vm.host_id]
            if wanted is not None:
                candidates = [h for h in candidates if h.id == wanted.id]
            if not candidates:
                raise conflict(
                    "Cannot migrate VM. There is no host that satisfies current scheduling "
                    "constraints. See below for details:"
                )
            vm.status = "migrating"
            self._schedule(vm, (self.durations.migrate, "up", True, candidates[0].id))

    def update_vm(self, vm_id: str, payloads: list[Payload] | None, affinity: str | None) -> None:
        with self.lock:
            vm = self.vm(vm_id)
            if payloads is not None:
                if vm.status != "down":
                    raise conflict(
                        "Cannot edit VM. Payloads can only be changed while the VM is down."
                    )
                vm.payloads = payloads
            if affinity is not None:
                if affinity not in AFFINITIES:
                    raise bad_request(f"Invalid value '{affinity}' for placement_policy.affinity")
                vm.affinity = affinity

    def fence(self, host_id: str, fence_type: str | None) -> None:
        """Only manual fencing: the simulated hosts have no power management."""
        with self.lock:
            self.tick()
            host = self.host(host_id)
            if fence_type != "manual":
                raise conflict(
                    f"Cannot fence Host. Power Management is not enabled for Host {host.name}."
                )
            if host.status != "non_responsive":
                raise conflict(
                    "Cannot confirm 'Host has been rebooted' Host. "
                    f"Host {host.name} is {host.status}, not non responsive."
                )
            # The VMs it ran are now known to be dead: they may start elsewhere. The host
            # itself stays non_responsive until it answers again, as on the engine.
            for vm in self.vms.values():
                if vm.host_id == host.id:
                    vm.steps, vm.status, vm.host_id = [], "down", None
                    vm.status_before_unknown = None
            host.fence_confirmed = True

    # -- direct control (tests) ----------------------------------------------------------

    def set_vm_status(self, vm_id: str, status: str, host_id: str | None = None) -> None:
        if status not in VM_STATUSES:
            raise ValueError(f"unknown VM status {status!r}")
        with self.lock:
            vm = self.vm(vm_id)
            vm.steps = []
            vm.status_before_unknown = None
            if status in HOSTLESS_STATUSES:
                vm.host_id = None
            elif host_id is not None:
                vm.host_id = self.host(host_id).id
            elif vm.host_id is None:
                hosts = sorted(
                    (h for h in self.hosts.values() if h.cluster_id == vm.cluster_id),
                    key=lambda h: h.name,
                )
                vm.host_id = hosts[0].id if hosts else None
            vm.status = status

    def set_host_status(self, host_id: str, status: str) -> None:
        if status not in HOST_STATUSES:
            raise ValueError(f"unknown host status {status!r}")
        with self.lock:
            self.tick()
            host = self.host(host_id)
            was = host.status
            host.status = status
            on_host = [vm for vm in self.vms.values() if vm.host_id == host.id]
            if status == "non_responsive" and was != "non_responsive":
                # The engine no longer hears from the host: its VMs' state is unknown.
                for vm in on_host:
                    vm.status_before_unknown = vm.status
                    vm.steps, vm.status = [], "unknown"
            elif was == "non_responsive" and status != "non_responsive":
                for vm in on_host:
                    if vm.status == "unknown":
                        vm.status = vm.status_before_unknown or "up"
                    vm.status_before_unknown = None
            if status == "up":
                host.fence_confirmed = False


_TERM = re.compile(r'^\s*([A-Za-z_]+)\s*=\s*(?:"([^"]*)"|(\S+))\s*$')


def parse_search(query: str | None) -> list[tuple[str, str]]:
    """``name=vm1 and cluster="c 1"`` -> [("name", "vm1"), ("cluster", "c 1")]."""
    if query is None or not query.strip():
        return []
    terms: list[tuple[str, str]] = []
    for part in re.split(r"\s+and\s+", query.strip(), flags=re.IGNORECASE):
        m = _TERM.match(part)
        if m is None:
            raise bad_request(f"Invalid search query: {query}")
        value = m.group(2) if m.group(2) is not None else m.group(3)
        terms.append((m.group(1).lower(), value))
    return terms
