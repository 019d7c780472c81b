"""The differential property of the configuration: what `validate` accepts runs, what it
refuses is refused with a position.

Hypothesis generates whole configurations (derandomized, 2,000 of them): systems, groups,
KVMGuest resources with framework statics in and out of range, hostile strings (control
characters, quotes, non-ASCII digits, malformed URLs), local values, redefined types,
types kvmguest has no agent for, stock VCS attributes, and requires statements good and
bad. For each:

- `load` + `validate` never raise;
- a refusal: every error has a file and a line;
- an acceptance: the daemon's load (the engine and the group specs on every system), the
  export (both renderings), the OCF agent's parameter load (from main.cf, and from the
  exported parameters alone) and an in-process monitor of every resource on libvirt's
  test:///default driver all run without an exception.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmguest.agents import registry
from kvmguest.agents.base import Env, monitor_once
from kvmguest.agents.kvmguest import ocf_actions
from kvmguest.agents.kvmguest.ocf_params import from_environ
from kvmguest.agents.loader import Loaded, validate
from kvmguest.agents.ocf_interface import OcfError
from kvmguest.daemon.engine import Engine
from kvmguest.daemon.store import Store
from kvmguest.framework.groups import GroupSpec
from kvmguest.model.config import errors_of
from kvmguest.model.parser import load
from kvmguest.ocf.export import export, render_crm, render_xml

URI = "test:///default"
EXAMPLES = int(__import__("os").environ.get("KVMGUEST_DIFF_EXAMPLES", "2000"))

SYSTEMS = ["n1", "n2", "n3"]
GUESTS = ["web", "db", "test", "web1"]
GOOD_INTS = ["1", "2", "5", "30", "600"]
BAD_INTS = ["-1", "0", "31", "2147483648", "x", "١٢", "1_0", "²", " 5"]
HOSTILE = [
    "", "a b", "evil\n.com", "eth0\n", "nul\x00here", "bell\x07", "tab\there", 'quo"te',
    "back\\slash", "https://[::1", "http://rhvm/api", "²", "x" * 300, "\x1b[31mred",
]  # fmt: skip
GOOD_DR = {
    "IPAddress": "192.0.2.10", "Netmask": "255.255.255.0", "Gateway": "192.0.2.1",
    "DNSServers": "192.0.2.53", "DNSSearchPath": "example.com", "Device": "eth0",
}  # fmt: skip
STATICS = [
    "MonitorInterval", "OfflineMonitorInterval", "MonitorTimeout", "OnlineTimeout",
    "OfflineTimeout", "CleanTimeout", "ActionTimeout", "RestartLimit", "ToleranceLimit",
    "ConfInterval", "FaultOnMonitorTimeouts", "OnlineRetryLimit", "OnlineWaitLimit",
    "CleanRetryLimit", "NumThreads", "IntentionalOffline", "LevelTwoMonitorFreq",
]  # fmt: skip
GOOD_TYPE_DECLS = [
    "static int MonitorInterval = 30", "int DelayAfterGuestOnline = 7", "str Owner = ops",
    "str RHEVMInfo{} = { Enabled = 0 }", "static int ToleranceLimit = 2",
]  # fmt: skip
BAD_TYPE_DECLS = [
    "static int MonitorInterval = 0", "int DelayAfterGuestOnline = x", "str RHEVMInfo = x",
    "int GuestName = 3", "str GuestName[]", "static int ToleranceLimit = -1",
    "boolean ResyncVMCfg = 2", "int MonitorInterval = 5", "int IMF{} = { Mode = 9 }",
]  # fmt: skip
# (attribute, good values, bad values): stock VCS attributes among ours.
GROUP_ATTRS = [
    ("AutoStart", ["0", "1"], ["2"]), ("ManageFaults", ["ALL", "NONE"], ["SOME"]),
    ("Parallel", ["0"], ["x"]), ("Frozen", ["0", "1"], ["3"]),
    ("AutoStartPolicy", ["Order", "Load", "Priority"], ["3", "x"]),
    ("FailOverPolicy", ["Priority", "RoundRobin"], ["Nope"]),
    ("OnlineRetryLimit", ["0", "3"], ["-1"]), ("Priority", ["0", "5"], ["x"]),
    ("AutoFailOver", ["0", "1"], ["x"]), ("UserStrGlobal", ["note"], HOSTILE[4:6]),
    ("Evacuate", ["1"], ["x"]), ("Authority", ["0", "1"], ["x"]),
    ("TriggersEnabled", ["0"], ["x"]), ("GroupOwner", ["ops"], ["\x07"]),
]  # fmt: skip
RESOURCE_STOCK = [
    ("Critical", ["0", "1"], ["2"]), ("Enabled", ["0", "1"], ["x"]),
    ("ResourceOwner", ["ops"], HOSTILE[4:6]), ("ComputeStats", ["0", "1"], ["x"]),
    ("TriggerEvent", ["0", "1"], ["x"]),
]  # fmt: skip
GOOD_WORDS = ["online local firm", "online local soft", "online global soft", "offline local",
              "online local hard", "online remote firm"]  # fmt: skip
BAD_WORDS = ["online sideways firm", "firm", "offline local firm", "online global hard"]


def q(text: str) -> str:
    """A quoted string of the configuration language."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Odds:
    """How often a configuration goes wrong: half of them never do (so that what validate
    accepts is exercised as much as what it refuses), the others now and then or often."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.scale = draw(st.sampled_from([0, 0, 4, 1]))  # 0: a clean configuration

    def bad(self, odds: int) -> bool:
        """True with a chance of one in ``odds`` (scaled), never for a clean config."""
        if self.scale == 0:
            return False
        return self.draw(st.integers(0, odds * self.scale - 1)) == 0

    def pick(self, good: list[str], bad: list[str], odds: int = 8) -> str:
        if bad and self.bad(odds):
            return self.draw(st.sampled_from(bad))
        return self.draw(st.sampled_from(good))


def rare(draw: st.DrawFn, odds: int = 10) -> bool:
    return draw(st.integers(0, odds - 1)) == 0


@st.composite
def configs(draw: st.DrawFn) -> str:
    odds = Odds(draw)
    pick = odds.pick
    systems = draw(st.lists(st.sampled_from(SYSTEMS), max_size=3, unique=True))
    out: list[str] = []
    if draw(st.booleans()):
        good = ["ClusterName = prod", "UseFence = SCSI3", "Administrators = { admin }",
                f'LibvirtURITemplate = "{URI}"', "EngineShutdown = Enable"]  # fmt: skip
        attrs = draw(st.lists(st.sampled_from(good), max_size=3, unique=True))
        if odds.bad(10):
            attrs.append(draw(st.sampled_from(["Nonsense = 1", "CounterInterval = x"])))
        out.append(f"cluster c ( {' '.join(attrs)} )")
    if rare(draw, 4):
        decls = [pick(GOOD_TYPE_DECLS, BAD_TYPE_DECLS, 4) for _ in range(draw(st.integers(1, 3)))]
        out.append("type KVMGuest (\n    " + "\n    ".join(dict.fromkeys(decls)) + "\n)")
    with_mount = draw(st.booleans())
    if with_mount:
        out.append("type Mount (\n    static str ArgList[] = { MountPoint, BlockDevice }\n"
                   "    str MountPoint\n    str BlockDevice\n    str FSType\n)")  # fmt: skip
    for s in systems:
        extra = pick(["", "Site = east", "Capacity = 100", "SystemLocation = rack1"],
                     ["Bogus = 1", "Capacity = x"], 12)  # fmt: skip
        out.append(f"system {s} ( {extra} )")
    n_groups = draw(st.integers(1, 3))
    for g in range(n_groups):
        gname = f"g{g}"
        parts: list[str] = []
        pool = systems or SYSTEMS
        sl = draw(st.lists(st.sampled_from(pool), max_size=len(pool), unique=True))
        if sl:
            parts.append("SystemList = { " + ", ".join(f"{s} = {i}" for i, s in enumerate(sl))
                         + " }")  # fmt: skip
        for name, good, bad in draw(
            st.lists(st.sampled_from(GROUP_ATTRS), max_size=2, unique_by=lambda a: a[0])
        ):
            parts.append(f"{name} = {q(pick(good, bad))}")
        out.append(f"group {gname} ( {' '.join(parts)} )")
        mine: list[str] = []
        for r in range(draw(st.integers(1, 3))):
            rname = f"r{g}{r}"
            mine.append(rname)
            if with_mount and rare(draw, 4):
                out.append(f'    Mount {rname} ( MountPoint = "/srv/{rname}" BlockDevice = '
                           f'"/dev/vd{r}" FSType = ext4 )')  # fmt: skip
                continue
            attrs = []
            if not odds.bad(20):
                name = pick([f"vm{g}{r}"], GUESTS + HOSTILE[:5], 6)
                attrs.append(f"GuestName = {q(name)}")
            for name in draw(st.lists(st.sampled_from(STATICS), max_size=2, unique=True)):
                attrs.append(f"{name} = {q(pick(GOOD_INTS, BAD_INTS))}")
            for name, good, bad in draw(
                st.lists(st.sampled_from(RESOURCE_STOCK), max_size=2, unique_by=lambda a: a[0])
            ):
                attrs.append(f"{name} = {q(pick(good, bad))}")
            if draw(st.booleans()) and (systems or sl):
                s = draw(st.sampled_from(systems or sl))
                attr, value = draw(st.sampled_from([
                    ("GuestName", pick([f"vm{g}{r}-{s}"], GUESTS, 4)),
                    ("DelayAfterGuestOnline", pick(GOOD_INTS, BAD_INTS)),
                    ("SyncDir", pick(["/srv/sync"], HOSTILE)),
                ]))  # fmt: skip
                attrs.append(f"{attr}@{s} = {q(value)}")
            if rare(draw, 4):
                dr = dict(GOOD_DR)
                key = draw(st.sampled_from(sorted(GOOD_DR)))
                dr[key] = pick([GOOD_DR[key]], HOSTILE, 3)
                pairs = ", ".join(f"{k} = {q(v)}" for k, v in dr.items())
                attrs.append(f"DROpts = {{ ConfigureNetwork = 1, {pairs} }}")
            if odds.bad(6):  # never runs: no RHV-M exists here, the password is in clear
                url = pick(["https://rhvm.example.com/api"], HOSTILE, 3)
                attrs.append(f"RHEVMInfo = {{ Enabled = {pick(['0'], ['1'], 3)}, "
                             f"URL = {q(url)}, Password = {q('hunter2')} }}")  # fmt: skip
            if odds.bad(20):
                attrs.append(f"{draw(st.sampled_from(['GuestNmae', 'Critcal', 'Foo']))} = 1")
            out.append(f"    KVMGuest {rname} ( {' '.join(attrs)} )")
        for i in range(len(mine) - 1):
            if draw(st.booleans()):
                out.append(f"    {mine[i]} requires {mine[i + 1]}")
        if odds.bad(8):
            out.append(f"    {mine[-1]} requires {draw(st.sampled_from(mine))}")  # a cycle
        if g > 0 and rare(draw, 3):
            other = f"g{draw(st.integers(0, g - 1))}"
            out.append(f"    requires group {other} {pick(GOOD_WORDS, BAD_WORDS)}")
        elif odds.bad(15):
            other = f"g{draw(st.integers(g, n_groups - 1))}"  # itself or a later one: a cycle
            out.append(f"    requires group {other} {draw(st.sampled_from(GOOD_WORDS))}")
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("differential")


def _daemon_load(loaded: Loaded, path: Path, system: str, db: Path) -> None:
    async def build() -> None:
        store = Store(db)
        engine = Engine(loaded, Env(str(path), system, URI), store)
        try:
            for name in loaded.cfg.groups:
                GroupSpec.from_config(loaded, name)
        finally:
            for r in engine.resources.values():
                r.handle.close()
            for runtime in engine.runtimes.values():
                runtime.close()
            engine.pool.shutdown(wait=False)
            store.close()

    asyncio.run(build())


def _ocf_loads(loaded: Loaded, path: Path, system: str) -> None:
    """The OCF agent's parameter load: from main.cf, then from the exported parameters."""
    for name, block in loaded.cfg.resources.items():
        if block.kind != "KVMGuest":
            continue
        environ = {"OCF_RESOURCE_INSTANCE": name, "OCF_RESKEY_config": str(path),
                   "OCF_RESKEY_resource": name, "OCF_RESKEY_hypervisor": URI,
                   "OCF_RESKEY_CRM_meta_on_node": system}  # fmt: skip
        resolved = ocf_actions.resolve(from_environ(environ), "monitor")
        resolved.ctx.hv.close()
    for prim in export(loaded.cfg).primitives:
        if prim.kind != "KVMGuest":
            continue
        params = prim.params[0].values
        environ = {f"OCF_RESKEY_{k}": v for k, v in params.items()}
        environ.update(OCF_RESOURCE_INSTANCE=prim.id, OCF_RESKEY_hypervisor=URI,
                       OCF_RESKEY_CRM_meta_on_node=system)  # fmt: skip
        try:
            ocf_actions.build_config(from_environ(environ), {})
        except OcfError as e:
            raise AssertionError(f"exported parameters refused: {e}; {params}") from e


def _monitor_all(loaded: Loaded, path: Path, system: str) -> None:
    env = Env(str(path), system, URI)
    for name, block in loaded.cfg.resources.items():
        agent = registry.get(block.kind)
        if agent is None:
            continue
        handle = agent.runtime(env).bind(loaded, name)
        try:
            monitor_once(handle)
        finally:
            handle.close()


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])  # fmt: skip
@given(text=configs())
def test_what_validate_accepts_runs_and_what_it_refuses_has_a_position(
    workdir: Path, text: str
) -> None:
    path = workdir / "main.cf"
    path.write_text(text, encoding="utf-8")
    cfg, diags = load(path)
    diags = diags or validate(cfg)
    errors = errors_of(diags)
    if errors:
        for d in errors:
            assert d.pos.file and d.pos.line >= 1, (str(d), text)
        return
    loaded = Loaded.from_file(str(path))
    systems = list(loaded.cfg.systems) or ["host1"]
    for system in systems:
        db = workdir / "state.db"
        for leftover in workdir.glob("state.db*"):
            leftover.unlink()
        _daemon_load(loaded, path, system, db)
        _ocf_loads(loaded, path, system)
        _monitor_all(loaded, path, system)
    render_crm(export(loaded.cfg))
    render_xml(export(loaded.cfg))
