"""Typed helpers for tests against the real Pacemaker clusters of ``scripts/pcmk/``.

* :class:`OneNodeCluster` -- corosync + pacemakerd on this host (``one-node.sh``); the CLI
  tools run directly on the host.
* :class:`TwoNodeCluster` -- node1 and node2, each in its own namespaces (``two-node.sh``);
  every command runs inside a node through ``nsenter``.
* :func:`parse_crm_mon` -- ``crm_mon --output-as=xml`` into :class:`ClusterStatus`
  (where each resource runs, its fail counts, which nodes are online, the DC).
* :func:`wait_for` -- poll a condition until it holds or a deadline passes.

Nothing here sleeps for a fixed time: every wait is a poll with a deadline.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "pcmk"
ONE_NODE_SH = SCRIPTS / "one-node.sh"
TWO_NODE_SH = SCRIPTS / "two-node.sh"
OCF_ROOT = Path("/usr/lib/ocf")

#: Binaries a cluster needs on the host; :func:`missing_requirements` checks them.
CLUSTER_BINARIES: tuple[str, ...] = (
    "corosync",
    "corosync-cmapctl",
    "corosync-quorumtool",
    "pacemakerd",
    "crm_mon",
    "crm_resource",
    "crm_attribute",
    "crm_failcount",
    "cibadmin",
    "xmllint",
)
TWO_NODE_BINARIES: tuple[str, ...] = (*CLUSTER_BINARIES, "unshare", "nsenter", "ip")
LIBVIRT_BINARIES: tuple[str, ...] = ("libvirtd", "virtlogd", "virsh")

T = TypeVar("T")


class ClusterError(RuntimeError):
    """A cluster command failed or a wait ran out of time."""


class WaitTimeout(ClusterError):
    """:func:`wait_for` reached its deadline."""


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    *,
    what: str = "condition",
    interval: float = 0.2,
) -> T:
    """Call ``predicate`` until it returns something truthy; return that value.

    Raises :class:`WaitTimeout` once ``timeout`` seconds (monotonic clock) have passed.
    The last exception raised by ``predicate`` (a :class:`ClusterError` while, say, a node
    is still starting) is kept as the timeout's cause instead of escaping.
    """
    deadline = time.monotonic() + timeout
    last_exc: ClusterError | None = None
    while True:
        try:
            value = predicate()
        except ClusterError as exc:
            last_exc = exc
            value = None
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}") from last_exc
        # Poll interval, bounded by the deadline (this is the only sleep in the helpers).
        time.sleep(min(interval, remaining))


# --------------------------------------------------------------------------- crm_mon XML


@dataclass(frozen=True)
class NodeState:
    name: str
    online: bool
    is_dc: bool
    standby: bool
    maintenance: bool
    unclean: bool
    resources_running: int


@dataclass(frozen=True)
class ResourceState:
    id: str
    agent: str  # e.g. "ocf:heartbeat:Dummy"
    role: str  # "Started", "Stopped", "Promoted", ...
    active: bool
    failed: bool
    managed: bool
    nodes: tuple[str, ...]  # where it is active (several: clone, or multi-active)


@dataclass(frozen=True)
class Failure:
    op_key: str  # e.g. "d1_monitor_1000"
    node: str
    task: str
    exitcode: int
    exitreason: str


@dataclass(frozen=True)
class ClusterStatus:
    dc: str | None
    quorate: bool
    nodes: Mapping[str, NodeState]
    resources: Mapping[str, ResourceState]
    #: (resource id, node) -> fail count; absent means 0. Clone instance ids ("r:0") are
    #: recorded both as such and under the base id (summed).
    fail_counts: Mapping[tuple[str, str], int] = field(default_factory=dict)
    failures: tuple[Failure, ...] = ()

    @property
    def online_nodes(self) -> tuple[str, ...]:
        return tuple(sorted(n for n, s in self.nodes.items() if s.online))

    def where(self, rsc: str) -> tuple[str, ...]:
        """Nodes where ``rsc`` is active (empty when stopped or unknown)."""
        state = self.resources.get(rsc)
        return state.nodes if state is not None else ()

    def fail_count(self, rsc: str, node: str) -> int:
        return self.fail_counts.get((rsc, node), 0)


def _bool(value: str | None) -> bool:
    return value == "true"


def _int(value: str | None, default: int = 0) -> int:
    if value is None:
        return default
    if value == "INFINITY":
        return 1_000_000
    try:
        return int(value)
    except ValueError:
        return default


def parse_crm_mon(xml_text: str) -> ClusterStatus:
    """Parse ``crm_mon -1 --output-as=xml`` (Pacemaker 2.1 schema)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ClusterError(f"crm_mon output is not XML: {exc}") from exc
    dc_el = root.find("./summary/current_dc")
    dc: str | None = None
    quorate = False
    if dc_el is not None and _bool(dc_el.get("present")):
        dc = dc_el.get("name")
        quorate = _bool(dc_el.get("with_quorum"))

    nodes: dict[str, NodeState] = {}
    for el in root.findall("./nodes/node"):
        name = el.get("name", "")
        nodes[name] = NodeState(
            name=name,
            online=_bool(el.get("online")),
            is_dc=_bool(el.get("is_dc")),
            standby=_bool(el.get("standby")),
            maintenance=_bool(el.get("maintenance")),
            unclean=_bool(el.get("unclean")),
            resources_running=_int(el.get("resources_running")),
        )

    # Primitives can sit at top level or inside group/clone/bundle elements; a clone
    # repeats the same id once per instance, so aggregate the nodes per id.
    resources: dict[str, ResourceState] = {}
    resources_el = root.find("./resources")
    for el in resources_el.iter("resource") if resources_el is not None else ():
        rid = el.get("id", "")
        here = tuple(n.get("name", "") for n in el.findall("./node"))
        active = _bool(el.get("active"))
        prev = resources.get(rid)
        if prev is None:
            resources[rid] = ResourceState(
                id=rid,
                agent=el.get("resource_agent", ""),
                role=el.get("role", ""),
                active=active,
                failed=_bool(el.get("failed")),
                managed=_bool(el.get("managed")),
                nodes=here,
            )
        else:
            resources[rid] = ResourceState(
                id=rid,
                agent=prev.agent,
                role=prev.role if prev.active else el.get("role", prev.role),
                active=prev.active or active,
                failed=prev.failed or _bool(el.get("failed")),
                managed=prev.managed and _bool(el.get("managed")),
                nodes=tuple(dict.fromkeys((*prev.nodes, *here))),
            )

    fail_counts: dict[tuple[str, str], int] = {}
    for node_el in root.findall("./node_history/node"):
        node = node_el.get("name", "")
        for hist in node_el.findall("./resource_history"):
            rid = hist.get("id", "")
            count = _int(hist.get("fail-count"))
            if not count:
                continue
            fail_counts[(rid, node)] = count
            base = rid.split(":", 1)[0]
            if base != rid:
                fail_counts[(base, node)] = fail_counts.get((base, node), 0) + count

    failures = tuple(
        Failure(
            op_key=el.get("op_key", ""),
            node=el.get("node", ""),
            task=el.get("task", ""),
            exitcode=_int(el.get("exitcode"), -1),
            exitreason=el.get("exitreason", ""),
        )
        for el in root.findall("./failures/failure")
    )
    return ClusterStatus(
        dc=dc,
        quorate=quorate,
        nodes=nodes,
        resources=resources,
        fail_counts=fail_counts,
        failures=failures,
    )


# --------------------------------------------------------------------------- clusters


def missing_requirements(binaries: Sequence[str] = CLUSTER_BINARIES) -> list[str]:
    """Why a cluster cannot run here (empty list: it can)."""
    reasons: list[str] = []
    if platform.system() != "Linux":
        reasons.append("not Linux")
    if os.geteuid() != 0:
        reasons.append("not root (corosync/pacemakerd and namespaces need root)")
    missing = [b for b in binaries if shutil.which(b, path=_PATH) is None]
    if missing:
        reasons.append("missing binaries: " + ", ".join(missing))
    return reasons


_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _script_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = _PATH + ":" + env.get("PATH", "")
    if extra:
        env.update(extra)
    return env


def _run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            input=input_text,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"{' '.join(argv)}: no answer within {timeout:g}s") from exc
    if check and proc.returncode != 0:
        raise ClusterError(
            f"{' '.join(argv)} exited {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
        )
    return proc


class Cluster:
    """What both clusters share: run a command on a node, query and change the CIB."""

    nodes: tuple[str, ...] = ()
    #: Seconds allowed to each command run on a node (crm_mon, cibadmin, ...).
    command_timeout: float = 60.0

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = _script_env(env)

    # -- to be provided by subclasses
    def node_argv(self, node: str | None, argv: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def is_running(self) -> bool:
        raise NotImplementedError

    # -- generic
    def run(
        self,
        node: str | None,
        *argv: str,
        check: bool = True,
        timeout: float | None = None,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on ``node`` (``None``: the first live node)."""
        return _run(
            self.node_argv(node, argv),
            timeout=timeout if timeout is not None else self.command_timeout,
            env=self.env,
            check=check,
            input_text=input_text,
        )

    def status(self, node: str | None = None) -> ClusterStatus:
        proc = self.run(node, "crm_mon", "-1", "--output-as=xml")
        return parse_crm_mon(proc.stdout)

    def where(self, rsc: str, node: str | None = None) -> tuple[str, ...]:
        return self.status(node).where(rsc)

    def fail_count(self, rsc: str, on: str, node: str | None = None) -> int:
        return self.status(node).fail_count(rsc, on)

    def all_online(self, node: str | None = None) -> bool:
        st = self.status(node)
        return st.dc is not None and st.online_nodes == tuple(sorted(self.nodes))

    def wait_online(self, timeout: float = 120.0, node: str | None = None) -> ClusterStatus:
        def check() -> ClusterStatus | None:
            st = self.status(node)
            ok = st.dc is not None and st.online_nodes == tuple(sorted(self.nodes))
            return st if ok else None

        return wait_for(check, timeout, what=f"nodes {', '.join(self.nodes)} Online")

    def wait_running(
        self, rsc: str, on: str | Sequence[str], timeout: float = 60.0, node: str | None = None
    ) -> ClusterStatus:
        """Wait until ``rsc`` is active exactly on ``on`` (a node or a set of nodes)."""
        want = (on,) if isinstance(on, str) else tuple(on)

        def check() -> ClusterStatus | None:
            st = self.status(node)
            return st if sorted(st.where(rsc)) == sorted(want) else None

        return wait_for(check, timeout, what=f"{rsc} running on {', '.join(want)}")

    def wait_stopped(self, rsc: str, timeout: float = 60.0, node: str | None = None) -> None:
        wait_for(
            lambda: not self.status(node).where(rsc),
            timeout,
            what=f"{rsc} stopped everywhere",
        )

    # -- CIB changes
    def cib_create(self, section: str, xml: str, node: str | None = None) -> None:
        """``cibadmin --create -o SECTION -X XML`` (section: resources, constraints, ...)."""
        self.run(node, "cibadmin", "--create", "--scope", section, "--xml-text", xml)

    def cib_query(self, xpath: str, node: str | None = None) -> str | None:
        proc = self.run(node, "cibadmin", "--query", "--xpath", xpath, check=False)
        if proc.returncode == 105:  # ENXIO-like: no match
            return None
        if proc.returncode != 0:
            raise ClusterError(f"cibadmin --query --xpath {xpath}: {proc.stderr.strip()}")
        return proc.stdout

    def set_property(self, name: str, value: str | None, node: str | None = None) -> None:
        """Set a cluster property (``None``: delete it)."""
        change = ["--update", value] if value is not None else ["--delete"]
        self.run(node, "crm_attribute", "--type", "crm_config", "--name", name, *change)

    def replace_section(self, section: str, node: str | None = None) -> None:
        """Empty a CIB configuration section (``resources``, ``constraints``...)."""
        self.run(node, "cibadmin", "--replace", "--scope", section, "--xml-text", f"<{section}/>")

    def add_primitive(
        self,
        rsc: str,
        agent: str,
        params: Mapping[str, str] | None = None,
        *,
        meta: Mapping[str, str] | None = None,
        monitor_interval: str | None = "10s",
        op_timeout: str = "30s",
        node: str | None = None,
    ) -> None:
        """Create a primitive, ``agent`` as ``class:provider:type`` (e.g. ocf:heartbeat:Dummy)."""
        parts = agent.split(":")
        if len(parts) != 3:
            raise ValueError(f"agent must be class:provider:type, got {agent!r}")
        cls, provider, kind = parts

        def nvpairs(prefix: str, values: Mapping[str, str] | None) -> str:
            return "".join(
                f'<nvpair id="{rsc}-{prefix}-{k}" name="{k}" value="{_xml_attr(v)}"/>'
                for k, v in (values or {}).items()
            )

        ops = (
            f'<op id="{rsc}-start" name="start" interval="0s" timeout="{op_timeout}"/>'
            f'<op id="{rsc}-stop" name="stop" interval="0s" timeout="{op_timeout}"/>'
        )
        if monitor_interval:
            ops += (
                f'<op id="{rsc}-monitor" name="monitor" interval="{monitor_interval}" '
                f'timeout="{op_timeout}"/>'
            )
        xml = (
            f'<primitive id="{rsc}" class="{cls}" provider="{provider}" type="{kind}">'
            f'<instance_attributes id="{rsc}-ia">{nvpairs("ia", params)}</instance_attributes>'
            f'<meta_attributes id="{rsc}-ma">{nvpairs("ma", meta)}</meta_attributes>'
            f"<operations>{ops}</operations></primitive>"
        )
        self.cib_create("resources", xml, node)

    def prefer(self, rsc: str, on: str, score: str = "100", node: str | None = None) -> None:
        """Location preference ``rsc`` -> ``on`` with ``score``."""
        self.cib_create(
            "constraints",
            f'<rsc_location id="{rsc}-prefers-{on}" rsc="{rsc}" node="{on}" score="{score}"/>',
            node,
        )

    def move(self, rsc: str, to: str, node: str | None = None) -> None:
        self.run(node, "crm_resource", "--move", "--resource", rsc, "--node", to)

    def clear(self, rsc: str, node: str | None = None) -> None:
        self.run(node, "crm_resource", "--clear", "--resource", rsc)

    def cleanup(self, rsc: str | None = None, node: str | None = None) -> None:
        argv = ["crm_resource", "--cleanup"]
        if rsc is not None:
            argv += ["--resource", rsc]
        self.run(node, *argv)

    def delete_resource(self, rsc: str, timeout: float = 60.0, node: str | None = None) -> None:
        """Stop ``rsc`` (bounded wait), then remove it and every constraint naming it."""
        self.run(
            node,
            "crm_resource",
            "--resource",
            rsc,
            "--meta",
            "--set-parameter",
            "target-role",
            "--parameter-value",
            "Stopped",
            check=False,
        )
        wait_for(lambda: not self.status(node).where(rsc), timeout, what=f"{rsc} to stop")
        self.run(
            node,
            "cibadmin",
            "--delete-all",
            "--force",
            "--xpath",
            f"//constraints/*[@rsc='{rsc}' or @with-rsc='{rsc}' or @first='{rsc}' "
            f"or @then='{rsc}']",
            check=False,
        )
        self.run(node, "cibadmin", "--delete", "--xml-text", f'<primitive id="{rsc}"/>')
        self.run(node, "crm_resource", "--cleanup", "--resource", rsc, check=False)

    def reset(self, timeout: float = 120.0, node: str | None = None) -> None:
        """Remove every resource and constraint (stopping them first), clear failures."""
        st = self.status(node)
        if st.resources:
            self.set_property("stop-all-resources", "true", node)
            wait_for(
                lambda: not any(r.active for r in self.status(node).resources.values()),
                timeout,
                what="all resources stopped",
            )
            self.replace_section("constraints", node)
            self.replace_section("resources", node)
            self.set_property("stop-all-resources", None, node)
        else:
            self.replace_section("constraints", node)
        self.run(node, "crm_resource", "--cleanup", check=False)
        wait_for(lambda: not self.status(node).resources, timeout, what="empty resources")


def _xml_attr(value: str) -> str:
    return escape(value, {'"': "&quot;"})


class OneNodeCluster(Cluster):
    """``scripts/pcmk/one-node.sh``: corosync (knet on 127.0.0.1) + pacemakerd on the host."""

    script = ONE_NODE_SH
    start_timeout = 180.0

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        self.nodes = (platform.node(),)

    def node_argv(self, node: str | None, argv: Sequence[str]) -> list[str]:
        if node not in (None, *self.nodes):
            raise ClusterError(f"unknown node {node!r} (one-node cluster: {self.nodes[0]})")
        return list(argv)

    def start(self) -> None:
        _run([str(self.script), "start"], timeout=self.start_timeout, env=self.env)

    def stop(self) -> None:
        _run([str(self.script), "stop"], timeout=120.0, env=self.env)

    def is_running(self) -> bool:
        proc = _run([str(self.script), "status"], timeout=60.0, env=self.env, check=False)
        return proc.returncode == 0


class TwoNodeCluster(Cluster):
    """``scripts/pcmk/two-node.sh``: node1 and node2 in their own namespaces."""

    script = TWO_NODE_SH
    start_timeout = 240.0

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        self.nodes = ("node1", "node2")
        self._init_pid: dict[str, int] = {}
        self.share = Path(self.env.get("KVMGUEST_PCMK_SHARE", "/srv/kvmguest-pcmk"))
        self.state = Path(self.env.get("KVMGUEST_PCMK_STATE", "/var/tmp/kvmguest-pcmk"))

    def _script(
        self, *args: str, timeout: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return _run([str(self.script), *args], timeout=timeout, env=self.env, check=check)

    def init_pid(self, node: str) -> int:
        """Host pid of ``node``'s PID 1 (stable across crash/boot; changes on start)."""
        self._check_node(node)
        pid = self._init_pid.get(node)
        if pid is not None and Path(f"/proc/{pid}/ns/pid").exists():
            return pid
        out = self._script("pid", node, timeout=30.0).stdout.strip()
        if not re.fullmatch(r"\d+", out):
            raise ClusterError(f"{node}: bad init pid {out!r}")
        self._init_pid[node] = int(out)
        return int(out)

    def _check_node(self, node: str) -> None:
        if node not in self.nodes:
            raise ClusterError(f"unknown node {node!r} (expected one of {self.nodes})")

    def live_nodes(self) -> tuple[str, ...]:
        """Nodes whose pacemakerd runs (a crashed node is not live until booted)."""
        live: list[str] = []
        for node in self.nodes:
            try:
                argv = self._nsenter(node, ["pidof", "pacemakerd"])
            except ClusterError:
                continue
            if _run(argv, timeout=30.0, check=False).returncode == 0:
                live.append(node)
        return tuple(live)

    def _nsenter(self, node: str, argv: Sequence[str]) -> list[str]:
        pid = self.init_pid(node)
        return [
            "nsenter",
            f"--target={pid}",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "--",
            *argv,
        ]

    def node_argv(self, node: str | None, argv: Sequence[str]) -> list[str]:
        if node is None:
            live = self.live_nodes()
            if not live:
                raise ClusterError("no live node")
            node = live[0]
        return self._nsenter(node, argv)

    def start(self) -> None:
        self._init_pid.clear()
        self._script("start", timeout=self.start_timeout)

    def stop(self) -> None:
        self._script("stop", timeout=120.0)
        self._init_pid.clear()

    def is_running(self) -> bool:
        return self._script("status", timeout=60.0, check=False).returncode == 0

    def crash(self, node: str, *, cluster_only: bool = False) -> None:
        """SIGKILL every process of ``node`` (power loss); ``cluster_only``: only corosync
        and pacemaker's daemons (libvirtd and guests survive: a hung cluster stack)."""
        self._check_node(node)
        args = ["crash", node] + (["--cluster-only"] if cluster_only else [])
        self._script(*args, timeout=60.0)

    def boot(self, node: str) -> None:
        """Restart corosync + pacemaker on a crashed node; waits until both are Online."""
        self._check_node(node)
        self._script("boot", node, timeout=self.start_timeout)

    def start_libvirtd(self, node: str) -> None:
        self._check_node(node)
        self._script("libvirtd", node, timeout=180.0)

    def libvirt_uri(self, node: str) -> str:
        """URI that reaches ``node``'s libvirtd from the host or from the other node."""
        self._check_node(node)
        return f"qemu+unix:///system?socket={self.share}/{node}/libvirt-sock"

    def migration_uri(self, node: str, *, tcp: bool = False) -> str:
        """Migration data URI whose listener is created on destination ``node``."""
        self._check_node(node)
        if tcp:
            return f"tcp://{node}"
        return f"unix://{self.share}/{node}/mig.sock"

    def log_dir(self, node: str) -> Path:
        """Host path of ``node``'s /var/log/pacemaker."""
        self._check_node(node)
        return self.state / "two-node" / node / "var-log-pacemaker"
