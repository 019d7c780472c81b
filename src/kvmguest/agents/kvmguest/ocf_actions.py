"""The OCF actions of ocf:kvmguest:KVMGuest, on the same entry points as the VCS ones.

An action resolves the guest (from the OCF parameters, or from a main.cf resource with the
parameters layered over it), bounds itself by Pacemaker's op timeout, runs the entry point
and maps its outcome to an OCF exit code (docs/pacemaker.md). The decisions that keep a
guest from being started twice or fenced for nothing live here:

* monitor never answers "not running" for a guest whose QEMU process is alive on this
  host, whatever libvirt says or fails to say (:func:`kvmguest.agents.ocf_interface.monitor_code`);
* stop shuts the guest down gracefully when libvirt answers, forces it off otherwise —
  through libvirt's pid file when libvirtd is down — and succeeds once no QEMU of the guest
  is left, so that a libvirtd outage never turns into a failed stop (and a fencing);
* a main.cf that cannot be read (shared storage not mounted) never makes a probe say "not
  running": the last known guest name answers instead, or an error when nothing does;
* migrate_from waits for the guest under a deadline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmguest.agents.base import Env, local_system
from kvmguest.agents.kvmguest import entrypoints as ep
from kvmguest.agents.kvmguest import fastmon, procs
from kvmguest.agents.kvmguest.ocf_params import (
    ATTR_PARAMS,
    DEFAULT_URI,
    PARAMS,
    OcfEnv,
    attr_value,
    system_pairs,
    template,
)
from kvmguest.agents.kvmguest.runner import context
from kvmguest.agents.kvmguest.type_name import KVMGUEST
from kvmguest.agents.loader import Loaded, validate
from kvmguest.agents.ocf_interface import Ocf, OcfError, monitor_code
from kvmguest.deadline import Deadline
from kvmguest.model.config import Block, Config, errors_of
from kvmguest.model.files import main_cf, read_config_bytes
from kvmguest.model.parser import load
from kvmguest.model.states import ResourceState

log = logging.getLogger("kvmguest.ocf")

PARAMS_SOURCE = "<OCF parameters>"
ACTIONS = (
    "start",
    "stop",
    "monitor",
    "status",
    "migrate_to",
    "migrate_from",
    "validate-all",
    "reload",
    "reload-agent",
)
# After a successful migrate_to the guest runs on the target: libvirt resumes it there before
# the source's migration call returns. A guest that is not there at all (shut off, not
# defined) after this long did not arrive; one that is arriving (paused: incoming migration)
# is waited for until the deadline.
MIGRATE_FROM_GRACE = 10.0
# How long stop waits for a killed or shut-down QEMU process to disappear.
QEMU_EXIT_WAIT = 15.0
POLL = 0.2
# The forced stop's share of a stop timeout (the rest is for the graceful shutdown).
CLEAN_SHARE_MIN, CLEAN_SHARE_MAX = 5, 60


class ConfigUnreadable(OcfError):
    """The main.cf of ``config`` cannot be read on this node (not mounted, no permission)."""


@dataclass
class Resolved:
    ctx: ep.Context
    uri: str
    # Seconds the whole action may take (the op timeout less a margin, or the type's).
    budget: float

    @property
    def name(self) -> str:
        return self.ctx.params.guest_name

    @property
    def kvm(self) -> bool:
        return not self.ctx.params.rhev

    @property
    def local(self) -> bool:
        """This host's processes tell whether the guest runs (local qemu:///system)."""
        return self.kvm and procs.is_local(self.uri)


# --- time budgets --------------------------------------------------------------------


def statics_for(action: str, timeout_ms: int | None) -> dict[str, int]:
    """The entry point timeouts (statics) that fit the action into Pacemaker's op timeout.

    Without an op timeout (a manual run, ocf-tester) the type's own timeouts apply.
    """
    if timeout_ms is None or timeout_ms <= 0:
        return {}
    secs = max(1, int(fastmon.budget(timeout_ms, 1.0)))
    if action == "start":
        return {"OnlineTimeout": secs}
    if action == "stop":
        # Stop is VCS's offline, then clean if the guest is still up: both in one op.
        clean = min(CLEAN_SHARE_MAX, max(CLEAN_SHARE_MIN, secs // 3))
        return {"OfflineTimeout": max(1, secs - clean), "CleanTimeout": min(clean, secs)}
    if action in ("monitor", "status"):
        return {"MonitorTimeout": secs, "ActionTimeout": secs}
    if action in ("migrate_to", "migrate_from"):
        return {"MigrateTimeout": secs}
    return {}


# --- resolving the guest --------------------------------------------------------------


def _read_config(path: str) -> Config:
    try:
        # Not open(): a FIFO or a device named as the config must fail the action at once.
        read_config_bytes(main_cf(path))
    except OSError as e:
        raise ConfigUnreadable(
            Ocf.ERR_ARGS, f"config {path}: cannot read it on this node: {e.strerror}"
        ) from None
    cfg, diags = load(path)
    if diags:
        more = f" (and {len(diags) - 1} more)" if len(diags) > 1 else ""
        raise OcfError(Ocf.ERR_CONFIGURED, f"{diags[0]}{more}")
    return cfg


def _overlay(cfg: Config, rid: str, env: OcfEnv, statics: dict[str, int]) -> None:
    """Lay the given OCF parameters (and the op's time budget) over the configuration."""
    block = cfg.resources[rid]
    for p in ATTR_PARAMS:
        if not env.given(p.name):
            continue
        assert p.attr is not None
        value = attr_value(p, env.params[p.name])
        if p.key is None:
            block.attrs[p.attr] = value
            block.local.pop(p.attr, None)  # the parameter wins over Attr@system too
            continue
        current = block.attrs.get(p.attr)
        merged = dict(current) if isinstance(current, dict) else {}
        merged[p.key] = value
        block.attrs[p.attr] = merged
        for local in block.local.get(p.attr, {}).values():
            if isinstance(local, dict):
                local[p.key] = value
    for name, seconds in statics.items():
        block.attrs[name] = str(seconds)
    for p in PARAMS:
        if not env.given(p.name):
            continue
        if p.cluster_attr:
            if cfg.cluster is None:
                cfg.cluster = Block("cluster", "pacemaker")
            value = env.params[p.name]
            if p.cluster_attr.endswith("Template"):
                value = template(value)
            cfg.cluster.attrs[p.cluster_attr] = value
        elif p.system_attr:
            for system, value in system_pairs(p.name, env.params[p.name]).items():
                cfg.systems.setdefault(system, Block("system", system)).attrs[p.system_attr] = value


def _first_error(cfg: Config) -> str | None:
    diags = errors_of(validate(cfg))  # a warning (a stock VCS attribute) runs
    if not diags:
        return None
    first = diags[0]
    text = first.message if cfg.path == PARAMS_SOURCE else str(first)
    return text + (f" (and {len(diags) - 1} more)" if len(diags) > 1 else "")


def this_system(env: OcfEnv) -> str:
    """The system (main.cf) name of this node: Pacemaker's node name for the action."""
    return env.meta.on_node or local_system()


def build_config(env: OcfEnv, statics: dict[str, int]) -> tuple[Config, str]:
    """The configuration the action runs on, and the resource's name in it."""
    if env.config_mode:
        path, rid = env.params.get("config", ""), env.params.get("resource", "")
        if not path or not rid:
            raise OcfError(Ocf.ERR_CONFIGURED, "config and resource are given together")
        cfg = _read_config(path)
        block = cfg.resources.get(rid)
        if block is None:
            raise OcfError(Ocf.ERR_CONFIGURED, f"{path}: no resource named {rid!r}")
        if block.kind != KVMGUEST:
            raise OcfError(Ocf.ERR_CONFIGURED, f"{path}: {rid} is a {block.kind}, not a KVMGuest")
    else:
        if not env.get("guest_name"):
            raise OcfError(Ocf.ERR_CONFIGURED, "guest_name is required (or config and resource)")
        rid = env.instance
        cfg = Config(path=PARAMS_SOURCE)
        cfg.resources[rid] = Block(KVMGUEST, rid)
        # Systems are Pacemaker's nodes: the one the action runs on and a migration target
        # are systems even when no parameter names them.
        for system in (this_system(env), env.meta.migrate_target):
            if system:
                cfg.systems.setdefault(system, Block("system", system))
    _overlay(cfg, rid, env, statics)
    error = _first_error(cfg)
    if error:
        raise OcfError(Ocf.ERR_CONFIGURED, error)
    return cfg, rid


def resolve(env: OcfEnv, action: str) -> Resolved:
    statics = statics_for(action, env.meta.timeout_ms)
    cfg, rid = build_config(env, statics)
    uri = env.get("hypervisor") or DEFAULT_URI
    system = this_system(env)
    loaded = Loaded(cfg)
    try:
        loaded.require_system(system)  # main.cf's systems; parameters alone declare the node
    except KeyError as e:
        raise OcfError(Ocf.ERR_CONFIGURED, str(e.args[0])) from None
    ctx = context(Env(config=cfg.path, system=system, uri=uri), rid, loaded=loaded)
    p = ctx.params
    default = {
        "start": p.timeout("Online"),
        "stop": p.timeout("Offline") + p.timeout("Clean"),
        "migrate_to": p.timeout("Migrate"),
        "migrate_from": p.timeout("Migrate"),
    }.get(action, p.timeout("Monitor"))
    resolved = Resolved(ctx, uri, fastmon.budget(env.meta.timeout_ms, float(default)))
    if env.config_mode:
        remember(env, resolved.name, uri)
    return resolved


# --- the last known guest name (for a main.cf that cannot be read) ---------------------


def _memo_path(env: OcfEnv) -> Path:
    # In HA_RSCTMP, a tmpfs: the memo goes with a reboot, and so does every guest that ran
    # before it.
    return Path(env.rsctmp) / f"kvmguest-{env.instance}.json"


def remember(env: OcfEnv, name: str, uri: str) -> None:
    path = _memo_path(env)
    data = json.dumps({"guest_name": name, "hypervisor": uri})
    try:
        if path.read_text() == data:
            return
    except OSError:
        pass
    with contextlib.suppress(OSError):  # a memo we cannot write only weakens a later probe
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(data)
        os.replace(tmp, path)


def recall(env: OcfEnv) -> tuple[str | None, str]:
    """The guest name to fall back on: the guest_name parameter, else the last known one."""
    uri = env.get("hypervisor") or DEFAULT_URI
    if env.params.get("guest_name"):
        return env.params["guest_name"], uri
    try:
        data = json.loads(_memo_path(env).read_text())
        return str(data["guest_name"]), str(data.get("hypervisor") or uri)
    except (OSError, ValueError, KeyError, TypeError):
        return None, uri


def _no_guest_here(uri: str) -> bool:
    """True when no guest at all runs on this node's libvirt (so neither does ours)."""
    if procs.is_local(uri):
        return not procs.qemu_processes()
    import libvirt
    from kvmguest.agents.kvmguest.libvirt_conn import bounded, open_connection

    try:
        deadline = Deadline(10.0)
        conn = open_connection(uri, deadline)
        try:
            active: list[Any] = bounded(
                lambda: conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE),
                deadline,
                "list domains",
                uri,
            )
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
    except Exception:  # cannot ask: we cannot say that nothing runs
        return False
    return not active


def _params_env(env: OcfEnv, name: str, uri: str) -> OcfEnv:
    """An environment that describes the guest by name only (no config)."""
    params = {"guest_name": name, "hypervisor": uri}
    return OcfEnv(params, env.meta, env.instance, rsctmp=env.rsctmp)


def monitor_unreadable(env: OcfEnv, why: str) -> tuple[Ocf, str]:
    name, uri = recall(env)
    if name is not None:
        code, msg = fastmon.monitor(_params_env(env, name, uri))
        return code, f"{why}; by the last known guest name: {msg}"
    if _no_guest_here(uri):
        return Ocf.NOT_RUNNING, f"{why}; no guest at all runs on this node"
    # Guests run here and we cannot tell whether ours is one of them: "not running" could
    # start it a second time elsewhere. An error makes Pacemaker stop it here first.
    return Ocf.ERR_GENERIC, f"{why}; guests run on this node and the guest name is unknown"


# --- the actions ----------------------------------------------------------------------


def monitor(r: Resolved, env: OcfEnv) -> tuple[Ocf, str]:
    ctx = r.ctx
    result = ep.monitor(ctx)
    if env.check_level >= 10 and result.state is ResourceState.ONLINE:
        scan = ep.action(ctx, "DevScan", [])
        if not scan.ok:
            missing = "; ".join(x for x in scan.output.splitlines() if x.startswith("missing"))
            return Ocf.ERR_GENERIC, f"DevScan: {scan.message}: {missing or scan.output}"
    alive, why = fastmon.evidence(result, r.name, r.uri) if r.kvm else (None, "")
    code = monitor_code(result, alive, probe=env.meta.probe)
    return code, f"{r.name} {result.state.value}: {result.detail}{why}"


def _wait_qemu_gone(name: str, seconds: float) -> int | None:
    """Wait until the guest's QEMU is gone; its pid if it is still there at the end."""
    end = time.monotonic() + seconds
    while True:
        pid = procs.qemu_pid(name)
        if pid is None or time.monotonic() >= end:
            return pid
        time.sleep(POLL)


def stop(r: Resolved) -> tuple[Ocf, str]:
    ctx = r.ctx
    overall = Deadline(r.budget)
    off = ep.offline(ctx)
    for w in off.warnings:
        log.warning("%s", w)
    message = off.message
    if not off.ok:
        # For the log only: a short look, the forced stop needs the time.
        now = ctx.hv.probe(ctx.params, Deadline(min(3.0, overall.remaining())))
        log.warning("%s (now %s: %s); forcing it off", off.message, now.state.value, now.detail)
        cl = ep.clean(ctx, 1)
        for w in cl.warnings:
            log.warning("%s", w)
        message = f"{off.message}; then: {cl.message}"
        if not cl.ok:
            if r.local and procs.qemu_pid(r.name) is None:
                # libvirt cannot be asked, but no QEMU of the guest is left here: stopped.
                return Ocf.SUCCESS, f"{message}; no QEMU process of {r.name} runs here"
            return Ocf.ERR_GENERIC, message
    if r.local:
        pid = _wait_qemu_gone(r.name, max(1.0, min(QEMU_EXIT_WAIT, overall.remaining())))
        if pid is not None:
            return Ocf.ERR_GENERIC, f"{message}, but its QEMU (pid {pid}) still runs"
    return Ocf.SUCCESS, message


def stop_unreadable(env: OcfEnv, why: str) -> tuple[Ocf, str]:
    name, uri = recall(env)
    if name is not None:
        code, msg = stop(resolve(_params_env(env, name, uri), "stop"))
        return code, f"{why}; by the last known guest name: {msg}"
    if _no_guest_here(uri):
        return Ocf.SUCCESS, f"{why}; no guest at all runs on this node"
    return Ocf.ERR_GENERIC, f"{why}; guests run on this node and the guest name is unknown"


def migrate_from(r: Resolved) -> tuple[Ocf, str]:
    ctx = r.ctx
    p = ctx.params
    deadline = ctx.deadline("Migrate")
    started = time.monotonic()
    while True:
        result = ctx.hv.probe(p, deadline)
        # Confidence 10 is a guest still arriving (paused: incoming migration); any other
        # ONLINE is the guest as it ran at the source (a paused one stays paused).
        if result.state is ResourceState.ONLINE and result.confidence > 10:
            return Ocf.SUCCESS, f"{r.name} runs here ({result.detail})"
        waited = time.monotonic() - started
        arriving = result.state in (ResourceState.ONLINE, ResourceState.UNKNOWN)
        if deadline.expired() or (not arriving and waited >= MIGRATE_FROM_GRACE):
            return Ocf.ERR_GENERIC, (
                f"{r.name} is {result.state.value} here {waited:.0f} s after the migration "
                f"({result.detail})"
            )
        ctx.hv.wait_changed(min(POLL, deadline.remaining()))


def check_files(r: Resolved) -> None:
    """Files the guest needs on this node (validate-all, start)."""
    p = r.ctx.params
    if p.config_file and not os.access(p.config_file, os.R_OK):
        raise OcfError(
            Ocf.ERR_ARGS, f"guest_config_file_path {p.config_file} is not readable on this node"
        )
    if p.sync_dir and not os.path.isdir(p.sync_dir):
        raise OcfError(Ocf.ERR_ARGS, f"sync_dir {p.sync_dir} is not a directory on this node")


def run(action: str, env: OcfEnv) -> tuple[Ocf, str]:
    if action not in ACTIONS:
        return Ocf.ERR_UNIMPLEMENTED, f"action {action!r} is not implemented"
    try:
        r = resolve(env, action)
    except ConfigUnreadable as e:
        if action in ("monitor", "status"):
            return monitor_unreadable(env, str(e))
        if action == "stop":
            return stop_unreadable(env, str(e))
        raise
    try:
        return _dispatch(action, r, env)
    finally:
        r.ctx.hv.close()


def _dispatch(action: str, r: Resolved, env: OcfEnv) -> tuple[Ocf, str]:
    if action in ("monitor", "status"):
        return monitor(r, env)
    if action == "stop":
        return stop(r)
    if action == "start":
        check_files(r)
        out = ep.online(r.ctx)
        return (Ocf.SUCCESS if out.ok else Ocf.ERR_GENERIC), out.message
    if action == "migrate_to":
        target = env.meta.migrate_target
        if not target:
            raise OcfError(Ocf.ERR_ARGS, "migrate_to needs OCF_RESKEY_CRM_meta_migrate_target")
        out = ep.migrate(r.ctx, target)
        return (Ocf.SUCCESS if out.ok else Ocf.ERR_GENERIC), out.message
    if action == "migrate_from":
        return migrate_from(r)
    if action == "validate-all":
        check_files(r)
        if r.ctx.params.rhev:
            import ovirtsdk4  # noqa: F401  (ImportError -> not installed)
        return Ocf.SUCCESS, f"{r.name}: configuration valid"
    # reload / reload-agent: nothing is kept between actions; the next one reads the new
    # parameters. Validating them is all there is to do.
    return Ocf.SUCCESS, f"{r.name}: parameters reloaded"
