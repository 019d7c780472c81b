"""The KVM half of the agent: a guest managed through libvirt (RHEVMInfo.Enabled = 0)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import threading
import xml.etree.ElementTree as ET
from typing import Any

import libvirt
from kvmguest.agents.kvmguest import procs
from kvmguest.agents.kvmguest.hypervisor import Progress
from kvmguest.agents.kvmguest.libvirt_conn import (
    agent_error,
    bounded,
    describe,
    error_code,
    open_connection,
    use_default_event_loop,
)
from kvmguest.agents.kvmguest.params import GuestParams
from kvmguest.deadline import Deadline
from kvmguest.errors import AgentError, ConfigError, Unreachable
from kvmguest.model import states
from kvmguest.model.files import read_config_file
from kvmguest.model.resolver import SystemInfo
from kvmguest.model.states import MonitorResult

log = logging.getLogger(__name__)

METADATA_URI = "https://kvmguest.dev/xmlns/config/1"
METADATA_KEY = "kvmguest"


def file_digest(xml: str) -> str:
    return hashlib.sha256(xml.encode()).hexdigest()


def guest_xml_name(xml: str, path: str) -> str:
    """The <name> of a domain XML file; ConfigError if it is not a domain definition."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise ConfigError(f"GuestConfigFilePath {path}: not valid XML ({e})") from None
    name = root.findtext("name")
    if root.tag != "domain" or not name:
        raise ConfigError(f"GuestConfigFilePath {path}: not a libvirt <domain> with a <name>")
    return name.strip()


class LibvirtKVM:
    kind = "kvm"

    def __init__(self, uri: str, *, events: bool = True, open_timeout: float = 30.0) -> None:
        self.uri = uri
        self.open_timeout = open_timeout
        self._conn: Any = None
        self._changed = threading.Event()
        self._events = events
        self._callback_id: int | None = None
        self._open_lock = threading.Lock()

    # -- connection -----------------------------------------------------------------

    @staticmethod
    def _alive(conn: Any) -> bool:
        try:
            return conn is not None and bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    def conn(self, deadline: Deadline) -> Any:
        conn = self._conn
        if self._alive(conn):
            return conn
        # The daemon's workers all find no connection at start-up: one opens it, the others
        # wait for it (within their own deadlines) instead of each opening and leaking one.
        if not self._open_lock.acquire(timeout=deadline.remaining()):
            raise Unreachable(f"libvirt at {self.uri}: no connection within the deadline")
        try:
            if self._alive(self._conn):
                return self._conn
            self._conn = None
            if self._events:
                use_default_event_loop()
            conn = open_connection(self.uri, deadline.sub(self.open_timeout))
            if self._events:
                with contextlib.suppress(libvirt.libvirtError):
                    self._callback_id = conn.domainEventRegisterAny(
                        None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None
                    )
            self._conn = conn
            return conn
        finally:
            self._open_lock.release()

    def _on_event(self, *_args: object) -> None:
        self._changed.set()

    def notify_changed(self) -> None:
        """Wake a wait_changed(): the daemon delivers lifecycle events itself."""
        self._changed.set()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(libvirt.libvirtError):
            if self._callback_id is not None:
                conn.domainEventDeregisterAny(self._callback_id)
            conn.close()

    def wait_changed(self, timeout: float) -> None:
        self._changed.wait(max(0.0, timeout))
        self._changed.clear()

    def _call(self, fn: Any, deadline: Deadline, what: str) -> Any:
        try:
            return bounded(fn, deadline, what, self.uri)
        except libvirt.libvirtError as e:
            raise agent_error(what, e) from None

    def _lookup(self, name: str, deadline: Deadline) -> Any | None:
        conn = self.conn(deadline)

        def lookup() -> Any | None:
            try:
                return conn.lookupByName(name)
            except libvirt.libvirtError as e:
                if error_code(e) == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                raise

        return self._call(lookup, deadline, f"look up {name}")

    # -- monitor --------------------------------------------------------------------

    def probe(self, guest: GuestParams, deadline: Deadline) -> MonitorResult:
        name = guest.guest_name

        def read(conn: Any) -> MonitorResult:
            try:
                dom = conn.lookupByName(name)
                state, reason = dom.state()
                job_op = None
                if (
                    state == libvirt.VIR_DOMAIN_PAUSED
                    and reason == libvirt.VIR_DOMAIN_PAUSED_MIGRATION
                ):
                    job_op = int(dom.jobStats().get("operation", 0))
            except libvirt.libvirtError as e:
                if error_code(e) == libvirt.VIR_ERR_NO_DOMAIN:
                    return states.kvm_state(None)
                raise
            return states.kvm_state(state, reason, job_op)

        try:
            conn = self.conn(deadline)
            return bounded(lambda: read(conn), deadline, f"state of {name}", self.uri)
        except Unreachable as e:
            self._conn = None
            return states.unknown(str(e))
        except libvirt.libvirtError as e:
            # Anything else libvirt says about a domain we cannot read: not knowing is
            # UNKNOWN. OFFLINE would start a failover on a guess.
            return states.unknown(f"libvirt error {error_code(e)}: {describe(e)}")

    # -- online / offline / clean ---------------------------------------------------

    def prepare_online(self, guest: GuestParams, deadline: Deadline) -> list[str]:
        notes: list[str] = []
        name = guest.guest_name
        dom = self._lookup(name, deadline)
        if guest.config_file:
            path = guest.config_file
            try:
                xml = read_config_file(path)  # a regular file only: never a FIFO's hang
            except OSError as e:
                why = f"GuestConfigFilePath {path}: cannot read: {e.strerror}"
                raise ConfigError(why) from None
            file_name = guest_xml_name(xml, path)
            if file_name != name:
                raise ConfigError(
                    f"GuestConfigFilePath {path} defines {file_name!r}, but GuestName is {name!r}"
                )
            digest = file_digest(xml)
            if dom is None:
                self._define(xml, digest, deadline)
                notes.append(f"defined {name} from {path}")
            elif guest.resync and self._stored_digest(dom, deadline) != digest:
                if self._call(dom.isActive, deadline, f"is {name} active"):
                    notes.append(f"{name} is running: not redefining it from {path}")
                else:
                    self._define(xml, digest, deadline)
                    notes.append(f"redefined {name} from {path} (ResyncVMCfg: the file changed)")
        elif dom is None:
            raise AgentError(
                f"{name} is not defined on this host and GuestConfigFilePath is not set"
            )
        if guest.dr_enabled:
            from kvmguest.agents.kvmguest.dr import attach_dr_payload

            notes += attach_dr_payload(self, guest, deadline)
        return notes

    def _define(self, xml: str, digest: str, deadline: Deadline) -> Any:
        conn = self.conn(deadline)

        def define() -> Any:
            dom = conn.defineXML(xml)
            with contextlib.suppress(libvirt.libvirtError):
                dom.setMetadata(
                    libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                    f'<config sha256="{digest}"/>',
                    METADATA_KEY,
                    METADATA_URI,
                    libvirt.VIR_DOMAIN_AFFECT_CONFIG,
                )
            return dom

        try:
            return bounded(define, deadline, "define", self.uri)
        except libvirt.libvirtError as e:
            if error_code(e) in (libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL):
                raise ConfigError(f"libvirt rejected the guest definition: {describe(e)}") from None
            raise agent_error("define", e) from None

    def _stored_digest(self, dom: Any, deadline: Deadline) -> str | None:
        def read() -> str | None:
            try:
                meta = dom.metadata(
                    libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                    METADATA_URI,
                    libvirt.VIR_DOMAIN_AFFECT_CONFIG,
                )
            except libvirt.libvirtError:
                return None
            return ET.fromstring(meta).get("sha256")

        result: str | None = self._call(read, deadline, "read metadata")
        return result

    def redefine_xml(self, xml: str, deadline: Deadline) -> None:
        """Define an edited persistent definition (keeps our metadata: it is in the XML)."""
        conn = self.conn(deadline)
        self._call(lambda: conn.defineXML(xml), deadline, "redefine")

    def start(self, guest: GuestParams, deadline: Deadline) -> None:
        dom = self._lookup(guest.guest_name, deadline)
        if dom is None:
            raise AgentError(f"{guest.guest_name} is not defined on this host")

        def create() -> None:
            try:
                dom.create()
            except libvirt.libvirtError as e:
                if error_code(e) == libvirt.VIR_ERR_OPERATION_INVALID and dom.isActive():
                    return  # already running: starting it twice must not fail
                raise

        self._call(create, deadline, f"start {guest.guest_name}")

    def shutdown(self, guest: GuestParams, deadline: Deadline) -> None:
        dom = self._lookup(guest.guest_name, deadline)
        if dom is None:
            return

        def shutdown() -> None:
            try:
                dom.shutdown()
            except libvirt.libvirtError as e:
                if error_code(e) == libvirt.VIR_ERR_OPERATION_INVALID and not dom.isActive():
                    return
                raise

        self._call(shutdown, deadline, f"shut down {guest.guest_name}")

    def power_off(self, guest: GuestParams, deadline: Deadline) -> None:
        name = guest.guest_name
        try:
            dom = self._lookup(name, deadline)
        except Unreachable:
            if self._kill_qemu(name):
                return
            raise
        if dom is None:
            return

        def destroy() -> None:
            try:
                dom.destroy()
            except libvirt.libvirtError as e:
                if error_code(e) == libvirt.VIR_ERR_OPERATION_INVALID and not dom.isActive():
                    return
                raise

        try:
            self._call(destroy, deadline, f"destroy {name}")
        except Unreachable:
            if not self._kill_qemu(name):
                raise

    def _kill_qemu(self, name: str) -> bool:
        """With libvirtd gone, a guest's QEMU still runs: stop it through its pid file.

        Only for the local system driver, and only a process whose command line names
        the guest: a stale pid file must never kill an unrelated process.
        """
        if self.uri not in ("qemu:///system", "qemu+unix:///system"):
            return False
        # procs reads the pid file and checks the process's own -name argument (guest=web
        # is not guest=web1), and that it lives.
        pid = procs.qemu_pid(name)
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        log.warning("%s: libvirt unreachable, killed its QEMU process %d", name, pid)
        return True

    def definition(self, guest: GuestParams, deadline: Deadline) -> str | None:
        dom = self._lookup(guest.guest_name, deadline)
        if dom is None:
            return None
        flags = libvirt.VIR_DOMAIN_XML_SECURE
        if self._call(dom.isPersistent, deadline, "is persistent"):
            flags |= libvirt.VIR_DOMAIN_XML_INACTIVE
        xml: str = self._call(lambda: dom.XMLDesc(flags), deadline, "read definition")
        return xml

    # -- migrate --------------------------------------------------------------------

    def migrate(
        self, guest: GuestParams, target: SystemInfo, deadline: Deadline, progress: Progress
    ) -> None:
        name = guest.guest_name
        dom = self._lookup(name, deadline)
        if dom is None or not self._call(dom.isActive, deadline, "is active"):
            raise AgentError(f"{name} is not running here: nothing to migrate")
        dconn = open_connection(target.libvirt_uri, deadline.sub(self.open_timeout))
        flags = (
            libvirt.VIR_MIGRATE_LIVE
            | libvirt.VIR_MIGRATE_PERSIST_DEST
            | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
        )
        params: dict[str, Any] = {}
        if target.migrate_data_uri:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = target.migrate_data_uri
        outcome: list[BaseException | None] = []
        done = threading.Event()

        def run() -> None:
            try:
                dom.migrate3(dconn, params, flags)
                outcome.append(None)
            except BaseException as e:
                outcome.append(e)
            finally:
                done.set()

        threading.Thread(target=run, name=f"migrate:{name}", daemon=True).start()
        try:
            while not done.wait(min(1.0, deadline.remaining())):
                if deadline.expired():
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.abortJob()
                    done.wait(min(30.0, max(1.0, self.open_timeout)))
                    raise AgentError(
                        f"migration of {name} to {target.name} did not finish within "
                        f"{deadline.seconds:g} s (MigrateTimeout); aborted, it still runs here"
                    )
                progress(_job_progress(dom))
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                dconn.close()
        err = outcome[0]
        if isinstance(err, libvirt.libvirtError):
            raise agent_error(f"migration of {name} to {target.name}", err)
        if err is not None:
            raise err

    # -- actions --------------------------------------------------------------------

    def dev_scan(self, guest: GuestParams, deadline: Deadline) -> tuple[list[str], list[str]]:
        name = guest.guest_name
        dom = self._lookup(name, deadline)
        if dom is None:
            raise AgentError(f"{name} is not defined on this host")
        conn = self.conn(deadline)

        def refresh_pools() -> None:
            for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
                with contextlib.suppress(libvirt.libvirtError):
                    pool.refresh(0)

        self._call(refresh_pools, deadline, "refresh storage pools")
        xml = self._call(lambda: dom.XMLDesc(0), deadline, "read definition")
        ok: list[str] = []
        problems: list[str] = []
        for disk in ET.fromstring(xml).iter("disk"):
            device = disk.get("device", "disk")
            target = disk.find("target").get("dev") if disk.find("target") is not None else "?"  # type: ignore[union-attr]
            src = disk.find("source")
            label = f"{device} {target}"
            if src is None:
                if device == "cdrom":
                    ok.append(f"{label}: empty tray")
                else:
                    problems.append(f"{label}: no source")
                continue
            path = src.get("file") or src.get("dev")
            if path is None and src.get("pool") and src.get("volume"):
                path = self._volume_path(conn, src.get("pool", ""), src.get("volume", ""), deadline)
                if path is None:
                    problems.append(
                        f"{label}: volume {src.get('pool')}/{src.get('volume')} missing"
                    )
                    continue
            if path is None:
                ok.append(f"{label}: {src.get('protocol', 'network')} source, not checked here")
                continue
            if not os.path.exists(path):
                problems.append(f"{label}: {path} is missing")
            elif not os.access(path, os.R_OK):
                problems.append(f"{label}: {path} is not readable")
            else:
                ok.append(f"{label}: {path}")
        return ok, problems

    def _volume_path(self, conn: Any, pool: str, volume: str, deadline: Deadline) -> str | None:
        def find() -> str | None:
            try:
                return str(conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).path())
            except libvirt.libvirtError:
                return None

        result: str | None = self._call(find, deadline, "look up volume")
        return result

    def locate(self, guest: GuestParams, systems: list[SystemInfo], deadline: Deadline) -> str:
        here = self.probe(guest, deadline)
        if here.state is states.ResourceState.ONLINE:
            return f"{guest.guest_name} runs here ({guest.system or self.uri})"
        found: list[str] = []
        for system in systems:
            if system.name == guest.system:
                continue
            peer = LibvirtKVM(system.libvirt_uri, events=False, open_timeout=self.open_timeout)
            try:
                result = peer.probe(guest, deadline.sub(max(1.0, deadline.remaining() / 2)))
            finally:
                peer.close()
            if result.state is states.ResourceState.ONLINE:
                found.append(system.name)
        if found:
            return f"{guest.guest_name} runs on {', '.join(found)}; here: {here.detail}"
        return f"{guest.guest_name} runs on no reachable system; here: {here.detail}"

    def heartbeat(self, system: SystemInfo, deadline: Deadline) -> bool:
        try:
            conn = open_connection(system.libvirt_uri, deadline)
        except Unreachable:
            return False
        try:
            bounded(conn.getLibVersion, deadline, "heartbeat", system.libvirt_uri)
            return True
        except (Unreachable, libvirt.libvirtError):
            return False
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()


def _job_progress(dom: Any) -> str:
    try:
        stats = dom.jobStats()
    except libvirt.libvirtError:
        return "migrating"
    total = int(stats.get("memory_total", 0) or 0)
    remaining = int(stats.get("memory_remaining", 0) or 0)
    elapsed = int(stats.get("time_elapsed", 0) or 0) / 1000
    if total:
        done = 100 * (total - remaining) / total
        return f"migrating: {done:.0f}% of memory sent, {remaining >> 20} MiB left, {elapsed:.0f} s"
    return f"migrating: {elapsed:.0f} s"
