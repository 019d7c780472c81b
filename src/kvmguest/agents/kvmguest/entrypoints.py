"""The KVMGuest entry points, written once against the Hypervisor protocol.

Each takes a :class:`Context` and returns an :class:`Outcome` (monitor: a
MonitorResult). Every wait is bounded by the entry point's own timeout (AEPTimeout), and
ends as soon as the guest reaches the state it waits for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kvmguest.agents.base import ACTION_OUTPUT_LIMIT as ACTION_OUTPUT_LIMIT
from kvmguest.agents.base import CLEAN_REASONS, Ended, Outcome, cap_output
from kvmguest.agents.kvmguest.hypervisor import Hypervisor, Progress
from kvmguest.agents.kvmguest.params import GuestParams
from kvmguest.agents.kvmguest.syncdir import write_definition
from kvmguest.deadline import Clock, Deadline, DeadlineExceeded
from kvmguest.errors import AgentError, NotAllowed, Unreachable
from kvmguest.model import states
from kvmguest.model.resolver import Loaded, SystemInfo
from kvmguest.model.states import MonitorResult, ResourceState

log = logging.getLogger("kvmguest.agent")

# How often a wait re-reads the state even without a lifecycle event (safety net).
POLL_SECONDS = 0.25


@dataclass
class Context:
    params: GuestParams
    loaded: Loaded
    hv: Hypervisor
    clock: Clock = time.monotonic
    progress: Progress = lambda _msg: None

    def deadline(self, entry_point: str) -> Deadline:
        return Deadline(float(self.params.timeout(entry_point)), self.clock)

    def system_info(self, name: str) -> SystemInfo:
        return self.loaded.system(name)


def _wait_for(
    ctx: Context, done: Callable[[MonitorResult], bool], limit: float, deadline: Deadline
) -> MonitorResult:
    """Probe until ``done`` holds, ``limit`` seconds pass or the deadline is near."""
    wait = deadline.sub(limit)
    last: MonitorResult | None = None
    while True:
        result = ctx.hv.probe(ctx.params, deadline)
        if result.state is ResourceState.UNKNOWN and deadline.expired() and last is not None:
            return last  # the deadline, not the guest, cut the last probe short
        if done(result) or wait.expired():
            return result
        last = result
        ctx.hv.wait_changed(min(POLL_SECONDS, wait.remaining()))


def _ended(e: Exception, deadline: Deadline) -> Ended:
    """How an entry point that met ``e`` ended: by the error's type and the deadline."""
    if isinstance(e, DeadlineExceeded) or deadline.expired():
        return Ended.TIMED_OUT
    if isinstance(e, Unreachable):
        return Ended.UNREACHABLE
    return Ended.FAILED


def _is_online(r: MonitorResult) -> bool:
    return r.state is ResourceState.ONLINE


def _is_down(r: MonitorResult) -> bool:
    return r.state in (ResourceState.OFFLINE, ResourceState.INTENTIONAL_OFFLINE)


# --- monitor -----------------------------------------------------------------------


def monitor(ctx: Context, deadline: Deadline | None = None) -> MonitorResult:
    """The guest's state. An UNKNOWN answer with ``deadline`` expired is a monitor timeout
    (the daemon's handle reports it so); a refused connection answers UNKNOWN at once."""
    deadline = deadline or ctx.deadline("Monitor")
    try:
        result = ctx.hv.probe(ctx.params, deadline)
    except AgentError as e:
        result = states.unknown(str(e))
    ce = ctx.params.ce_info
    if ce.get("Enabled") == "1" and result.state is not ResourceState.UNKNOWN:
        system = ctx.system_info(ce.get("CESystem", ""))
        if not ctx.hv.heartbeat(system, deadline):
            lost = f"heartbeat from control entity {system.name} lost"
            if ce.get("FaultOnHBLoss", "1") == "1":
                return states.offline(f"{lost} (FaultOnHBLoss = 1); guest was: {result.detail}")
            return states.unknown(f"{lost} (FaultOnHBLoss = 0); guest was: {result.detail}")
    return result


# --- online / offline / clean ------------------------------------------------------


def online(ctx: Context) -> Outcome:
    p = ctx.params
    deadline = ctx.deadline("Online")
    try:
        before = ctx.hv.probe(p, deadline)
        if before.state is ResourceState.ONLINE:
            return Outcome(True, f"{p.resource} is already online ({before.detail}): not started")
        if before.state is ResourceState.UNKNOWN and p.rhev is False:
            # Starting a guest whose state is unknown risks running it twice.
            raise AgentError(f"{p.resource}: state unknown ({before.detail}); not starting it")
        ctx.progress(f"{p.resource}: preparing {p.guest_name}")
        notes = ctx.hv.prepare_online(p, deadline)
        for note in notes:
            log.info("%s: %s", p.resource, note)
        ctx.progress(f"{p.resource}: starting {p.guest_name}")
        ctx.hv.start(p, deadline)
        ctx.progress(f"{p.resource}: started, waiting up to {p.delay_online} s for it to run")
        result = _wait_for(
            ctx, lambda r: _is_online(r) and r.confidence >= 100, p.delay_online, deadline
        )
    except DeadlineExceeded as e:
        return Outcome(False, f"online of {p.resource}: {e}", ended=Ended.TIMED_OUT)
    except AgentError as e:
        return Outcome(False, f"online of {p.resource} failed: {e}", ended=_ended(e, deadline))
    if result.state is ResourceState.ONLINE:
        return Outcome(True, f"{p.resource} online ({result.detail})", output="\n".join(notes))
    if deadline.expired():
        return Outcome(False, f"{p.resource} not online within OnlineTimeout "
                       f"({deadline.seconds:g} s): {result.state.value}: {result.detail}",
                       ended=Ended.TIMED_OUT)  # fmt: skip
    return Outcome(False, f"{p.resource} started but is {result.state.value}: {result.detail}")


def _sync(ctx: Context, deadline: Deadline) -> list[str]:
    """Copy the definition to SyncDir; a failure is a warning, never a lost guest."""
    p = ctx.params
    if not p.sync_dir:
        return []
    try:
        xml = ctx.hv.definition(p, deadline)
        if xml is None:
            return [f"{p.guest_name} has no definition to copy to SyncDir {p.sync_dir}"]
        path = write_definition(p.sync_dir, p.guest_name, xml)
        log.info("%s: definition copied to %s", p.resource, path)
        return []
    except (AgentError, OSError) as e:
        why = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else str(e)
        msg = f"could not copy the definition of {p.guest_name} to SyncDir: {why}"
        log.warning("%s: %s", p.resource, msg)
        return [msg]


def offline(ctx: Context) -> Outcome:
    p = ctx.params
    deadline = ctx.deadline("Offline")
    try:
        before = ctx.hv.probe(p, deadline)
        if _is_down(before):
            return Outcome(True, f"{p.resource} is already offline ({before.detail})",
                           _sync(ctx, deadline))  # fmt: skip
        if before.state is ResourceState.UNKNOWN:
            raise AgentError(f"state unknown ({before.detail})")
        ctx.hv.shutdown(p, deadline)
        ctx.progress(f"{p.resource}: shutting down, waiting up to {p.delay_offline} s")
        result = _wait_for(ctx, _is_down, p.delay_offline, deadline)
    except (AgentError, DeadlineExceeded) as e:
        return Outcome(False, f"offline of {p.resource} failed: {e}", ended=_ended(e, deadline))
    if not _is_down(result) and deadline.expired():
        # OfflineTimeout ended the wait before DelayAfterGuestOffline did: offline hung.
        return Outcome(
            False,
            f"{p.resource} is still {result.state.value} at OfflineTimeout "
            f"({deadline.seconds:g} s) after the shutdown request",
            ended=Ended.TIMED_OUT,
        )
    warnings = _sync(ctx, deadline)
    if _is_down(result):
        return Outcome(True, f"{p.resource} offline ({result.detail})", warnings)
    return Outcome(
        False,
        f"{p.resource} is still {result.state.value} {p.delay_offline} s after the shutdown "
        "request (DelayAfterGuestOffline); clean will force it off",
        warnings,
    )


def clean(ctx: Context, reason: int) -> Outcome:
    p = ctx.params
    if reason not in CLEAN_REASONS:
        return Outcome(False, f"clean reason must be 0..5, not {reason}")
    log.info("%s: clean, reason %d: %s", p.resource, reason, CLEAN_REASONS[reason])
    deadline = ctx.deadline("Clean")
    try:
        ctx.hv.power_off(p, deadline)
        result = _wait_for(ctx, lambda r: r.state is not ResourceState.ONLINE, 30, deadline)
    except (AgentError, DeadlineExceeded) as e:
        return Outcome(False, f"clean of {p.resource} failed: {e}", ended=_ended(e, deadline))
    warnings = _sync(ctx, deadline)
    if result.state is ResourceState.ONLINE:
        return Outcome(False, f"{p.resource} still runs after clean ({result.detail})", warnings)
    return Outcome(True, f"{p.resource} cleaned (reason {reason}): {result.detail}", warnings)


# --- migrate -----------------------------------------------------------------------


def check_migration(ctx: Context, target: str) -> SystemInfo:
    p = ctx.params
    systems = ctx.loaded.system_list(p.group)
    if ctx.loaded.cfg.systems and target not in ctx.loaded.cfg.systems:
        raise NotAllowed(f"no system named {target!r} in the configuration")
    if systems and target not in systems:
        raise NotAllowed(f"{target} is not in the SystemList of group {p.group}")
    if p.system == target:
        raise NotAllowed(f"{p.resource} is already on {target}")
    info = ctx.system_info(target)
    if p.dr_enabled:
        here = ctx.system_info(p.system).site if p.system else None
        if here != info.site:
            raise NotAllowed(
                f"{p.resource} is configured for disaster recovery (DROpts.ConfigureNetwork = 1)"
                f" and {target} is at another site ({info.site or 'none'}, this system: "
                f"{here or 'none'}): a DR guest is never migrated across sites"
            )
    return info


def migrate(ctx: Context, target: str) -> Outcome:
    p = ctx.params
    deadline = ctx.deadline("Migrate")
    try:
        info = check_migration(ctx, target)
        ctx.hv.migrate(p, info, deadline, ctx.progress)
        after = ctx.hv.probe(p, deadline)
    except (AgentError, DeadlineExceeded) as e:
        return Outcome(False, f"migrate of {p.resource} to {target} refused or failed: {e}",
                       ended=_ended(e, deadline))  # fmt: skip
    return Outcome(True, f"{p.resource} migrated to {target}; here it is now {after.state.value}")


# --- actions -----------------------------------------------------------------------


_cap = cap_output


def action(ctx: Context, token: str, args: list[str]) -> Outcome:
    p = ctx.params
    supported = p.statics.get("SupportedActions")
    assert isinstance(supported, list)
    if token not in supported:
        return Outcome(False, f"action {token!r} is not supported (SupportedActions: "
                              f"{', '.join(str(s) for s in supported)})")  # fmt: skip
    deadline = Deadline(float(p.static_int("ActionTimeout")), ctx.clock)
    try:
        if token == "vmconfigsync":
            if not p.sync_dir:
                return Outcome(False, f"{p.resource}: SyncDir is not set: nothing to sync to")
            warnings = _sync(ctx, deadline)
            if warnings:
                return Outcome(False, warnings[0])
            return Outcome(True, f"{p.guest_name} definition copied to {p.sync_dir}")
        if token == "guestmigrated":
            systems = [ctx.system_info(s) for s in ctx.loaded.system_list(p.group)]
            where = ctx.hv.locate(p, systems, deadline)
            return Outcome(True, "re-probed", output=_cap(where))
        # DevScan
        ok, problems = ctx.hv.dev_scan(p, deadline)
        lines = [f"missing: {x}" for x in problems] + [f"ok: {x}" for x in ok]
        if problems:
            return Outcome(
                False, f"{len(problems)} device(s) missing", output=_cap("\n".join(lines))
            )
        return Outcome(True, f"all {len(ok)} device(s) present", output=_cap("\n".join(lines)))
    except (AgentError, DeadlineExceeded) as e:
        return Outcome(False, f"action {token} on {p.resource} failed: {e}")


__all__ = ["CLEAN_REASONS", "Context", "Outcome", "action", "clean", "migrate", "monitor",
           "offline", "online"]  # fmt: skip
