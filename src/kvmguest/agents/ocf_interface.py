"""The OCF vocabulary shared by the Pacemaker adapter and every agent's Pacemaker side.

Exit codes and the mapping of monitor states onto them; the parameters of an agent and how
one invocation's environment is read; the base of an agent's OCF side. Pure, and cheap to
import: the lean monitor path of every interval comes through here (no typing, no
dataclasses).

The exit-code table is docs/pacemaker.md's "OCF exit codes". The one hard case is UNKNOWN:
Pacemaker has no "I don't know" answer, and each of its answers starts something — 7 a
restart (a double start if the guest still runs), 1 a recovery (a stop that must succeed or
the node is fenced), 0/190 "leave it where it is". So UNKNOWN is resolved with evidence from
this host where there is any (is the resource's process alive?), and otherwise by the safest
answer for the kind of monitor that asked.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from kvmguest.agents.ocf_names import IGNORED_RESKEYS, META, RESKEY
from kvmguest.model.excerpt import excerpt
from kvmguest.model.integers import parse_int
from kvmguest.model.states import MonitorResult, ResourceState

DEFAULT_RSCTMP = "/run/resource-agents"


class Ocf(enum.IntEnum):
    SUCCESS = 0
    ERR_GENERIC = 1
    ERR_ARGS = 2
    ERR_UNIMPLEMENTED = 3
    ERR_PERM = 4
    ERR_INSTALLED = 5
    ERR_CONFIGURED = 6
    NOT_RUNNING = 7
    # OCF 1.1: active, but in a condition that makes failures more likely. Pacemaker treats
    # it as success (no recovery, no fail count) and shows the resource as degraded.
    DEGRADED = 190


class OcfError(Exception):
    """An action cannot run; ``code`` is the OCF exit code, the message the exit reason."""

    def __init__(self, code: Ocf, message: str) -> None:
        super().__init__(message)
        self.code = code


def monitor_code(result: MonitorResult, qemu_alive: bool | None, *, probe: bool) -> Ocf:
    """The OCF answer to a monitor whose result is ``result``.

    ``qemu_alive``: whether a QEMU process of the guest runs on this host — True or False
    when this host can tell (a local ``qemu:///system``), None when it cannot (a remote
    libvirt, RHV-M). ``probe``: a monitor without an interval (Pacemaker asks "does it run
    here?" before it starts the resource anywhere).
    """
    state = result.state
    if state is ResourceState.ONLINE:
        return Ocf.SUCCESS
    if state in (ResourceState.OFFLINE, ResourceState.INTENTIONAL_OFFLINE):
        # INTENTIONAL OFFLINE (migrated away, saved, suspended by the guest) is "not running
        # here" for Pacemaker too: it is not a fault under VCS either (IntentionalOffline=1).
        return Ocf.NOT_RUNNING
    if qemu_alive is True:
        # libvirt cannot be asked (down, restarting, hung) or reports a state we cannot
        # place (paused on an I/O error), but the guest's QEMU runs here: the guest runs.
        # Never 7 (a second start elsewhere corrupts its disks), never 1 (a recovery that
        # kills a running guest because libvirtd restarts).
        return Ocf.DEGRADED
    if qemu_alive is False:
        # No QEMU process of the guest on this host: whatever libvirt says, it is not
        # running here.
        return Ocf.NOT_RUNNING
    # No evidence at all. A recurring monitor keeps the resource where it runs and shows the
    # alarm (VCS's UNKNOWN: the operator decides); a probe must not claim a guest it cannot
    # see, nor deny one: an error makes Pacemaker stop it here before starting it anywhere.
    return Ocf.ERR_GENERIC if probe else Ocf.DEGRADED


class _Record:
    """A small immutable record: equal by its fields. Not typing.NamedTuple: importing
    typing costs the lean monitor path of every interval ~10 ms."""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__)
        return f"{type(self).__name__}({fields})"


class OcfParam(_Record):
    __slots__ = ("attr", "cluster_attr", "default", "key", "kind", "longdesc", "name",
                 "shortdesc", "system_attr", "unique")  # fmt: skip

    def __init__(
        self,
        name: str,
        kind: str,  # the OCF content type: string, integer or boolean
        default: str,
        shortdesc: str,
        longdesc: str,
        attr: str | None = None,  # the attribute (VCS name) it sets
        key: str | None = None,  # ... and the key, for an association
        cluster_attr: str | None = None,  # or a cluster attribute
        system_attr: str | None = None,  # or a system attribute, as "SYSTEM=VALUE ..." pairs
        unique: bool = False,
    ) -> None:
        self.name = name
        self.kind = kind
        self.default = default
        self.shortdesc = shortdesc
        self.longdesc = longdesc
        self.attr = attr
        self.key = key
        self.cluster_attr = cluster_attr
        self.system_attr = system_attr
        self.unique = unique

    @property
    def vcs_name(self) -> str:
        if self.attr:
            return f"{self.attr}.{self.key}" if self.key else self.attr
        if self.cluster_attr:
            return f"cluster {self.cluster_attr}"
        if self.system_attr:
            return f"system {self.system_attr}"
        return ""


def param(
    name: str,
    kind: str,
    default: str,
    short: str,
    long: str,
    *,
    attr: str | None = None,
    key: str | None = None,
    cluster_attr: str | None = None,
    system_attr: str | None = None,
    unique: bool = False,
) -> OcfParam:
    return OcfParam(name, kind, default, short, long, attr, key, cluster_attr, system_attr, unique)


_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n", ""}


def ocf_bool(value: str) -> bool | None:
    """Pacemaker's spellings of a boolean; None when ``value`` is none of them."""
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return None


class Meta(_Record):
    """What Pacemaker says about the action (``OCF_RESKEY_CRM_meta_*``)."""

    __slots__ = ("interval_ms", "migrate_source", "migrate_target", "on_node", "timeout_ms")

    def __init__(
        self,
        timeout_ms: int | None = None,
        interval_ms: int = 0,
        on_node: str | None = None,
        migrate_source: str | None = None,
        migrate_target: str | None = None,
    ) -> None:
        self.timeout_ms = timeout_ms
        self.interval_ms = interval_ms
        self.on_node = on_node
        self.migrate_source = migrate_source
        self.migrate_target = migrate_target

    @property
    def probe(self) -> bool:
        return self.interval_ms == 0


class OcfEnv:
    """The parameters, meta values and check level of one agent invocation."""

    # A plain class, not a dataclass: the monitor path must not pay for importing dataclasses.
    __slots__ = ("check_level", "instance", "meta", "params", "rsctmp")
    # The agent's parameters by name (an agent's subclass sets it): their defaults.
    table: Mapping[str, OcfParam] = {}

    def __init__(
        self,
        params: dict[str, str],
        meta: Meta,
        instance: str,
        check_level: int = 0,
        rsctmp: str = DEFAULT_RSCTMP,
    ) -> None:
        self.params = params
        self.meta = meta
        self.instance = instance
        self.check_level = check_level
        # The resource agents' volatile state directory (tmpfs: emptied by a reboot).
        self.rsctmp = rsctmp

    def get(self, name: str) -> str:
        """The parameter's value, or its default."""
        value = self.params.get(name)
        if value is not None:
            return value
        known = self.table.get(name)
        return known.default if known is not None else ""

    def given(self, name: str) -> bool:
        return name in self.params

    @property
    def config_mode(self) -> bool:
        return bool(self.params.get("config") or self.params.get("resource"))

    def flag(self, name: str) -> bool:
        value = ocf_bool(self.get(name))
        if value is None:
            raise OcfError(Ocf.ERR_CONFIGURED, f"{name} must be a boolean, not {self.get(name)!r}")
        return value


def _int_env(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_int(raw)
    except ValueError as e:
        raise OcfError(Ocf.ERR_ARGS, f"{name} must be {e}, not {excerpt(raw)}") from None


def read_environ(environ: Mapping[str, str], env_class: type[OcfEnv], instance: str) -> OcfEnv:
    """Read one invocation's environment for the agent whose parameters ``env_class.table``
    holds. Raises OcfError for unknown or malformed input."""
    table = env_class.table
    params: dict[str, str] = {}
    for key, value in environ.items():
        if not key.startswith(RESKEY) or key.startswith(META):
            continue
        name = key[len(RESKEY) :]
        if name in IGNORED_RESKEYS:
            continue
        if name not in table:
            import difflib  # only on this error path: the monitor path stays lean

            close = difflib.get_close_matches(name, list(table), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            # A misspelt parameter that is silently ignored changes what the agent does.
            raise OcfError(Ocf.ERR_CONFIGURED, f"unknown parameter {name!r}{hint}")
        params[name] = value
    level = _int_env(environ, "OCF_CHECK_LEVEL") or 0
    meta = Meta(
        timeout_ms=_int_env(environ, META + "timeout"),
        interval_ms=_int_env(environ, META + "interval") or 0,
        on_node=environ.get(META + "on_node") or None,
        migrate_source=environ.get(META + "migrate_source") or None,
        migrate_target=environ.get(META + "migrate_target") or None,
    )
    rsctmp = environ.get("HA_RSCTMP") or DEFAULT_RSCTMP
    return env_class(
        params,
        meta,
        environ.get("OCF_RESOURCE_INSTANCE") or instance,
        check_level=level,
        rsctmp=rsctmp,
    )


def system_pairs(name: str, value: str) -> dict[str, str]:
    """``"node1=a node2=b"`` -> ``{"node1": "a", "node2": "b"}``."""
    out: dict[str, str] = {}
    for item in value.split():
        system, sep, val = item.partition("=")
        if not sep or not system:
            raise OcfError(Ocf.ERR_CONFIGURED, f"{name}: {item!r} is not SYSTEM=VALUE")
        out[system] = val
    return out


def template(value: str) -> str:
    """VirtualDomain's ``%n`` spelling of the node name, as our ``{system}``."""
    return value.replace("%n", "{system}")


def attr_value(param: OcfParam, value: str) -> str:
    """An OCF value as the configuration language writes it (booleans 0/1, NONE unset)."""
    if param.kind == "boolean":
        b = ocf_bool(value)
        if b is None:
            raise OcfError(
                Ocf.ERR_CONFIGURED, f"{param.name} must be a boolean (true/false), not {value!r}"
            )
        return "1" if b else "0"
    if param.key and value == "":
        return "NONE"
    return value


def ocf_value(param: OcfParam, raw: str) -> str:
    """A configuration-language value as an OCF parameter value (the inverse)."""
    if param.kind == "boolean":
        return "true" if raw == "1" else "false"
    if param.key and raw == "NONE":
        return ""
    return raw


def flatten(attrs: Mapping[str, object], params: tuple[OcfParam, ...]) -> dict[str, str]:
    """Attribute values (raw, as in a main.cf block) -> the OCF parameters among ``params``.

    Only what ``attrs`` holds is returned; an association gives one parameter per key it
    holds. Statics and unknown attributes are left out (the caller reports them).
    """
    out: dict[str, str] = {}
    for p in params:
        if p.attr is None:
            continue
        raw = attrs.get(p.attr)
        if raw is None:
            continue
        if p.key is None:
            if isinstance(raw, str):
                out[p.name] = ocf_value(p, raw)
            elif isinstance(raw, list | dict):
                # A list or a whole association as one parameter: shell words ("K=V" for
                # an association), as the agents that take one read it back (shlex.split).
                import shlex

                items = raw.items() if isinstance(raw, dict) else None
                words = [f"{k}={v}" for k, v in items] if items is not None else raw
                out[p.name] = " ".join(shlex.quote(str(w)) for w in words)
        elif isinstance(raw, dict) and p.key in raw:
            out[p.name] = ocf_value(p, str(raw[p.key]))
    return out


class Observed:
    """One resource as the Pacemaker companion watches it (:meth:`OcfSide.observe`)."""

    # The name the agent's events carry for it (a guest's name), and the managed system's
    # URI whose event source reports it.
    key = ""
    uri = ""

    def probe(self, interval_ms: int, bound: float) -> tuple[Ocf, str]:
        """A direct monitor, with the same answer (and evidence rules) as the agent's own
        monitor for a monitor of ``interval_ms`` (0: a probe), within ``bound`` seconds."""
        raise NotImplementedError

    def main_pid(self) -> int | None:
        """The verified pid of the resource's main process on this node, if it runs."""
        return None


class OcfSide:
    """An agent's Pacemaker side: its parameters and meta-data text, the lean monitor and
    the actions. ``ocf:kvmguest:<type name>`` runs it; subclasses fill it in."""

    params: tuple[OcfParam, ...] = ()
    shortdesc = ""
    longdesc = ""
    # Advertise migrate_to / migrate_from (the type supports live migration).
    migrate = False
    # What `kvmguest ocf install` imports in the target Python to prove it can run the agent.
    imports: tuple[str, ...] = ()
    # One instance on every node of its group's systems (a container engine): the export
    # makes it a clone, and the group's other members start after it, on the same node.
    per_node = False

    def from_environ(self, environ: Mapping[str, str]) -> OcfEnv:
        raise NotImplementedError

    def lean_monitor(self, env: OcfEnv) -> tuple[Ocf, str] | None:
        """A monitor answered without the configuration model, or None to take the full path."""
        return None

    def run(self, action: str, env: OcfEnv) -> tuple[Ocf, str]:
        raise NotImplementedError

    def observe(self, env: OcfEnv) -> Observed | None:
        """The resource of ``env`` for the companion to watch; None when the companion
        cannot watch it here (its monitors then always take the direct path)."""
        return None
