"""main.cf -> Pacemaker configuration (pure: a Config in, a model and its text out).

What maps, and how (docs/pacemaker.md, "kvmguest export pacemaker"):

* a resource whose type's agent has a Pacemaker side -> a primitive ``ocf:kvmguest:<type>``
  with its attributes as that agent's parameters (KVMGuest: its OCF parameter table); local
  values ``Attr@system`` -> a parameter set with a ``#uname eq system`` rule; the cluster and
  system attributes it depends on (LibvirtURITemplate, a system's LibvirtURI, Site ...) ->
  parameters too;
* MonitorInterval/MonitorTimeout -> ``op monitor``; OfflineMonitorInterval -> ``op monitor
  role=Stopped``; LevelTwoMonitorFreq -> a second monitor with OCF_CHECK_LEVEL=10;
  OnlineTimeout -> start, OfflineTimeout -> stop, MigrateTimeout -> migrate_to/from;
  RestartLimit -> ``migration-threshold`` (RestartLimit + 1: VCS restarts RestartLimit
  times, then fails over); SupportedOperations with migrate -> ``allow-migrate=true``;
* a service group -> a Pacemaker group of its exported resources in ``requires`` order
  (children first; a lone resource stays a primitive); a parallel group (``Parallel = 1``,
  say a DockerDaemon: one engine per node) -> a clone of that; SystemList -> location scores
  (lower VCS priority = higher score) and a -INFINITY rule for every other node;
  resource-stickiness above the spread of those scores (VCS does not fail back);
  AutoStart/AutoStartList -> target-role; Frozen/TFrozen -> is-managed=false;
  ManageFaults=NONE -> the monitors' on-fail=block;
* ``requires group G online local|global|remote soft|firm|hard`` -> order (+ colocation);
* Mount and IP resources, Critical and Enabled: :mod:`kvmguest.ocf.export_vcs`.

Whatever has no Pacemaker equivalent is listed in :attr:`Export.notes` as
"not exported: ..." (approximations as "approximated: ..."): every attribute written in
the main.cf appears in the output or in a note, never silently dropped.
"""

from __future__ import annotations

import re

from kvmguest.agents import registry
from kvmguest.agents.coverage import managed
from kvmguest.agents.loader import Loaded, builtin_types
from kvmguest.agents.ocf_interface import OcfSide, flatten
from kvmguest.model import vcs_stock
from kvmguest.model.attributes import AttrDef, Value
from kvmguest.model.config import Block, Config
from kvmguest.model.types import effective_attrs, object_types
from kvmguest.ocf.export_model import (
    Clone,
    Colocation,
    Export,
    Group,
    Location,
    Op,
    Order,
    ParamSet,
    Primitive,
)
from kvmguest.ocf.export_render import render_crm, render_xml
from kvmguest.ocf.export_vcs import (
    HEARTBEAT,
    HeartbeatAgent,
    contained_faults,
    heartbeat,
    heartbeat_notes,
    heartbeat_params,
)
from kvmguest.ocf.export_vcs import fmt as _fmt

# What callers of the export use: the model, the exporter and the two renderings.
__all__ = ["Export", "Primitive", "export", "render_crm", "render_xml"]

# Statics that become ops or meta attributes (the rest is reported when it differs from
# the built-in type).
MAPPED_STATICS = {
    "MonitorInterval",
    "MonitorTimeout",
    "OfflineMonitorInterval",
    "LevelTwoMonitorFreq",
    "OnlineTimeout",
    "OfflineTimeout",
    "MigrateTimeout",
    "RestartLimit",
    "SupportedOperations",
}
# Statics the agent applies itself, from the type, whatever the main.cf says (reported
# when the main.cf changes them).
WHY_STATIC = {
    "ToleranceLimit": "Pacemaker acts on the first failed monitor",
    "FaultOnMonitorTimeouts": "Pacemaker acts on the first monitor timeout",
    "AlertOnMonitorTimeouts": "no Pacemaker equivalent",
    "CleanTimeout": "the stop op (timeout from OfflineTimeout) includes the forced stop",
    "OnlineRetryLimit": "Pacemaker's start-failure-is-fatal is cluster-wide",
    "OnlineWaitLimit": "the start op waits for the guest itself",
    "OfflineWaitLimit": "the stop op waits for the guest itself",
    "CleanRetryLimit": "a failed stop is fenced or blocks, by the cluster's policy",
    "ConfInterval": "use the failure-timeout meta attribute",
    "IMF": "Pacemaker polls: the monitor interval is the detection time",
    "IntentionalOffline": "the agent always reports intentional offline as not running",
    "AEPTimeout": "the agent always bounds its work by the op timeout",
    "MigrateWaitLimit": "the migrate ops wait for the migration themselves",
}
# Group attributes with a mapping; the others are reported when written.
MAPPED_GROUP_ATTRS = {
    "SystemList",
    "AutoStartList",
    "AutoStart",
    "Frozen",
    "TFrozen",
    "ManageFaults",
    "FailOverPolicy",
    "Parallel",
}
WHY_GROUP = {
    "AutoFailOver": "Pacemaker always fails over (once migration-threshold is reached)",
    "AutoRestart": "Pacemaker restarts per resource (migration-threshold)",
    "OnlineRetryLimit": "no per-group start retries in Pacemaker",
    "OnlineRetryInterval": "no per-group start retries in Pacemaker",
    "Evacuate": "Pacemaker moves resources off a node in standby itself",
    "SysDownPolicy": "no Pacemaker equivalent",
    "AutoStartPolicy": "Pacemaker places by location scores (SystemList)",
    "Load": "use Pacemaker utilization attributes",
    "Priority": "use Pacemaker's priority meta attribute",
    "PreOnline": "no preonline trigger in Pacemaker",
}
# Values that are secrets (VCS keeps its users' encrypted passwords in UserNames).
SECRET_ATTRS = frozenset({"UserNames"})
_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
SCORE_STEP = 100


class _Exporter:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.out = Export()
        builtin = builtin_types()
        self.loaded = Loaded(cfg)
        self.types = self.loaded.types
        self.builtin = {name: effective_attrs(t) for name, t in builtin.items()}
        self.sides: dict[str, OcfSide] = {}
        for agent in registry.ocf_agents():
            side = agent.ocf()
            assert side is not None
            self.sides[agent.type_name] = side
        params = [p for side in self.sides.values() for p in side.params]
        self.system_params = {p.system_attr: p.name for p in params if p.system_attr}
        self.cluster_params = {p.cluster_attr: p.name for p in params if p.cluster_attr}
        self.used_ids: set[str] = set()

    def attrs(self, block: Block) -> dict[str, AttrDef]:
        return effective_attrs(self.types[block.kind])

    # -- ids -----------------------------------------------------------------------

    def new_id(self, wanted: str) -> str:
        base = wanted if _ID.fullmatch(wanted) else "kvmguest-" + re.sub(r"[^\w.-]", "_", wanted)
        candidate, n = base, 1
        while candidate in self.used_ids:
            n += 1
            candidate = f"{base}-{n}"
        self.used_ids.add(candidate)
        return candidate

    # -- values --------------------------------------------------------------------

    def static(self, block: Block, name: str) -> Value:
        """A static's value for ``block`` as written: the resource's own, else the type's
        (what the report quotes and compares with the built-in)."""
        raw = block.attrs.get(name)
        if raw is not None:
            return raw
        return self.attrs(block)[name].default_value()

    def static_int(self, block: Block, name: str) -> int:
        """A static integer of ``block``, typed by the one resolver."""
        value = self.loaded.statics(block.name)[name]
        assert isinstance(value, int)
        return int(value)

    def differs(self, block: Block, name: str) -> bool:
        builtin = self.builtin.get(block.kind, {}).get(name)
        mine = self.static(block, name)
        return builtin is None or builtin.default_value() != mine

    # -- resources -----------------------------------------------------------------

    def cluster_and_system_params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        cluster = self.cfg.cluster
        if cluster is not None:
            for attr, value in sorted(cluster.attrs.items()):
                if attr in self.cluster_params and isinstance(value, str):
                    out[self.cluster_params[attr]] = value
        pairs: dict[str, list[str]] = {}
        for name, system in self.cfg.systems.items():
            for attr, value in system.attrs.items():
                if attr in self.system_params and isinstance(value, str) and value:
                    pairs.setdefault(self.system_params[attr], []).append(f"{name}={value}")
        for param, items in pairs.items():
            out[param] = " ".join(items)
        return out

    def report_objects(self) -> None:
        if self.cfg.cluster is not None:
            for attr, value in self.cfg.cluster.attrs.items():
                if attr not in self.cluster_params:
                    if attr in SECRET_ATTRS and isinstance(value, dict):
                        # VCS keeps its users' (encrypted) passwords here: never print them.
                        value = {user: "..." for user in value}
                    self.out.not_exported(
                        f"cluster {self.cfg.cluster.name}: {attr} = {_fmt(value)} "
                        "(cluster-wide settings are Pacemaker's and corosync's own)"
                    )
        for name, system in self.cfg.systems.items():
            for attr, value in system.attrs.items():
                if attr in self.system_params:
                    if any(" " in v for v in ([value] if isinstance(value, str) else [])):
                        self.out.not_exported(
                            f"system {name}: {attr} = {_fmt(value)} (a value with spaces "
                            "cannot be a SYSTEM=VALUE pair)"
                        )
                    continue
                self.out.not_exported(
                    f"system {name}: {attr} = {_fmt(value)} (no Pacemaker equivalent; "
                    "node attributes or utilization may stand in)"
                )

    def resource_params(self, block: Block, shared: dict[str, str]) -> list[ParamSet]:
        side = self.sides[block.kind]
        attrs = self.attrs(block)
        base = dict(shared)
        base.update(flatten(block.attrs, side.params))
        sets = [ParamSet(base, 1)]
        for system in sorted({s for per in block.local.values() for s in per}):
            local: dict[str, Value] = {}
            for attr, per in block.local.items():
                if system not in per or attr not in attrs or attrs[attr].static:
                    continue
                value = per[system]
                default = attrs[attr].default
                if isinstance(value, dict) and isinstance(default, dict):
                    # A local association replaces the resource's whole value: every key it
                    # leaves out takes the type's default on that system. The keys whose
                    # value then differs from the resource-wide one go into the node's set.
                    written = block.attrs.get(attr)
                    base = {**default, **(written if isinstance(written, dict) else {})}
                    full = {**default, **value}
                    value = {k: v for k, v in full.items() if base.get(k) != v}
                local[attr] = value
            values = flatten(local, side.params)
            if values:
                sets.append(ParamSet(values, 2, system))
        return sets

    def ops(self, block: Block, migrate: bool, on_fail: str | None) -> list[Op]:
        monitor_timeout = self.static_int(block, "MonitorTimeout")
        interval = self.static_int(block, "MonitorInterval")
        ops = [
            Op("start", self.static_int(block, "OnlineTimeout")),
            Op("stop", self.static_int(block, "OfflineTimeout")),
            Op("monitor", monitor_timeout, interval, on_fail=on_fail),
        ]
        offline_interval = self.static_int(block, "OfflineMonitorInterval")
        if offline_interval > 0:
            if offline_interval == interval:
                # Pacemaker needs distinct intervals for ops of the same name.
                offline_interval += 1
                self.out.approximated(
                    f"resource {block.name}: OfflineMonitorInterval equals MonitorInterval; "
                    f"the role=Stopped monitor runs every {offline_interval} s"
                )
            ops.append(Op("monitor", monitor_timeout, offline_interval, role="Stopped"))
        level_two = self.static_int(block, "LevelTwoMonitorFreq")
        if level_two > 0 and interval > 0:
            ops.append(
                Op("monitor", monitor_timeout, interval * level_two, check_level=10,
                   on_fail=on_fail)
            )  # fmt: skip
        if migrate:
            timeout = self.static_int(block, "MigrateTimeout")
            ops += [Op("migrate_to", timeout), Op("migrate_from", timeout)]
        return ops

    def report_resource(self, block: Block) -> None:
        attrs = self.attrs(block)
        for name in sorted(attrs):
            adef = attrs[name]
            if not adef.static or name in MAPPED_STATICS or not self.differs(block, name):
                continue
            why = WHY_STATIC.get(name, "no Pacemaker equivalent")
            self.out.not_exported(
                f"resource {block.name}: {name} = {_fmt(self.static(block, name))} ({why})"
            )
        for name in sorted(block.attrs.keys() | block.local.keys()):
            if vcs_stock.unused("resource", name):
                self.out.not_exported(f"resource {block.name}: {name} (not used by kvmguest)")
            elif name not in attrs:
                self.out.not_exported(f"resource {block.name}: unknown attribute {name}")
        for attr, per in block.local.items():
            local_def = attrs.get(attr)
            if local_def is not None and local_def.static:
                for system in per:
                    self.out.not_exported(f"resource {block.name}: {attr}@{system}")

    def primitive(self, block: Block, shared: dict[str, str], on_fail: str | None) -> Primitive:
        ops_list = self.static(block, "SupportedOperations")
        migrate = isinstance(ops_list, list) and "migrate" in ops_list
        meta = {"migration-threshold": str(self.static_int(block, "RestartLimit") + 1)}
        if migrate:
            meta["allow-migrate"] = "true"
        self.report_resource(block)
        return Primitive(
            id=self.new_id(block.name),
            params=self.resource_params(block, shared),
            meta=meta,
            ops=self.ops(block, migrate, on_fail),
            kind=block.kind,
        )

    def heartbeat_primitive(
        self, block: Block, mapping: HeartbeatAgent, on_fail: str | None
    ) -> Primitive:
        """A VCS bundled type (Mount, IP) as its resource-agents peer (export_vcs.py)."""
        attrs = self.attrs(block)
        statics = {n: n in MAPPED_STATICS for n, a in attrs.items() if a.static}
        for note in heartbeat_notes(block, mapping, statics):
            self.out.not_exported(note)
        meta = {"migration-threshold": str(self.static_int(block, "RestartLimit") + 1)}
        params = [ParamSet(heartbeat_params(block, mapping), 1)]
        ops = self.ops(block, False, on_fail)
        return Primitive(self.new_id(block.name), params, meta, ops, mapping.agent, HEARTBEAT)

    # -- groups --------------------------------------------------------------------

    def ordered_members(self, group: str, members: list[Block]) -> list[Block]:
        """Children before parents (``requires``), main.cf order otherwise."""
        names = [b.name for b in members]
        deps: dict[str, set[str]] = {n: set() for n in names}
        for link in self.cfg.links:
            if link.parent in deps and link.child in deps:
                deps[link.parent].add(link.child)
        done: list[str] = []
        pending = list(names)
        while pending:
            ready = [n for n in pending if deps[n] <= set(done)]
            if not ready:  # a cycle: validation refuses it; keep the file's order
                ready = pending[:1]
            done.append(ready[0])
            pending.remove(ready[0])
        by_name = {b.name: b for b in members}
        return [by_name[n] for n in done]

    def group(self, gname: str, gblock: Block | None, shared: dict[str, str]) -> None:
        blocks = [b for b in self.cfg.resources.values() if b.group == gname]
        for b in blocks:
            if not managed(self.loaded, b):
                self.out.not_exported(f"resource {b.name}: Enabled = 0 (not managed, as in VCS)")
        blocks = [b for b in blocks if managed(self.loaded, b)]
        guests = [b for b in blocks if b.kind in self.sides or heartbeat(b.kind)]
        exported = {b.name for b in guests}
        for b in blocks:
            if b.name not in exported:
                self.out.not_exported(
                    f"resource {b.name} of type {b.kind} in group {gname} (kvmguest has no "
                    "Pacemaker agent for that type; give it its own Pacemaker agent)"
                )
        for link in self.cfg.links:
            if link.parent in exported and link.child not in exported:
                self.out.not_exported(
                    f"{link.parent} requires {link.child} ({link.child} is not exported)"
                )
        if not guests:
            return
        attrs = gblock.attrs if gblock is not None else {}
        self.report_group(gname, attrs)
        on_fail = "block" if attrs.get("ManageFaults") == "NONE" else None
        clones = self.per_node_clones(gname, guests, shared, on_fail)
        guests = [b for b in guests if b.name not in clones]
        if not guests:
            if len(clones) == 1:  # a group of one engine: other groups require the clone
                top = next(iter(clones.values()))
                self.out.top[gname] = top
                self.locations(gname, top, attrs)
            return
        contained = contained_faults(self.loaded, gname)
        prims = []
        for b in self.ordered_members(gname, guests):
            # Critical = 0 (and no critical resource above it): stopped where it runs.
            fail = on_fail or ("stop" if b.name in contained else None)
            mapping = heartbeat(b.kind)
            if mapping is not None:
                prims.append(self.heartbeat_primitive(b, mapping, fail))
            else:
                prims.append(self.primitive(b, shared, fail))
        self.out.primitives += prims
        group_meta = self.group_meta(gname, attrs)
        parallel = attrs.get("Parallel", "0") == "1"
        if len(prims) == 1:
            top = prims[0].id
            if not parallel:
                prims[0].meta.update(group_meta)
        else:
            top = self.new_id(gname)
            self.out.groups.append(
                Group(top, [p.id for p in prims], {} if parallel else group_meta)
            )
        if parallel:
            # One instance on every SystemList system (the locations below keep it there).
            top_clone = self.new_id(f"{top}-clone")
            self.out.clones.append(Clone(top_clone, top, group_meta))
            top = top_clone
        self.out.top[gname] = top
        self.locations(gname, top, attrs)
        for link in self.cfg.links:
            if link.child in clones and link.parent in {b.name for b in guests}:
                # The group needs the engine on its node: start after it, stop before it.
                base = f"{top}-after-{clones[link.child]}"
                if not any(
                    o.first == clones[link.child] and o.then == top for o in self.out.orders
                ):
                    self.out.orders.append(Order(self.new_id(base), clones[link.child], top))
                    self.out.colocations.append(
                        Colocation(self.new_id(f"{base}-colocation"), top, clones[link.child],
                                   "INFINITY")
                    )  # fmt: skip

    def per_node_clones(
        self, gname: str, blocks: list[Block], shared: dict[str, str], on_fail: str | None
    ) -> dict[str, str]:
        """The group's per-node resources (a container engine) as clones: resource name ->
        clone id. Pacemaker runs one on every node; the group is ordered after it."""
        out: dict[str, str] = {}
        for b in blocks:
            side = self.sides.get(b.kind)  # None: a type mapped to ocf:heartbeat
            if side is None or not side.per_node:
                continue
            prim = self.primitive(b, shared, on_fail)
            prim.meta.pop("migration-threshold", None)
            self.out.primitives.append(prim)
            clone = Clone(self.new_id(f"{prim.id}-clone"), prim.id, {"interleave": "true"})
            self.out.clones.append(clone)
            out[b.name] = clone.id
        return out

    def report_group(self, gname: str, attrs: dict[str, Value]) -> None:
        defaults = object_types()["group"].attrs
        for attr, value in attrs.items():
            if attr in MAPPED_GROUP_ATTRS:
                continue
            adef = defaults.get(attr)
            if adef is not None and adef.default_value() == value:
                continue  # the VCS default is what Pacemaker does too
            why = WHY_GROUP.get(attr, "no Pacemaker equivalent")
            self.out.not_exported(f"group {gname}: {attr} = {_fmt(value)} ({why})")
        policy = attrs.get("FailOverPolicy", "Priority")
        if policy != "Priority":
            self.out.not_exported(
                f"group {gname}: FailOverPolicy = {_fmt(policy)} (Pacemaker places by the "
                "SystemList scores, as Priority does)"
            )

    def group_meta(self, gname: str, attrs: dict[str, Value]) -> dict[str, str]:
        meta: dict[str, str] = {}
        autostart = attrs.get("AutoStart", "1") == "1"
        asl = attrs.get("AutoStartList")
        started = autostart and isinstance(asl, list) and bool(asl)
        meta["target-role"] = "Started" if started else "Stopped"
        sl = attrs.get("SystemList")
        if started and isinstance(sl, dict) and isinstance(asl, list):
            best = min(int(v) for v in sl.values())
            preferred = [s for s, v in sl.items() if int(v) == best]
            if not set(asl) & set(preferred):
                self.out.approximated(
                    f"group {gname}: AutoStartList {_fmt(asl)}: Pacemaker starts the group "
                    f"on the best available node by SystemList ({', '.join(preferred)}), "
                    "not on an AutoStartList system"
                )
        if attrs.get("Frozen", "0") != "0" or attrs.get("TFrozen", "0") != "0":
            meta["is-managed"] = "false"
        if isinstance(sl, dict) and sl:
            # VCS never moves a running group by itself (no failback to a better system, no
            # rebalancing when a node joins): stickiness above the spread of the location
            # scores keeps it where it runs.
            meta["resource-stickiness"] = str(SCORE_STEP * (len({int(v) for v in sl.values()}) + 1))
        return meta

    def locations(self, gname: str, top: str, attrs: dict[str, Value]) -> None:
        sl = attrs.get("SystemList")
        if not isinstance(sl, dict) or not sl:
            self.out.not_exported(
                f"group {gname}: no SystemList (Pacemaker may run it on any node)"
            )
            return
        priorities = sorted({int(v) for v in sl.values()})
        for system in sorted(sl, key=lambda s: (int(sl[s]), s)):
            rank = priorities.index(int(sl[system]))
            score = SCORE_STEP * (len(priorities) - rank)
            self.out.locations.append(
                Location(self.new_id(f"{top}-on-{system}"), top, str(score), node=system)
            )
        self.out.locations.append(
            Location(self.new_id(f"{top}-only-systemlist"), top, "-INFINITY",
                     not_on=sorted(sl))
        )  # fmt: skip

    # -- group links ---------------------------------------------------------------

    def group_links(self) -> None:
        for gl in self.cfg.group_links:
            what = f"requires group {gl.child_group} {' '.join(gl.words)} (in group {gl.group})"
            parent, child = self.out.top.get(gl.group), self.out.top.get(gl.child_group)
            if parent is None or child is None:
                self.out.not_exported(f"{what}: a group without exported resources")
                continue
            words = set(gl.words)
            category = next((w for w in ("online", "offline") if w in words), "online")
            location = next((w for w in ("local", "global", "remote") if w in words), "local")
            kind = next((w for w in ("soft", "firm", "hard") if w in words), "firm")
            base = f"{parent}-{category}-{location}-{child}"
            if category == "offline":
                self.out.colocations.append(
                    Colocation(self.new_id(base), parent, child, "-INFINITY")
                )
                self.out.approximated(
                    f"{what}: the groups never run on the same node (Pacemaker cannot "
                    "require the child to be offline there)"
                )
                continue
            order_kind = "Optional" if kind == "soft" else "Mandatory"
            self.out.orders.append(Order(self.new_id(f"{base}-order"), child, parent, order_kind))
            if location == "local":
                self.out.colocations.append(
                    Colocation(self.new_id(f"{base}-colocation"), parent, child, "INFINITY")
                )
            elif location == "remote":
                self.out.colocations.append(
                    Colocation(self.new_id(f"{base}-colocation"), parent, child, "-INFINITY")
                )
            if kind == "soft":
                self.out.approximated(
                    f"{what}: an Optional order only orders starts that happen together; "
                    "the parent keeps running when the child fails"
                )
            elif kind == "hard":
                self.out.approximated(
                    f"{what}: as firm (Pacemaker stops the parent when the child stops)"
                )

    def run(self) -> Export:
        self.report_objects()
        shared = self.cluster_and_system_params()
        known = set(self.cfg.groups)
        for gname in self.cfg.groups:
            self.group(gname, self.cfg.groups[gname], shared)
        for b in self.cfg.resources.values():
            if b.group not in known:
                self.out.not_exported(f"resource {b.name}: not in a group")
        self.group_links()
        return self.out


def export(cfg: Config) -> Export:
    """The Pacemaker model of ``cfg`` (a configuration that passed validation)."""
    return _Exporter(cfg).run()
