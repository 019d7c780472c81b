"""``OvirtSimulator``: start, populate, misdirect and inspect a simulated RHV-M."""

from __future__ import annotations

import secrets
import shutil
import ssl
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from .model import AFFINITIES, Clock, Disk, Durations, Engine, ManualClock, Vm, new_id
from .model import Cluster as _Cluster
from .model import Host as _Host
from .model import Vm as _Vm
from .pki import CertPair, TestPki, generate_pki
from .server import FaultRule, RecordedRequest, SimServer, SimState

CERT_MODES = ("good", "wrong_ca", "wrong_host")
DEFAULT_USER = "admin@internal"


class OvirtSimulator:
    """An oVirt Engine API v4 served over HTTPS on 127.0.0.1, driven from Python.

    Objects are addressed by name in this control API (the HTTP API uses ids, as the
    engine does). State changes made here take effect at once; the asynchronous phases
    (powering_up, migrating, ...) follow the simulator's clock: pass a
    :class:`ManualClock` and call :meth:`advance` for exact control.
    """

    def __init__(
        self,
        *,
        user: str = DEFAULT_USER,
        password: str | None = None,
        clock: Clock | None = None,
        durations: Durations | None = None,
        token_lifetime: float = 3600.0,
        port: int = 0,
        workdir: str | Path | None = None,
        pki: TestPki | None = None,
    ) -> None:
        self.user = user
        self.password = password if password is not None else secrets.token_urlsafe(12)
        self.engine = Engine(clock, durations)
        self.pki = pki or generate_pki()
        self._port = port
        self._token_lifetime = token_lifetime
        self._own_workdir = workdir is None
        self._workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ovirt-sim-"))
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None
        self._state: SimState | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._workdir.mkdir(parents=True, exist_ok=True)
        self.pki.write_ca_file(self.ca_file)
        contexts = {
            "good": self._context("server", self.pki.server),
            "wrong_ca": self._context("wrong-ca", self.pki.wrong_ca_server),
            "wrong_host": self._context("wrong-host", self.pki.wrong_host_server),
        }
        self._state = SimState(
            self.engine, self.user, self.password, self._token_lifetime, contexts
        )
        self._server = SimServer(("127.0.0.1", self._port), self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="ovirt-sim",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        server, thread, state = self._server, self._thread, self._state
        if server is None or state is None:
            return
        state.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)
        self._server = self._thread = None
        if self._own_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> OvirtSimulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _context(self, stem: str, pair: CertPair) -> ssl.SSLContext:
        cert = self._workdir / f"{stem}.pem"
        key = self._workdir / f"{stem}.key"
        cert.write_bytes(pair.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(pair.key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        return ctx

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT``: what an operator puts in RHEVMInfo.URL."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The API entry point, as ovirtsdk4 wants it."""
        return f"{self.base_url}/ovirt-engine/api"

    @property
    def ca_file(self) -> str:
        return str(self._workdir / "ca.pem")

    @property
    def clock(self) -> Clock:
        return self.engine.clock

    @property
    def durations(self) -> Durations:
        return self.engine.durations

    def advance(self, seconds: float) -> None:
        """Move a :class:`ManualClock` forward (and apply what fell due)."""
        clock = self.engine.clock
        if not isinstance(clock, ManualClock):
            raise TypeError("advance() needs the simulator to run on a ManualClock")
        clock.advance(seconds)
        self.engine.tick()

    def _live_state(self) -> SimState:
        if self._state is None:
            raise RuntimeError("the simulator has not been started")
        return self._state

    # -- objects -------------------------------------------------------------------------

    def _check_new(self, kind: str, name: str, names: Iterable[str]) -> None:
        if name in set(names):
            raise ValueError(f"a {kind} named {name!r} already exists")

    def add_cluster(self, name: str) -> str:
        with self.engine.lock:
            self._check_new("cluster", name, (c.name for c in self.engine.clusters.values()))
            cid = new_id()
            self.engine.clusters[cid] = _Cluster(cid, name)
            return cid

    def add_host(
        self, name: str, cluster: str, *, address: str | None = None, status: str = "up"
    ) -> str:
        with self.engine.lock:
            self._check_new("host", name, (h.name for h in self.engine.hosts.values()))
            hid = new_id()
            host = _Host(hid, name, address or name, self.engine.cluster_id(cluster))
            self.engine.hosts[hid] = host
            if status != "up":
                self.engine.set_host_status(hid, status)
            return hid

    def add_vm(
        self,
        name: str,
        cluster: str,
        *,
        status: str = "down",
        host: str | None = None,
        affinity: str = "migratable",
        placement_hosts: Iterable[str] = (),
        stubborn: bool = False,
    ) -> str:
        with self.engine.lock:
            self._check_new("VM", name, (v.name for v in self.engine.vms.values()))
            vid = new_id()
            vm = _Vm(vid, name, self.engine.cluster_id(cluster), stubborn=stubborn)
            self.engine.vms[vid] = vm
            self.set_vm_affinity(name, affinity, placement_hosts)
            if status != "down":
                self.set_vm_status(name, status, host=host)
            return vid

    def add_disk(self, vm: str, name: str, *, active: bool = True, bootable: bool = False) -> str:
        with self.engine.lock:
            disk = Disk(new_id(), name, active=active, bootable=bootable)
            self._vm(vm).disks.append(disk)
            return disk.id

    def _vm(self, name: str) -> Vm:
        return self.engine.vm(self.engine.vm_id(name))

    # -- state ---------------------------------------------------------------------------

    def set_vm_status(self, vm: str, status: str, *, host: str | None = None) -> None:
        """Any API status, at once (pending transitions are dropped)."""
        with self.engine.lock:
            host_id = self.engine.host_id(host) if host is not None else None
            self.engine.set_vm_status(self.engine.vm_id(vm), status, host_id)

    def set_host_status(self, host: str, status: str) -> None:
        """non_responsive turns its VMs ``unknown``; back from it, they return."""
        self.engine.set_host_status(self.engine.host_id(host), status)

    def set_vm_affinity(self, vm: str, affinity: str, placement_hosts: Iterable[str] = ()) -> None:
        if affinity not in AFFINITIES:
            raise ValueError(f"affinity must be one of {AFFINITIES}")
        with self.engine.lock:
            v = self._vm(vm)
            v.affinity = affinity
            v.placement_host_ids = [self.engine.host_id(h) for h in placement_hosts]

    def set_vm_stubborn(self, vm: str, stubborn: bool = True) -> None:
        """A stubborn guest ignores shutdown: powering_down, then up again."""
        with self.engine.lock:
            self._vm(vm).stubborn = stubborn

    def vm_status(self, vm: str) -> str:
        with self.engine.lock:
            return self._vm(vm).status

    def vm_host(self, vm: str) -> str | None:
        with self.engine.lock:
            v = self._vm(vm)
            return None if v.host_id is None else self.engine.hosts[v.host_id].name

    def vm_payload_files(self, vm: str, payload_type: str = "cdrom") -> dict[str, str]:
        with self.engine.lock:
            files: dict[str, str] = {}
            for p in self._vm(vm).payloads:
                if p.type == payload_type:
                    files.update(p.files)
            return files

    def host_status(self, host: str) -> str:
        with self.engine.lock:
            return self.engine.host(self.engine.host_id(host)).status

    def host_fence_confirmed(self, host: str) -> bool:
        with self.engine.lock:
            return self.engine.host(self.engine.host_id(host)).fence_confirmed

    # -- faults --------------------------------------------------------------------------

    def _add_rule(self, rule: FaultRule) -> FaultRule:
        state = self._live_state()
        with state.lock:
            state.faults.append(rule)
        return rule

    def inject_latency(
        self, seconds: float, *, path: str | None = None, count: int | None = None
    ) -> FaultRule:
        """Delay matching requests (``path`` is a regex searched in the URL path)."""
        return self._add_rule(FaultRule("latency", path, count, seconds=seconds))

    def inject_error(
        self, status: int = 500, *, path: str | None = None, count: int | None = 1
    ) -> FaultRule:
        """Answer matching requests with an HTTP error (an XML fault on the API)."""
        return self._add_rule(FaultRule("error", path, count, status=status))

    def inject_reset(self, *, path: str | None = None, count: int | None = 1) -> FaultRule:
        """Reset the TCP connection instead of answering."""
        return self._add_rule(FaultRule("reset", path, count))

    def remove_fault(self, rule: FaultRule) -> None:
        state = self._live_state()
        with state.lock:
            if rule in state.faults:
                state.faults.remove(rule)

    def clear_faults(self) -> None:
        state = self._live_state()
        with state.lock:
            state.faults.clear()

    def set_certificate_mode(self, mode: str) -> None:
        """good | wrong_ca | wrong_host, for connections accepted from now on."""
        if mode not in CERT_MODES:
            raise ValueError(f"certificate mode must be one of {CERT_MODES}")
        state = self._live_state()
        with state.lock:
            state.cert_mode = mode
        if self._server is not None:
            # Kept-alive connections would go on with the old certificate.
            self._server.close_connections()

    def expire_all_tokens(self) -> None:
        """Every issued SSO token stops working, as after an engine restart."""
        self._live_state().expire_all()

    def active_tokens(self) -> int:
        state = self._live_state()
        with state.lock:
            now = self.engine.clock.now()
            return sum(1 for t in state.tokens.values() if now < t.expires_at)

    # -- what was asked ------------------------------------------------------------------

    def requests(self) -> list[RecordedRequest]:
        state = self._live_state()
        with state.lock:
            return list(state.requests)

    def clear_requests(self) -> None:
        state = self._live_state()
        with state.lock:
            state.requests.clear()

    # -- a demo data centre --------------------------------------------------------------

    def seed_demo(self) -> None:
        """Cluster ``cluster1``, hosts ``host1``/``host2``, ``vm1`` up on host1, ``vm2`` down."""
        self.add_cluster("cluster1")
        self.add_host("host1", "cluster1", address="192.0.2.11")
        self.add_host("host2", "cluster1", address="192.0.2.12")
        self.add_vm("vm1", "cluster1", status="up", host="host1")
        self.add_disk("vm1", "vm1_disk0", bootable=True)
        self.add_vm("vm2", "cluster1")
        self.add_disk("vm2", "vm2_disk0", bootable=True)
