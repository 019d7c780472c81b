"""A thin, bounded, secret-keeping client for RHV-M (oVirt Engine API v4) on ovirtsdk4.

What it adds to the SDK, and why:

* **Only https, always verified.** An ``http://`` URL is refused (the password would
  travel in clear); the server certificate is checked against ``ca_file`` or the system
  store, and there is no "insecure" switch.
* **Every call has a deadline.** The SDK's own ``timeout`` is whole seconds and does not
  cover the SSO login at all (``Connection._get_sso_response`` sets no curl timeout), so a
  hung SSO would hang the agent. Here the SSO request gets the curl timeout too, and each
  call runs in a worker thread that the caller stops waiting for at the deadline; a
  connection whose call overran is dropped, never reused.
* **Errors by status code and type, never by message text.** HTTP 401/403 and SSO
  refusals are :class:`RhevmAuthError`, 404 :class:`RhevmNotFound`, 409
  :class:`RhevmConflict`; no answer, a 5xx or an unusable answer is
  :class:`RhevmUnreachable` (a monitor must then say UNKNOWN, never OFFLINE). The curl
  error codes that the SDK folds into plain messages are recovered from curl itself.
* **The password never leaves.** No SDK debug log (it writes the SSO form), no chained SDK
  exception, and every message that quotes the server or the SDK is scrubbed.

An expired token is the SDK's business: on a 401 it logs in again once and retries.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

from .rhevm_transport import HAVE_SDK, close_quietly

if HAVE_SDK:
    from .rhevm_transport import BoundedConnection, otypes, pycurl, sdk

log = logging.getLogger("kvmguest.rhevm")

T = TypeVar("T")
API_PATH = "/ovirt-engine/api"
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9._@:+-]+$")


# -- errors --------------------------------------------------------------------------------


class RhevmError(Exception):
    """RHV-M could not do what was asked; the message is one operator-facing line.

    ``code`` is the HTTP status when the engine answered, ``curl_code`` the transport
    error when it did not; ``fault_reason``/``fault_detail`` are the engine's fault text.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        curl_code: int | None = None,
        fault_reason: str | None = None,
        fault_detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.curl_code = curl_code
        self.fault_reason = fault_reason
        self.fault_detail = fault_detail


class RhevmConfigError(RhevmError, ValueError):
    """The RHEVMInfo settings are unusable (http:// URL, missing CA file, ...)."""


class RhevmUnreachable(RhevmError):
    """No usable answer in time: down, unreachable, overloaded (5xx) or untrusted."""


class RhevmTlsError(RhevmUnreachable):
    """The TLS handshake failed: most often, the server's certificate is not trusted."""


class RhevmAuthError(RhevmError):
    """RHV-M refused the user name and password (or the user lacks the permission)."""


class RhevmNotFound(RhevmError):
    """No such VM, host or object."""


class RhevmConflict(RhevmError):
    """RHV-M refused the operation in the object's current state (HTTP 409)."""


# curl error codes (stable, part of libcurl's ABI) -> what they mean for the operator.
_CURL_TLS = {35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 83, 90, 91}
_CURL_TIMEOUT = 28
_CURL_CONNECT = {5, 6, 7}  # proxy or host name not resolved, connection refused


# -- what the client returns ---------------------------------------------------------------


@dataclass(frozen=True)
class VmInfo:
    id: str
    name: str
    status: str  # the API's VmStatus value ("up", "powering_up", ...), "unknown" if absent
    host_id: str | None
    cluster_id: str | None
    affinity: str | None  # "migratable" | "user_migratable" | "pinned" | None
    placement_host_ids: tuple[str, ...]


@dataclass(frozen=True)
class HostInfo:
    id: str
    name: str
    address: str | None
    status: str | None
    cluster_id: str | None


@dataclass(frozen=True)
class DiskInfo:
    id: str
    name: str | None
    active: bool
    bootable: bool
    status: str | None


def _enum(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _vm_info(vm: Any) -> VmInfo:
    policy = vm.placement_policy
    hosts = (policy.hosts or []) if policy is not None else []
    return VmInfo(
        id=vm.id,
        name=vm.name,
        # The SDK reads a status it does not know as None: unknown is the safe answer.
        status=_enum(vm.status) or "unknown",
        host_id=vm.host.id if vm.host is not None else None,
        cluster_id=vm.cluster.id if vm.cluster is not None else None,
        affinity=_enum(policy.affinity) if policy is not None else None,
        placement_host_ids=tuple(h.id for h in hosts if h.id),
    )


def _host_info(host: Any) -> HostInfo:
    return HostInfo(
        id=host.id,
        name=host.name,
        address=host.address,
        status=_enum(host.status),
        cluster_id=host.cluster.id if host.cluster is not None else None,
    )


def _search_term(field: str, value: str) -> str:
    if not value or '"' in value:
        raise RhevmConfigError(f"invalid {field} {value!r} for an RHV-M search")
    return f"{field}={value}" if _PLAIN_NAME.match(value) else f'{field}="{value}"'


def normalize_url(url: str) -> str:
    """The API entry point for an RHEVMInfo URL; refuses anything but https.

    ``https://rhevm.example.com`` (the form the seed documents) becomes
    ``https://rhevm.example.com/ovirt-engine/api``; an explicit path is kept.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # parses the port: a malformed one raises here
    except ValueError:
        raise RhevmConfigError("the RHV-M URL is malformed") from None
    if parts.scheme.lower() != "https":
        raise RhevmConfigError(
            f"the RHV-M URL must use https:// (got {parts.scheme or 'no scheme'!r}): "
            "the password would otherwise cross the network in clear"
        )
    if parts.username is not None or parts.password is not None:
        # Not echoed: whatever is there may be a password.
        raise RhevmConfigError("the RHV-M URL must not contain credentials; set User/Password")
    if not parts.hostname:
        raise RhevmConfigError("the RHV-M URL has no host name")
    if parts.query or parts.fragment:
        raise RhevmConfigError("the RHV-M URL must not have a query or a fragment")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if port is not None:
        netloc += f":{port}"
    path = parts.path.rstrip("/") or API_PATH
    return urlunsplit(("https", netloc, path, "", ""))


class _Outcome:
    value: Any = None
    error: BaseException | None = None


# -- the client --------------------------------------------------------------------------


class RhevmClient:
    """What the KVMGuest agent asks of RHV-M, each call bounded by ``timeout`` seconds."""

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        ca_file: str | None,
        timeout: float = 30.0,
    ) -> None:
        if not HAVE_SDK:
            raise RhevmConfigError(
                "RHEV support needs ovirt-engine-sdk-python (install kvmguest[rhevm])"
            )
        self.url = normalize_url(url)
        if not user:
            raise RhevmConfigError("the RHV-M user is empty")
        if not password:
            raise RhevmConfigError("the RHV-M password is empty")
        if ca_file is not None and not (os.path.isfile(ca_file) and os.access(ca_file, os.R_OK)):
            raise RhevmConfigError(f"the CA file {ca_file} does not exist or is not readable")
        if not timeout > 0:
            raise RhevmConfigError("the RHV-M timeout must be positive")
        self.user = user
        self.ca_file = ca_file
        self.timeout = float(timeout)
        self._password = password
        # The forms in which the password could appear in a message: as is, and as the
        # SSO form, a URL, JSON or XML would encode it.
        self._secret_forms = sorted(
            {
                password,
                quote_plus(password),
                quote(password, safe=""),
                json.dumps(password)[1:-1],
                html.escape(password),
            },
            key=len,
            reverse=True,
        )
        self._conn: Any = None
        self._call_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RhevmClient(url={self.url!r}, user={self.user!r}, ca_file={self.ca_file!r})"

    def _scrub(self, text: str) -> str:
        for form in self._secret_forms:
            text = text.replace(form, "***")
        return text

    def _scrubbed(self, err: RhevmError) -> RhevmError:
        """``err``, or a copy of it whose message no longer quotes the password."""
        text = str(err)
        if self._scrub(text) == text:
            return err
        return type(err)(
            self._scrub(text),
            code=err.code,
            curl_code=err.curl_code,
            fault_reason=err.fault_reason,
            fault_detail=err.fault_detail,
        )

    # -- plumbing ----------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[Any], T], timeout: float | None) -> T:
        what = self._scrub(what)  # it names objects, and ends up in messages and logs
        budget = self.timeout if timeout is None else timeout
        if budget <= 0:
            raise RhevmUnreachable(f"{what}: no time left to ask RHV-M")
        deadline = time.monotonic() + budget
        log.debug("RHV-M: %s", what)
        if not self._call_lock.acquire(timeout=budget):
            raise RhevmUnreachable(f"{what}: another RHV-M call is still running")
        try:
            result = self._run(what, fn, deadline, budget)
        finally:
            self._call_lock.release()
        if isinstance(result, RhevmError):
            result = self._scrubbed(result)
            log.debug("RHV-M: %s failed: %s", what, result)
            raise result
        return result  # type: ignore[no-any-return]

    def _run(self, what: str, fn: Callable[[Any], T], deadline: float, budget: float) -> Any:
        """The result of ``fn``, or the RhevmError to raise (returned, so that it is raised
        outside any ``except`` block and chains no SDK exception)."""
        if self._conn is None:
            try:
                self._conn = BoundedConnection(self.url, self.user, self._password, self.ca_file)
            except Exception as e:  # the SDK checks its arguments; we checked them first
                return RhevmError(f"{what}: cannot set up a connection: {type(e).__name__}")
        conn = self._conn
        remaining = max(0.0, deadline - time.monotonic())
        conn.prepare(remaining)
        out = _Outcome()
        done = threading.Event()

        def work() -> None:
            try:
                out.value = fn(conn)
            except BaseException as e:  # handed over to the caller's thread
                out.error = e
            finally:
                with conn.state_lock:
                    conn.busy = False
                    close = conn.abandoned
                done.set()
                if close:
                    close_quietly(conn, logout=False)

        with conn.state_lock:
            conn.busy = True
        threading.Thread(target=work, name=f"rhevm: {what}", daemon=True).start()
        if not done.wait(remaining):
            # The worker may be stuck in curl; it closes the connection when it returns.
            with conn.state_lock:
                conn.abandoned = True
                close = not conn.busy
            self._conn = None
            if close:
                close_quietly(conn, logout=False)
            return RhevmUnreachable(f"{what}: RHV-M did not answer within {budget:.3g} s")
        if out.error is not None:
            return self._classify(what, out.error, conn)
        return out.value

    def _classify(self, what: str, e: BaseException, conn: Any) -> RhevmError:
        if isinstance(e, RhevmError):
            return e
        curl_code: int | None = None
        text = str(e)
        if conn.curl_errors:
            # curl's own words, not the SDK's wrapping of them (which shows object ids).
            curl_code, curl_text = conn.curl_errors[-1]
            text = f"curl error {curl_code}: {curl_text}"
        for err in (e, e.__context__):
            if isinstance(err, pycurl.error) and err.args and curl_code is None:
                curl_code = int(err.args[0])
        text = self._scrub(text)
        if not isinstance(e, sdk.Error):
            if isinstance(e, pycurl.error | OSError):
                return RhevmUnreachable(f"{what}: cannot reach RHV-M: {text}", curl_code=curl_code)
            return RhevmError(f"{what}: unexpected {type(e).__name__}: {text}")
        code = e.code
        fault = e.fault
        reason = self._scrub(fault.reason) if fault is not None and fault.reason else None
        detail = self._scrub(fault.detail) if fault is not None and fault.detail else None
        info: dict[str, Any] = {
            "code": code,
            "curl_code": curl_code,
            "fault_reason": reason,
            "fault_detail": detail,
        }
        said = detail or reason or text
        if conn.sso_error == "server_error" or (code is not None and code >= 500):
            return RhevmUnreachable(f"{what}: RHV-M failed to answer: {said}", **info)
        if isinstance(e, sdk.AuthError) or code in (401, 403):
            return RhevmAuthError(f"{what}: RHV-M refused user {self.user}: {said}", **info)
        if isinstance(e, sdk.NotFoundError) or code == 404:
            return RhevmNotFound(f"{what}: not found in RHV-M: {said}", **info)
        if code == 409:
            return RhevmConflict(f"{what}: RHV-M refused: {said}", **info)
        if code is not None:
            return RhevmError(f"{what}: RHV-M answered HTTP {code}: {said}", **info)
        # No HTTP answer at all, or one that is not the API's (a proxy's page, ...).
        if curl_code in _CURL_TLS:
            return RhevmTlsError(
                f"{what}: TLS with RHV-M failed (is the CA file right?): {text}", **info
            )
        if isinstance(e, sdk.TimeoutError) or curl_code == _CURL_TIMEOUT:
            return RhevmUnreachable(f"{what}: RHV-M did not answer in time: {text}", **info)
        if isinstance(e, sdk.ConnectionError) or curl_code in _CURL_CONNECT:
            return RhevmUnreachable(f"{what}: cannot connect to RHV-M: {text}", **info)
        return RhevmUnreachable(f"{what}: no usable answer from RHV-M: {text}", **info)

    # -- lookups -------------------------------------------------------------------------------

    @staticmethod
    def _find_vm(conn: Any, name: str) -> Any:
        vms = conn.system_service().vms_service().list(search=_search_term("name", name))
        # The search may match loosely (case, wildcards): only the exact name counts.
        found = [v for v in vms if v.name == name]
        if not found:
            raise RhevmNotFound(f"no VM named {name!r} in RHV-M", code=404)
        if len(found) > 1:
            raise RhevmError(f"several VMs named {name!r} in RHV-M")
        return found[0]

    @classmethod
    def _vm_service(cls, conn: Any, name: str) -> tuple[Any, Any]:
        vm = cls._find_vm(conn, name)
        return vm, conn.system_service().vms_service().vm_service(vm.id)

    def vm_by_name(self, name: str, *, timeout: float | None = None) -> VmInfo:
        return self._call(f"look up VM {name}", lambda c: _vm_info(self._find_vm(c, name)), timeout)

    def vm_status(self, name: str, *, timeout: float | None = None) -> str:
        """The VM's API status: "up", "powering_up", "down", ... (the seed's table)."""
        return self.vm_by_name(name, timeout=timeout).status

    def vm_migratable(self, name: str, *, timeout: float | None = None) -> bool:
        """False if the VM is pinned to its host (placement policy affinity "pinned")."""
        return self.vm_by_name(name, timeout=timeout).affinity != "pinned"

    def vm_host(self, name: str, *, timeout: float | None = None) -> str | None:
        """The name of the host the VM runs on, None if it runs nowhere."""

        def ask(conn: Any) -> str | None:
            vm = self._find_vm(conn, name)
            if vm.host is None or not vm.host.id:
                return None
            host = conn.system_service().hosts_service().host_service(vm.host.id).get()
            return str(host.name)

        return self._call(f"find the host of VM {name}", ask, timeout)

    def host_by_name_or_address(
        self, cluster: str, name: str, *, timeout: float | None = None
    ) -> HostInfo:
        """The host of ``cluster`` called ``name``, or whose address is ``name``."""

        def ask(conn: Any) -> HostInfo:
            hosts = (
                conn.system_service().hosts_service().list(search=_search_term("cluster", cluster))
            )
            for h in hosts:
                if h.name == name:
                    return _host_info(h)
            for h in hosts:
                # Addresses are DNS names or IPs: case does not matter.
                if h.address and h.address.lower() == name.lower():
                    return _host_info(h)
            raise RhevmNotFound(
                f"no host named or addressed {name!r} in RHV-M cluster {cluster!r}", code=404
            )

        return self._call(f"look up host {name} in cluster {cluster}", ask, timeout)

    def host_by_id(self, host_id: str, *, timeout: float | None = None) -> HostInfo:
        """The host with this id (a VM's host link carries only the id)."""
        return self._call(
            f"look up host {host_id}",
            lambda c: _host_info(c.system_service().hosts_service().host_service(host_id).get()),
            timeout,
        )

    def vm_disks(self, name: str, *, timeout: float | None = None) -> list[DiskInfo]:
        """The VM's disk attachments, with whether each is active."""

        def ask(conn: Any) -> list[DiskInfo]:
            _vm, svc = self._vm_service(conn, name)
            disks_service = conn.system_service().disks_service()
            result: list[DiskInfo] = []
            for a in svc.disk_attachments_service().list(follow="disk"):
                disk = a.disk
                disk_id = disk.id if disk is not None and disk.id else a.id
                if disk is None or disk.name is None:
                    # An engine that ignores "follow" gives only a link: fetch the disk.
                    disk = disks_service.disk_service(disk_id).get()
                result.append(
                    DiskInfo(
                        id=disk_id,
                        name=disk.name,
                        active=bool(a.active),
                        bootable=bool(a.bootable),
                        status=_enum(disk.status),
                    )
                )
            return result

        return self._call(f"list the disks of VM {name}", ask, timeout)

    # -- actions -------------------------------------------------------------------------------

    def start_vm(
        self, name: str, host_id: str | None = None, *, timeout: float | None = None
    ) -> None:
        """Start the VM, on ``host_id`` if given (a run-once placement), else where RHV-M
        schedules it. Returns when RHV-M accepted; the VM then goes through
        wait_for_launch and powering_up to up."""

        def act(conn: Any) -> None:
            _vm, svc = self._vm_service(conn, name)
            if host_id is None:
                svc.start()
            else:
                placement = otypes.VmPlacementPolicy(hosts=[otypes.Host(id=host_id)])
                svc.start(vm=otypes.Vm(placement_policy=placement))

        self._call(f"start VM {name}", act, timeout)

    def shutdown_vm(self, name: str, *, timeout: float | None = None) -> None:
        """Ask the guest to shut down (ACPI); it may take its time, or ignore it."""
        self._call(
            f"shut down VM {name}", lambda c: self._vm_service(c, name)[1].shutdown(), timeout
        )

    def stop_vm(self, name: str, *, timeout: float | None = None) -> None:
        """Power the VM off at once."""
        self._call(f"stop VM {name}", lambda c: self._vm_service(c, name)[1].stop(), timeout)

    def migrate_vm(self, name: str, host_id: str | None, *, timeout: float | None = None) -> None:
        """Live-migrate the VM to ``host_id`` (None: where RHV-M chooses).

        A pinned VM is refused by RHV-M (:class:`RhevmConflict`). A "user_migratable" VM
        is migrated with force=true: the engine reserves it for manual migrations, and an
        agent migration is one the operator asked for.
        """

        def act(conn: Any) -> None:
            vm, svc = self._vm_service(conn, name)
            affinity = _enum(vm.placement_policy.affinity) if vm.placement_policy else None
            svc.migrate(
                host=otypes.Host(id=host_id) if host_id is not None else None,
                force=True if affinity == "user_migratable" else None,
            )

        self._call(f"migrate VM {name}", act, timeout)

    def set_cdrom_payload(
        self, name: str, files: Mapping[str, str], *, timeout: float | None = None
    ) -> None:
        """Replace the VM's payloads with one CD-ROM holding ``files`` (name -> content).
        RHV-M accepts this only while the VM is down (else :class:`RhevmConflict`)."""

        def act(conn: Any) -> None:
            _vm, svc = self._vm_service(conn, name)
            payload = otypes.Payload(
                type=otypes.VmDeviceType.CDROM,
                files=[otypes.File(name=k, content=v) for k, v in files.items()],
            )
            svc.update(otypes.Vm(payloads=[payload]))

        self._call(f"set the CD-ROM payload of VM {name}", act, timeout)

    def fence_manual(self, host_id: str, *, timeout: float | None = None) -> None:
        """Confirm to RHV-M that a non-responsive host has been rebooted (manual fence),
        so that the VMs it ran are known to be down and may start elsewhere."""
        self._call(
            f"confirm host {host_id} as rebooted",
            lambda c: (
                c.system_service().hosts_service().host_service(host_id).fence(fence_type="manual")
            ),
            timeout,
        )

    # -- end -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Log out (revoke the SSO token), bounded like any call; never raises."""
        conn = self._conn
        if conn is None:
            return
        try:
            self._call("log out", lambda c: c.close(logout=True), None)
        except RhevmError as e:
            log.debug("RHV-M logout failed: %s", e)
        finally:
            self._conn = None

    def __enter__(self) -> RhevmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
