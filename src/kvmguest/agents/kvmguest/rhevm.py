"""The RHEV half of the agent: a VM managed through RHV-M (RHEVMInfo.Enabled = 1).

RHV-M sees the whole RHV cluster, while a monitor answers for one system. So every answer
here is relative to *this system's RHV host* (system attribute RHEVHost, else the system
name, matched by name or address in RHEVMInfo.Cluster): a VM that runs on another host is
not online here, it is INTENTIONAL OFFLINE (it "migrated to another physical host", in the
seed's words), and clean never stops a VM that runs on another host. Without that, every
system of a failover group would report the VM ONLINE at once.

Every RHV-M call is bounded by what is left of the entry point's deadline; the client
(:mod:`kvmguest.agents.kvmguest.rhevm_client`) holds the only copy of the clear password and
scrubs it from everything it says. Errors are told apart by the client's exception types
(which it derives from HTTP status and curl codes), never by message text.

Decisions where the seed is silent are documented in docs/rhevm.md.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

from kvmguest.agents.kvmguest.hypervisor import Progress
from kvmguest.agents.kvmguest.params import GuestParams
from kvmguest.agents.kvmguest.rhevm_client import (
    HostInfo,
    RhevmAuthError,
    RhevmClient,
    RhevmConfigError,
    RhevmConflict,
    RhevmError,
    RhevmNotFound,
    RhevmTlsError,
    RhevmUnreachable,
    VmInfo,
)
from kvmguest.deadline import Deadline
from kvmguest.errors import AgentError, ConfigError, NotAllowed, Unreachable
from kvmguest.model import states
from kvmguest.model.resolver import Loaded, SystemInfo
from kvmguest.model.states import MonitorResult, ResourceState

log = logging.getLogger(__name__)

T = TypeVar("T")

CA_FILE_ENV = "KVMGUEST_RHEVM_CAFILE"
# Bounds the logout in close(); every other call gets the entry point's deadline.
CLOSE_TIMEOUT = 10.0
# How often the waits of fencing and migration re-read the VM (RHV-M sends no events).
POLL_SECONDS = 0.25
# Longest single wait in wait_changed: the entry points ask for less; this only keeps a
# caller's mistake from parking the agent.
MAX_WAIT_SECONDS = 5.0
# After a migrate request, how long a VM may still show "up" on the source before we
# conclude that RHV-M never started the migration (it normally turns "migrating" at once).
MIGRATION_START_GRACE = 15.0

# Statuses from which RHV-M starts a VM: down (boot) and suspended (restore).
_STARTABLE = ("down", "suspended")


def _hint_auth(e: RhevmAuthError) -> str:
    return (
        f"{e} (check RHEVMInfo.User, and RHEVMInfo.Password: encrypt the password again "
        "with `kvmguest encrypt`)"
    )


class RhevHypervisor:
    """The Hypervisor protocol on RHV-M, for one resource on one system."""

    kind = "rhev"

    def __init__(self, params: GuestParams, loaded: Loaded, system: str | None) -> None:
        # Nothing is read or decrypted here: a bad key or password must become the entry
        # point's one-line error (monitor: UNKNOWN), not an exception while setting up.
        self.params = params
        self.loaded = loaded
        self.system = system
        info = params.rhevm_info
        self.url = info.get("URL", "")
        self.user = info.get("User", "")
        self.cluster = info.get("Cluster", "")
        self.manual_fencing = info.get("UseManualRHEVMFencing", "0") == "1"
        self.ca_file = loaded.cluster_attr("RHEVMCAFile") or os.environ.get(CA_FILE_ENV) or None
        self.key_file = loaded.cluster_attr("SecretKeyFile")
        self._client: RhevmClient | None = None
        self._hosts: dict[str, HostInfo] = {}  # RHV host name/address as configured -> host
        self._host_names: dict[str, str] = {}  # host id -> name, for messages
        # Why RHV-M last failed to answer, to explain a deadline that ran out because of
        # it; cleared by every answer, so a long-lived agent never quotes a stale failure.
        self._last_unreachable: str | None = None

    def __repr__(self) -> str:
        return f"RhevHypervisor(url={self.url!r}, user={self.user!r}, system={self.system!r})"

    # -- plumbing -----------------------------------------------------------------------

    def client(self) -> RhevmClient:
        if self._client is not None:
            return self._client
        from kvmguest.secrets import SecretError, decrypt

        ciphertext = self.params.rhevm_info.get("Password", "")
        try:
            password = decrypt(ciphertext, self.key_file)
        except SecretError as e:
            # SecretError quotes neither the ciphertext nor the plaintext.
            raise ConfigError(f"RHEVMInfo.Password of {self.params.resource}: {e}") from None
        try:
            self._client = RhevmClient(self.url, self.user, password, self.ca_file, CLOSE_TIMEOUT)
        except RhevmConfigError as e:
            raise ConfigError(f"RHEVMInfo of {self.params.resource}: {e}") from None
        return self._client

    def _error(self, e: RhevmError) -> AgentError:
        """The entry points' error for a client error, by its type (never its text)."""
        if isinstance(e, RhevmConfigError):
            return ConfigError(f"RHEVMInfo: {e}")
        if isinstance(e, RhevmTlsError):
            ca = self.ca_file or "the system trust store"
            return Unreachable(f"{e} (trusted CAs: {ca}; see RHEVMCAFile)")
        if isinstance(e, RhevmUnreachable):
            return Unreachable(f"RHV-M {self.url}: {e}")
        if isinstance(e, RhevmAuthError):
            return ConfigError(_hint_auth(e))
        if isinstance(e, RhevmConflict):
            return NotAllowed(str(e))
        return AgentError(str(e))

    def _budget(self, deadline: Deadline) -> float:
        """What is left of ``deadline`` for the next call (the client refuses 0 itself)."""
        remaining = deadline.remaining()
        if remaining <= 0 and self._last_unreachable:
            # Say why the time ran out, not only that it did.
            raise Unreachable(
                f"no time left in the {deadline.seconds:g} s deadline; RHV-M earlier: "
                f"{self._last_unreachable}"
            )
        return remaining

    def _raise(self, e: RhevmError) -> NoReturn:
        err = self._error(e)
        if isinstance(err, Unreachable):
            self._last_unreachable = str(err)
        raise err from None

    def _ask(self, deadline: Deadline, fn: Callable[[RhevmClient, float], T]) -> T:
        """``fn(client, timeout)`` with what is left of ``deadline``; AgentError on failure."""
        client = self.client()
        try:
            result = fn(client, self._budget(deadline))
        except RhevmError as e:
            self._raise(e)
        self._last_unreachable = None
        return result

    def _find_vm(self, name: str, deadline: Deadline) -> VmInfo | None:
        """The VM, or None if RHV-M has no VM of that name (visible to our user)."""
        client = self.client()
        try:
            vm = client.vm_by_name(name, timeout=self._budget(deadline))
        except RhevmNotFound:
            self._last_unreachable = None
            return None
        except RhevmError as e:
            self._raise(e)
        self._last_unreachable = None
        return vm

    def _require_vm(self, name: str, deadline: Deadline) -> VmInfo:
        vm = self._find_vm(name, deadline)
        if vm is None:
            raise AgentError(self._not_found(name))
        return vm

    def _not_found(self, name: str) -> str:
        return (
            f"RHV-M has no VM named {name!r} visible to {self.user} (check GuestName, "
            "and the user's permissions on the VM)"
        )

    def host_for(self, system: SystemInfo, deadline: Deadline) -> HostInfo:
        """The RHV host that ``system`` is; ConfigError when RHEVMInfo.Cluster has none."""
        wanted = system.rhev_host or system.name
        cached = self._hosts.get(wanted)
        if cached is not None:
            return cached
        try:
            host = self.client().host_by_name_or_address(
                self.cluster, wanted, timeout=self._budget(deadline)
            )
        except RhevmNotFound:
            how = "its RHEVHost" if system.rhev_host else "no RHEVHost: its system name"
            raise ConfigError(
                f"system {system.name} ({how}) is RHV host {wanted!r}, but RHV-M cluster "
                f"{self.cluster!r} has no host of that name or address (set RHEVHost on "
                f"system {system.name}, or RHEVMInfo.Cluster)"
            ) from None
        except RhevmError as e:
            self._raise(e)
        self._last_unreachable = None
        self._hosts[wanted] = host
        self._host_names[host.id] = host.name
        return host

    def _my_host(self, deadline: Deadline) -> HostInfo | None:
        """This system's RHV host; None when the entry point runs for no system."""
        if not self.system:
            return None
        return self.host_for(self.loaded.system(self.system), deadline)

    def _host_by_id(self, host_id: str, deadline: Deadline) -> HostInfo:
        host = self._ask(deadline, lambda c, t: c.host_by_id(host_id, timeout=t))
        self._host_names[host.id] = host.name
        return host

    def _host_name(self, host_id: str, deadline: Deadline) -> str:
        """A host's name for a message: cached, else asked, else its id."""
        name = self._host_names.get(host_id)
        if name is not None:
            return name
        try:
            return self._host_by_id(host_id, deadline).name
        except AgentError:
            return host_id

    # -- monitor ------------------------------------------------------------------------

    def _state(self, vm: VmInfo, mine: HostInfo | None, deadline: Deadline) -> MonitorResult:
        """The seed's table, relative to this system's host."""
        result = states.rhev_state(vm.status)
        if vm.status == "down" or vm.host_id is None or mine is None:
            return result
        if vm.host_id == mine.id:
            return states.MonitorResult(
                result.state, result.confidence, f"{result.detail} on RHV host {mine.name}"
            )
        # It runs (or ran, for an unknown status) on another host: not here. RHV-M knows
        # that nothing of it runs on our host, so this system is not where it is online.
        other = self._host_name(vm.host_id, deadline)
        return states.intentional_offline(
            f"VM status {vm.status} on RHV host {other}, not on this system's host {mine.name}"
        )

    def probe(self, guest: GuestParams, deadline: Deadline) -> MonitorResult:
        try:
            mine = self._my_host(deadline)
            vm = self._find_vm(guest.guest_name, deadline)
            if vm is None:
                # Deleted from RHV-M, renamed, a typo in GuestName or a lost permission
                # look alike from here; OFFLINE would fail over to systems where it is just
                # as absent. UNKNOWN alerts the operator and starts nothing.
                return states.unknown(self._not_found(guest.guest_name))
            return self._state(vm, mine, deadline)
        except AgentError as e:
            return states.unknown(str(e))

    # -- online / offline / clean -------------------------------------------------------

    def prepare_online(self, guest: GuestParams, deadline: Deadline) -> list[str]:
        notes: list[str] = []
        name = guest.guest_name
        mine = self._my_host(deadline)
        vm = self._require_vm(name, deadline)
        if states.rhev_state(vm.status).state is ResourceState.UNKNOWN:
            notes += self._fence_if_host_lost(vm, mine, deadline)
            vm = self._require_vm(name, deadline)
        here = mine is not None and vm.host_id == mine.id
        if vm.status not in _STARTABLE:
            if vm.host_id is not None and not here:
                where = self._host_name(vm.host_id, deadline)
                raise NotAllowed(
                    f"{name} is {vm.status} on RHV host {where}, not on this system's host "
                    f"{mine.name if mine else '?'}: not starting it a second time; migrate it "
                    "here or take it offline there first"
                )
            raise NotAllowed(f"{name} is {vm.status} in RHV-M: not starting it")
        if mine is not None and mine.status != "up":
            fresh = self._host_by_id(mine.id, deadline)
            if fresh.status != "up":
                raise NotAllowed(
                    f"this system's RHV host {mine.name} is {fresh.status} in RHV-M: it cannot "
                    f"run {name}"
                )
        if guest.dr_enabled:
            notes.append(self._set_dr_payload(guest, vm, deadline))
        return notes

    def _fence_if_host_lost(
        self, vm: VmInfo, mine: HostInfo | None, deadline: Deadline
    ) -> list[str]:
        """The manual-fencing case: the VM is unknown because its host stopped answering."""
        name = vm.name
        host = self._host_by_id(vm.host_id, deadline) if vm.host_id else None
        if host is None or host.status != "non_responsive":
            where = f" on RHV host {host.name} ({host.status})" if host else ""
            raise AgentError(
                f"{name} is {vm.status}{where} in RHV-M: its state is unknown, so it is not "
                "started (it may still be running)"
            )
        if mine is not None and host.id == mine.id:
            raise AgentError(
                f"{name} is {vm.status} because this system's own RHV host {host.name} does "
                "not answer RHV-M; it may be running here: not confirming this host as "
                "rebooted and not starting it"
            )
        if not self.manual_fencing:
            raise AgentError(
                f"{name} is {vm.status}: its RHV host {host.name} is non_responsive and may "
                f"still run it. Once {host.name} is known to be down, confirm it in RHV-M "
                "(the host's menu: Confirm 'Host has been rebooted') and bring the resource "
                "online again, or set RHEVMInfo.UseManualRHEVMFencing = 1 to let the agent "
                "confirm it"
            )
        log.warning(
            "%s: confirming RHV host %s as rebooted (UseManualRHEVMFencing = 1) to start %s",
            self.params.resource,
            host.name,
            name,
        )
        self._ask(deadline, lambda c, t: c.fence_manual(host.id, timeout=t))
        while True:
            vm = self._require_vm(name, deadline)
            if vm.status in _STARTABLE:
                break
            if deadline.remaining() <= POLL_SECONDS:
                raise AgentError(
                    f"confirmed RHV host {host.name} as rebooted, but {name} is still "
                    f"{vm.status} in RHV-M"
                )
            time.sleep(POLL_SECONDS)
        return [f"confirmed RHV host {host.name} as rebooted (manual fencing); {name} is down"]

    def _set_dr_payload(self, guest: GuestParams, vm: VmInfo, deadline: Deadline) -> str:
        from kvmguest.guest.payload import (
            PAYLOAD_FILENAME,
            PayloadError,
            payload_from_dropts,
            to_json,
        )

        site = self.loaded.system(self.system).site if self.system else None
        if vm.status != "down":
            # RHV-M changes payloads only while the VM is down; a suspended VM resumes its
            # saved memory, where the network was configured at suspend time.
            return f"{vm.name} is {vm.status}: it resumes as it was, the DR payload is unchanged"
        try:
            text = to_json(payload_from_dropts(guest.dr_opts, site))
        except PayloadError as e:
            raise ConfigError(f"DROpts of {guest.resource}: {e}") from None
        self._ask(
            deadline,
            lambda c, t: c.set_cdrom_payload(vm.name, {PAYLOAD_FILENAME: text}, timeout=t),
        )
        return f"DR payload for site {site or '(none)'} set as {vm.name}'s CD-ROM payload"

    def start(self, guest: GuestParams, deadline: Deadline) -> None:
        name = guest.guest_name
        mine = self._my_host(deadline)
        try:
            self._ask(
                deadline,
                lambda c, t: c.start_vm(name, mine.id if mine else None, timeout=t),
            )
        except NotAllowed as e:
            where = f" on RHV host {mine.name}" if mine else ""
            raise NotAllowed(f"RHV-M refused to start {name}{where}: {e}") from None

    def shutdown(self, guest: GuestParams, deadline: Deadline) -> None:
        name = guest.guest_name
        vm = self._require_vm(name, deadline)
        self._refuse_other_host(vm, "shut down", deadline)
        try:
            self._ask(deadline, lambda c, t: c.shutdown_vm(name, timeout=t))
        except NotAllowed:
            # 409: RHV-M refuses in this status; if it went down meanwhile, that is done.
            if self._require_vm(name, deadline).status != "down":
                raise

    def power_off(self, guest: GuestParams, deadline: Deadline) -> None:
        name = guest.guest_name
        vm = self._find_vm(name, deadline)
        if vm is None or vm.status == "down":
            return
        if self._elsewhere(vm, deadline):
            # Clean on a system where the VM does not run must not stop it where it does.
            log.warning(
                "%s: %s runs on RHV host %s, not here: clean leaves it alone",
                self.params.resource,
                name,
                self._host_name(vm.host_id or "", deadline),
            )
            return
        try:
            self._ask(deadline, lambda c, t: c.stop_vm(name, timeout=t))
        except NotAllowed as e:
            if self._require_vm(name, deadline).status != "down":
                raise NotAllowed(f"RHV-M cannot stop {name}: {e}") from None

    def _elsewhere(self, vm: VmInfo, deadline: Deadline) -> bool:
        mine = self._my_host(deadline)
        return mine is not None and vm.host_id is not None and vm.host_id != mine.id

    def _refuse_other_host(self, vm: VmInfo, what: str, deadline: Deadline) -> None:
        if self._elsewhere(vm, deadline):
            other = self._host_name(vm.host_id or "", deadline)
            raise NotAllowed(
                f"{vm.name} runs on RHV host {other}, not on this system's host: not "
                f"asking RHV-M to {what} it from here"
            )

    def wait_changed(self, timeout: float) -> None:
        # RHV-M sends the agent no events: the caller's poll interval is the wait.
        time.sleep(max(0.0, min(timeout, MAX_WAIT_SECONDS)))

    def definition(self, guest: GuestParams, deadline: Deadline) -> str | None:
        # RHV-M keeps the VM's definition for every host; there is no file to copy.
        log.warning(
            "%s: RHV-M keeps the definition of %s; SyncDir does not apply to RHEV resources",
            guest.resource,
            guest.guest_name,
        )
        return None

    # -- migrate ------------------------------------------------------------------------

    def migrate(
        self, guest: GuestParams, target: SystemInfo, deadline: Deadline, progress: Progress
    ) -> None:
        name = guest.guest_name
        vm = self._require_vm(name, deadline)
        if vm.affinity == "pinned":
            raise NotAllowed(
                f"{name} is pinned to its host in RHV-M (migration mode: do not allow "
                "migration); change its migration mode in RHV-M to migrate it"
            )
        if vm.status != "up":
            raise AgentError(f"{name} is {vm.status} in RHV-M: only a VM that is up migrates")
        self._refuse_other_host(vm, "migrate", deadline)
        dest = self.host_for(target, deadline)
        if vm.host_id == dest.id:
            raise NotAllowed(f"{name} already runs on RHV host {dest.name} ({target.name})")
        fresh = self._host_by_id(dest.id, deadline)
        if fresh.status != "up":
            raise NotAllowed(
                f"target RHV host {dest.name} ({target.name}) is {fresh.status} in RHV-M"
            )
        source = vm.host_id
        try:
            self._ask(deadline, lambda c, t: c.migrate_vm(name, dest.id, timeout=t))
        except NotAllowed as e:  # 409: pinned meanwhile, no room on the target, ...
            raise NotAllowed(f"RHV-M refused to migrate {name} to {dest.name}: {e}") from None
        started = time.monotonic()
        seen_migrating = False
        while True:
            vm = self._require_vm(name, deadline)
            elapsed = time.monotonic() - started
            if vm.status == "up" and vm.host_id == dest.id:
                return
            if vm.status == "migrating":
                seen_migrating = True
            elif vm.status == "up" and vm.host_id == source:
                if seen_migrating or elapsed > MIGRATION_START_GRACE:
                    raise AgentError(
                        f"RHV-M did not migrate {name} to {dest.name}: it is still up on "
                        f"{self._host_name(source or '', deadline)} (see the RHV-M events)"
                    )
            else:
                raise AgentError(f"{name} became {vm.status} while migrating to {dest.name}")
            progress(f"{name}: {vm.status} to {dest.name}, {elapsed:.0f} s")
            if deadline.remaining() <= POLL_SECONDS:
                raise AgentError(
                    f"migration of {name} to {dest.name} did not finish within "
                    f"{deadline.seconds:g} s (MigrateTimeout); RHV-M may still finish it "
                    "(check with the guestmigrated action)"
                )
            time.sleep(POLL_SECONDS)

    # -- actions ------------------------------------------------------------------------

    def dev_scan(self, guest: GuestParams, deadline: Deadline) -> tuple[list[str], list[str]]:
        name = guest.guest_name
        if self._find_vm(name, deadline) is None:
            raise AgentError(self._not_found(name))
        disks = self._ask(deadline, lambda c, t: c.vm_disks(name, timeout=t))
        ok: list[str] = []
        problems: list[str] = []
        for d in disks:
            label = f"disk {d.name or d.id}" + (" (bootable)" if d.bootable else "")
            if not d.active:
                problems.append(f"{label}: attached but not active")
            elif d.status not in (None, "ok"):
                problems.append(f"{label}: status {d.status} in RHV-M")
            else:
                ok.append(f"{label}: attached, active")
        return ok, problems

    def locate(self, guest: GuestParams, systems: list[SystemInfo], deadline: Deadline) -> str:
        name = guest.guest_name
        vm = self._find_vm(name, deadline)
        if vm is None:
            return self._not_found(name)
        here = self._state(vm, self._my_host(deadline), deadline)
        if vm.host_id is None:
            return f"{name} is {vm.status} in RHV-M, on no host; here: {here.state.value}"
        host = self._host_by_id(vm.host_id, deadline)
        matches: list[str] = []
        for system in systems:
            try:
                if self.host_for(system, deadline).id == host.id:
                    matches.append(system.name)
            except ConfigError:
                continue  # a system without an RHV host cannot be where it runs
        where = f"system {', '.join(matches)}" if matches else "no system of this group"
        return (
            f"{name} is {vm.status} on RHV host {host.name} ({where}); "
            f"here ({self.system or '?'}): {here.state.value}"
        )

    def heartbeat(self, system: SystemInfo, deadline: Deadline) -> bool:
        """RHV-M reports the system's RHV host ``up``.

        Lost only when RHV-M says so (host not up, or not in the cluster); when RHV-M does
        not answer, nothing is known about the host, and a loss declared on no
        information would start a failover.
        """
        try:
            host = self.host_for(system, deadline)
            status = self._host_by_id(host.id, deadline).status
        except Unreachable as e:
            log.warning("heartbeat of %s: RHV-M did not answer (%s): not lost", system.name, e)
            return True
        except ConfigError as e:
            log.error("heartbeat of %s: %s", system.name, e)
            return False
        except AgentError as e:
            log.warning("heartbeat of %s: %s: not lost", system.name, e)
            return True
        if status != "up":
            log.warning("heartbeat of %s: RHV host %s is %s", system.name, host.name, status)
        return status == "up"

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
