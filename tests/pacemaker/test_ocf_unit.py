"""The OCF agent without a cluster: exit-code mapping, parameter flattening, meta-data,
time budgets, the QEMU process evidence, and the actions on libvirt's test:///default
driver (in-process), the lean monitor path compared with the full one."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

import libvirt
from kvmguest.agents.kvmguest import fastmon, procs
from kvmguest.agents.kvmguest import ocf_actions as agent
from kvmguest.agents.kvmguest.agent import KVMGUEST
from kvmguest.agents.kvmguest.libvirt_kvm import LibvirtKVM
from kvmguest.agents.kvmguest.ocf_params import (
    BY_NAME,
    PARAMS,
    Meta,
    OcfEnv,
    attr_value,
    flatten_attrs,
    from_environ,
    ocf_bool,
    ocf_value,
)
from kvmguest.agents.kvmguest.params import guest_params
from kvmguest.agents.loader import Loaded, builtin_types
from kvmguest.agents.ocf_interface import Ocf, OcfError, monitor_code
from kvmguest.model.attributes import Dimension
from kvmguest.model.states import MonitorResult, ResourceState, kvm_state
from kvmguest.model.types import effective_attrs, object_types
from kvmguest.ocf.main import main
from kvmguest.ocf.metadata import Timeouts, render

TEST_URI = "test:///default"
DTD = Path("/usr/share/resource-agents/ra-api-1.dtd")

# --- exit codes ------------------------------------------------------------------------

ONLINE = MonitorResult(ResourceState.ONLINE, 100, "running")
ONLINE10 = MonitorResult(ResourceState.ONLINE, 10, "paused: starting up")
OFFLINE = MonitorResult(ResourceState.OFFLINE, 0, "shut off: crashed")
INTENTIONAL = MonitorResult(ResourceState.INTENTIONAL_OFFLINE, 0, "shut off: migrated")
UNKNOWN = MonitorResult(ResourceState.UNKNOWN, 0, "libvirt unreachable")


@pytest.mark.parametrize(
    ("result", "alive", "probe", "code"),
    [
        (ONLINE, None, False, Ocf.SUCCESS),
        (ONLINE10, None, True, Ocf.SUCCESS),
        (OFFLINE, None, False, Ocf.NOT_RUNNING),
        (OFFLINE, True, True, Ocf.NOT_RUNNING),  # libvirt answered: it is authoritative
        (INTENTIONAL, None, False, Ocf.NOT_RUNNING),
        # UNKNOWN: evidence from this host decides; never 7 while the QEMU runs.
        (UNKNOWN, True, False, Ocf.DEGRADED),
        (UNKNOWN, True, True, Ocf.DEGRADED),
        (UNKNOWN, False, False, Ocf.NOT_RUNNING),
        (UNKNOWN, False, True, Ocf.NOT_RUNNING),
        # No evidence (remote libvirt, RHV-M): keep a running resource, refuse to guess on
        # a probe.
        (UNKNOWN, None, False, Ocf.DEGRADED),
        (UNKNOWN, None, True, Ocf.ERR_GENERIC),
    ],
)
def test_monitor_exit_codes(
    result: MonitorResult, alive: bool | None, probe: bool, code: Ocf
) -> None:
    assert monitor_code(result, alive, probe=probe) is code


def test_unknown_is_never_not_running_while_qemu_lives() -> None:
    for state, reason in [(3, 5), (1, 11), (3, 0), (0, 0), (99, 0)]:  # I/O error, postcopy...
        result = kvm_state(state, reason)
        if result.state is ResourceState.UNKNOWN:
            for probe in (False, True):
                assert monitor_code(result, True, probe=probe) is not Ocf.NOT_RUNNING


# --- parameters ------------------------------------------------------------------------


def test_every_kvmguest_attribute_is_an_ocf_parameter() -> None:
    attrs = builtin_types()[KVMGUEST].attrs
    covered = {(p.attr, p.key) for p in PARAMS if p.attr}
    for name, adef in attrs.items():
        if adef.static:
            continue
        if adef.dimension is Dimension.ASSOCIATION:
            assert isinstance(adef.default, dict)
            for key in adef.default:
                assert (name, key) in covered, f"{name}.{key} has no OCF parameter"
        else:
            assert (name, None) in covered, f"{name} has no OCF parameter"
    assert len(covered) == sum(
        len(a.default) if isinstance(a.default, dict) else 1 for a in attrs.values() if not a.static
    )


VCS_CLUSTER_ATTRS = {
    "UserNames",
    "Administrators",
    "Operators",
    "ClusterAddress",
    "ClusterUUID",
    "SecureClus",
    "UseFence",
    "CounterInterval",
}
VCS_SYSTEM_ATTRS = {"Capacity", "Limits", "SystemLocation", "UserInt", "UserStr"}


def test_every_kvmguest_cluster_and_system_attribute_is_an_ocf_parameter() -> None:
    # The cluster and system attributes that are kvmguest's own are read by the entry
    # points: a resource run from its parameters alone must be able to set them.
    objects = object_types()
    ours_cluster = set(objects["cluster"].attrs) - VCS_CLUSTER_ATTRS
    ours_system = set(objects["system"].attrs) - VCS_SYSTEM_ATTRS
    assert ours_cluster <= {p.cluster_attr for p in PARAMS if p.cluster_attr}
    assert ours_system <= {p.system_attr for p in PARAMS if p.system_attr}


def test_parameter_defaults_match_the_type() -> None:
    attrs = builtin_types()[KVMGUEST].attrs
    for p in PARAMS:
        if not p.attr:
            continue
        default = attrs[p.attr].default_value()
        raw = default[p.key] if isinstance(default, dict) and p.key else default
        assert isinstance(raw, str)
        assert attr_value(p, p.default) == (raw if raw != "" or not p.key else "NONE"), p.name


def test_booleans_and_value_round_trip() -> None:
    assert ocf_bool("TRUE") is True and ocf_bool("off") is False and ocf_bool("2") is None
    p = BY_NAME["dr_configure_network"]
    assert attr_value(p, "yes") == "1" and ocf_value(p, "1") == "true"
    q = BY_NAME["dr_gateway"]
    assert attr_value(q, "") == "NONE" and ocf_value(q, "NONE") == ""
    with pytest.raises(OcfError) as e:
        attr_value(p, "maybe")
    assert e.value.code is Ocf.ERR_CONFIGURED


def test_flatten_attrs() -> None:
    flat = flatten_attrs(
        {
            "GuestName": "vm1",
            "ResyncVMCfg": "1",
            "DROpts": {"ConfigureNetwork": "1", "IPAddress": "192.0.2.9"},
            "RHEVMInfo": {"URL": "NONE"},
            "MonitorInterval": "10",  # a static: not a parameter
        }
    )
    assert flat == {
        "guest_name": "vm1",
        "resync_vm_cfg": "true",
        "dr_configure_network": "true",
        "dr_ipaddress": "192.0.2.9",
        "rhevm_url": "",
    }


def test_from_environ() -> None:
    env = from_environ(
        {
            "OCF_RESKEY_guest_name": "vm 1",  # values verbatim, spaces kept
            "OCF_RESKEY_crm_feature_set": "3.16.1",
            "OCF_RESKEY_CRM_meta_timeout": "20000",
            "OCF_RESKEY_CRM_meta_interval": "3000",
            "OCF_RESKEY_CRM_meta_on_node": "node1",
            "OCF_RESKEY_CRM_meta_migrate_target": "node2",
            "OCF_CHECK_LEVEL": "10",
            "OCF_RESOURCE_INSTANCE": "r1",
        }
    )
    assert env.params == {"guest_name": "vm 1"}
    assert env.meta == Meta(20000, 3000, "node1", None, "node2")
    assert (env.instance, env.check_level, env.meta.probe) == ("r1", 10, False)
    assert env.get("hypervisor") == "qemu:///system"
    with pytest.raises(OcfError) as e:
        from_environ({"OCF_RESKEY_guestname": "x"})
    assert e.value.code is Ocf.ERR_CONFIGURED and "guest_name" in str(e.value)
    with pytest.raises(OcfError) as e:
        from_environ({"OCF_RESKEY_CRM_meta_timeout": "soon"})
    assert e.value.code is Ocf.ERR_ARGS


def test_monitor_timeout_is_the_types() -> None:
    attrs = effective_attrs(builtin_types()[KVMGUEST])
    assert str(fastmon.MONITOR_TIMEOUT) == attrs["MonitorTimeout"].default


def test_time_budgets() -> None:
    assert fastmon.budget(None, 60) == 60
    assert fastmon.budget(20000, 60) == 18  # 10 % margin
    assert fastmon.budget(300000, 60) == 295  # at most 5 s
    assert fastmon.budget(500, 60) == 1
    assert agent.statics_for("start", None) == {}
    assert agent.statics_for("start", 60000) == {"OnlineTimeout": 55}
    stop = agent.statics_for("stop", 60000)
    assert stop == {"OfflineTimeout": 37, "CleanTimeout": 18}
    assert sum(stop.values()) <= 55
    assert agent.statics_for("migrate_to", 120000) == {"MigrateTimeout": 115}


# --- meta-data -------------------------------------------------------------------------


def test_metadata_advertises_the_types_timeouts() -> None:
    t = Timeouts.from_type()
    assert (t.start, t.stop, t.monitor, t.monitor_interval, t.migrate) == (300, 300, 60, 60, 300)
    xml = render()
    assert '<action name="start" timeout="300s"/>' in xml
    assert '<action name="migrate_from" timeout="300s"/>' in xml
    assert '<action name="monitor" timeout="60s" interval="60s" depth="0"/>' in xml
    for p in PARAMS:
        assert f'<parameter name="{p.name}"' in xml


@pytest.mark.skipif(shutil.which("xmllint") is None or not DTD.exists(), reason="no xmllint/DTD")
def test_metadata_is_valid_against_debians_dtd(tmp_path: Path) -> None:
    (tmp_path / "ra-api-1.dtd").write_bytes(DTD.read_bytes())
    (tmp_path / "md.xml").write_text(render())
    # --valid: through the DOCTYPE, as ocf-tester does it; --dtdvalid: the file directly.
    for args in (["--valid"], ["--dtdvalid", str(DTD)]):
        proc = subprocess.run(
            ["xmllint", "--noout", *args, "md.xml"], cwd=tmp_path, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr


# --- QEMU process evidence -------------------------------------------------------------


def _fake_proc(root: Path, pid: int, argv: list[str], state: str = "S") -> None:
    d = root / str(pid)
    (d / "ns").mkdir(parents=True)
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "stat").write_text(f"{pid} (qemu-system-x86) {state} 1 2 3\n")


QEMU = "/usr/bin/qemu-system-x86_64"


def test_guest_of() -> None:
    assert procs.guest_of([QEMU.encode(), b"-name", b"guest=vm1,debug-threads=on"]) == "vm1"
    assert procs.guest_of([QEMU.encode(), b"-name", b"guest=a,,b,debug-threads=on"]) == "a,b"
    assert procs.guest_of([QEMU.encode(), b"-name", b"old"]) == "old"
    assert procs.guest_of([b"/bin/sleep", b"-name", b"guest=vm1"]) is None
    assert procs.guest_of([QEMU.encode()]) is None


def test_qemu_pid_checks_the_command_line(tmp_path: Path) -> None:
    proc, run = tmp_path / "proc", tmp_path / "run"
    run.mkdir()
    _fake_proc(proc, 100, [QEMU, "-name", "guest=vm1,debug-threads=on"])
    _fake_proc(proc, 200, ["/bin/sleep", "1000"])
    _fake_proc(proc, 300, [QEMU, "-name", "guest=vm3"], state="Z")
    (run / "vm1.pid").write_text("100\n")
    (run / "vm2.pid").write_text("200\n")  # stale: the pid now belongs to sleep
    (run / "vm3.pid").write_text("300\n")  # a zombie is dead
    kw = {"run_dir": str(run), "proc": str(proc)}
    assert procs.qemu_pid("vm1", **kw) == 100
    assert procs.qemu_pid("vm2", **kw) is None
    assert procs.qemu_pid("vm3", **kw) is None
    (run / "vm1.pid").unlink()  # lost pid file: the scan still finds it
    assert procs.qemu_pid("vm1", **kw) == 100
    assert procs.qemu_processes(proc=str(proc)) == {"vm1": 100}
    # By argument, never by substring: guest=web1 is not guest web.
    _fake_proc(proc, 400, [QEMU, "-name", "guest=web1,debug-threads=on"])
    (run / "web.pid").write_text("400\n")
    assert procs.qemu_pid("web", **kw) is None
    assert procs.qemu_pid("web1", **kw) == 400
    (run / "web1.pid").write_text("\u0664\u0660\u0660\n")  # Arabic-Indic digits: not a pid
    assert procs.qemu_pid("web1", **kw) == 400  # found by the scan, not the bad file


def test_only_the_local_system_driver_has_process_evidence() -> None:
    assert procs.is_local("qemu:///system")
    assert not procs.is_local("qemu+unix:///system?socket=/srv/x/libvirt-sock")
    assert not procs.is_local(TEST_URI)
    unknown = MonitorResult(ResourceState.UNKNOWN, 0, "x")
    assert fastmon.evidence(unknown, "vm", TEST_URI) == (None, "")
    assert fastmon.evidence(ONLINE, "vm", "qemu:///system") == (None, "")


# --- resolving the guest ---------------------------------------------------------------


def _env(params: dict[str, str], **meta: object) -> OcfEnv:
    return OcfEnv(params=params, meta=Meta(**meta), instance="res1")  # type: ignore[arg-type]


def test_parameters_alone_describe_the_guest() -> None:
    env = _env(
        {
            "guest_name": "vm1",
            "delay_after_guest_offline": "7",
            "dr_configure_network": "yes",
            "dr_ipaddress": "192.0.2.5",
            "dr_netmask": "24",
            "libvirt_uri_template": "qemu+unix:///system?socket=/srv/%n/sock",
            "migrate_data_uris": "node2=tcp://node2-mig",
            "sites": "node1=east node2=west",
        },
        on_node="node1",
        migrate_target="node2",
        timeout_ms=30000,
    )
    cfg, rid = agent.build_config(env, agent.statics_for("migrate_to", env.meta.timeout_ms))
    loaded = Loaded(cfg)
    p = guest_params(loaded, rid, "node1")
    assert (p.guest_name, p.delay_offline, p.dr_enabled) == ("vm1", 7, True)
    assert p.dr_opts["IPAddress"] == "192.0.2.5" and p.dr_opts["Gateway"] == "NONE"
    assert p.timeout("Migrate") == 27
    target = loaded.system("node2")
    assert target.libvirt_uri == "qemu+unix:///system?socket=/srv/node2/sock"
    assert (target.migrate_data_uri, target.site) == ("tcp://node2-mig", "west")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({}, "guest_name is required"),
        ({"guest_name": "v", "delay_after_guest_online": "soon"}, "integer"),
        ({"guest_name": "v", "rhevm_enabled": "1", "rhevm_url": "http://m"}, "https"),
        ({"guest_name": "v", "sites": "node1"}, "SYSTEM=VALUE"),
        ({"config": "/x/main.cf"}, "together"),
        ({"guest_name": "v\x1b]0;x\x07"}, "control character '\\x1b' is not allowed"),
        ({"guest_name": "v", "delay_after_guest_online": "١٢"}, "digits 0-9"),
    ],
)
def test_invalid_parameters_are_err_configured(params: dict[str, str], needle: str) -> None:
    with pytest.raises(OcfError) as e:
        agent.build_config(_env(params), {})
    assert e.value.code is Ocf.ERR_CONFIGURED
    assert needle in str(e.value)


MAIN_CF = """\
cluster c ( LibvirtURITemplate = "test:///default" )
system hostA ( Site = east )
system hostB ( Site = east )
group g ( SystemList = { hostA = 0, hostB = 1 } )
    KVMGuest vm (
        GuestName = gA
        GuestName@hostB = gB
        DelayAfterGuestOnline = 9
        DROpts@hostA = { ConfigureNetwork = 0, Gateway = "192.0.2.1" }
        )
    KVMGuest other ( GuestName = o )
"""


def test_config_mode_resolves_local_values_and_parameters_override(tmp_path: Path) -> None:
    cfg_file = tmp_path / "main.cf"
    cfg_file.write_text(MAIN_CF)
    base = {"config": str(cfg_file), "resource": "vm"}
    cfg, rid = agent.build_config(_env(base), {})
    assert guest_params(Loaded(cfg), rid, "hostB").guest_name == "gB"
    assert guest_params(Loaded(cfg), rid, "hostA").guest_name == "gA"
    params = {**base, "guest_name": "gX", "dr_netmask": "24"}
    cfg, rid = agent.build_config(_env(params), {"OnlineTimeout": 12})
    pa = guest_params(Loaded(cfg), rid, "hostA")
    assert pa.guest_name == "gX"  # the parameter wins over GuestName@hostB too
    assert guest_params(Loaded(cfg), rid, "hostB").guest_name == "gX"
    assert pa.dr_opts["Gateway"] == "192.0.2.1" and pa.dr_opts["Netmask"] == "24"
    assert (pa.delay_online, pa.timeout("Online")) == (9, 12)


def test_config_mode_errors(tmp_path: Path) -> None:
    cfg_file = tmp_path / "main.cf"
    with pytest.raises(agent.ConfigUnreadable) as unreadable:
        agent.build_config(_env({"config": str(cfg_file), "resource": "vm"}), {})
    assert unreadable.value.code is Ocf.ERR_ARGS  # valid elsewhere, not on this node
    cfg_file.write_text(MAIN_CF)
    with pytest.raises(OcfError) as missing:
        agent.build_config(_env({"config": str(cfg_file), "resource": "nope"}), {})
    assert missing.value.code is Ocf.ERR_CONFIGURED
    cfg_file.write_text(MAIN_CF.replace("DelayAfterGuestOnline = 9", "DelayAfterGuestOnline = x"))
    with pytest.raises(OcfError) as invalid:
        agent.build_config(_env({"config": str(cfg_file), "resource": "vm"}), {})
    assert invalid.value.code is Ocf.ERR_CONFIGURED
    assert f"{cfg_file}:" in str(invalid.value)  # file:line:col


# --- actions on test:///default --------------------------------------------------------


def run_agent(action: str, environ: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main([action], environ)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def test_domain() -> Iterator[libvirt.virDomain]:
    """test:///default's own running domain "test" (shared state within this process)."""
    conn = libvirt.open(TEST_URI)
    dom = conn.lookupByName("test")
    yield dom
    state = dom.state()[0]
    if state == libvirt.VIR_DOMAIN_PAUSED:
        dom.resume()
    elif state != libvirt.VIR_DOMAIN_RUNNING:
        dom.create()


BASE = {"OCF_RESKEY_hypervisor": TEST_URI, "OCF_RESOURCE_INSTANCE": "t1"}


def test_usage_and_unimplemented_actions() -> None:
    assert run_agent("notify", BASE)[0] == Ocf.ERR_UNIMPLEMENTED
    assert run_agent("promote", BASE)[0] == Ocf.ERR_UNIMPLEMENTED
    assert main([], BASE) == Ocf.ERR_ARGS
    rc, out, _ = run_agent("meta-data", {})
    assert rc == 0 and out.startswith("<?xml")


def test_lean_and_full_monitor_agree(test_domain: libvirt.virDomain) -> None:
    env = {**BASE, "OCF_RESKEY_guest_name": "test"}
    full = LibvirtKVM(TEST_URI, events=False)
    try:
        for change in (None, "suspend", "destroy"):
            if change == "suspend":
                test_domain.suspend()
            elif change == "destroy":
                test_domain.resume()
                test_domain.destroy()
            oenv = from_environ(env)
            assert fastmon.applies(oenv)
            lean_code, _ = fastmon.monitor(oenv)
            resolved = agent.resolve(oenv, "monitor")
            full_code, _ = agent.monitor(resolved, oenv)
            assert lean_code == full_code
            from kvmguest.deadline import Deadline

            lean = fastmon.probe("test", TEST_URI, Deadline(10))
            assert lean == full.probe(resolved.ctx.params, Deadline(10))
    finally:
        full.close()


def test_agent_monitor_exit_codes_on_test_driver(test_domain: libvirt.virDomain) -> None:
    env = {**BASE, "OCF_RESKEY_guest_name": "test"}
    assert run_agent("monitor", env)[0] == Ocf.SUCCESS
    rc, _, err = run_agent("monitor", {**BASE, "OCF_RESKEY_guest_name": "nosuch"})
    assert rc == Ocf.NOT_RUNNING and "ocf-exit-reason:nosuch OFFLINE" in err
    rc, _, err = run_agent("monitor", {**env, "OCF_RESKEY_guestname": "x"})
    assert rc == Ocf.ERR_CONFIGURED and "ocf-exit-reason:unknown parameter" in err
    # CEInfo takes the full path (the heartbeat); the answer is the same for a live peer.
    ce = {**env, "OCF_RESKEY_ce_enabled": "1", "OCF_RESKEY_ce_system": "peer",
          "OCF_RESKEY_libvirt_uri_template": TEST_URI}  # fmt: skip
    assert not fastmon.applies(from_environ(ce))
    assert run_agent("monitor", ce)[0] == Ocf.SUCCESS
    dead_peer = {**ce, "OCF_RESKEY_libvirt_uri_template": "qemu+unix:///system?socket=/nonexistent"}
    assert run_agent("monitor", dead_peer)[0] == Ocf.NOT_RUNNING  # FaultOnHBLoss=1
    lenient = {**dead_peer, "OCF_RESKEY_ce_fault_on_hb_loss": "false"}
    # FaultOnHBLoss=0: UNKNOWN; test:/// has no process evidence, so a recurring monitor
    # keeps the resource (degraded) and a probe refuses to guess.
    assert run_agent("monitor", {**lenient, "OCF_RESKEY_CRM_meta_interval": "5000"})[0] == 190
    assert run_agent("monitor", lenient)[0] == Ocf.ERR_GENERIC


def test_start_stop_migrate_from_on_test_driver(test_domain: libvirt.virDomain) -> None:
    env = {**BASE, "OCF_RESKEY_guest_name": "test", "OCF_RESKEY_delay_after_guest_offline": "1"}
    rc, out, _ = run_agent("start", env)
    assert rc == 0 and "already online" in out
    assert run_agent("migrate_from", env)[0] == 0
    rc, _, err = run_agent("migrate_to", env)
    assert rc == Ocf.ERR_ARGS and "migrate_target" in err
    rc, out, _ = run_agent("stop", env)
    assert rc == 0, out
    assert test_domain.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert run_agent("monitor", env)[0] == Ocf.NOT_RUNNING
    assert run_agent("stop", env)[0] == 0  # stopping a stopped guest succeeds
    assert run_agent("validate-all", env)[0] == 0
    assert run_agent("reload-agent", env)[0] == 0
    rc, out, _ = run_agent("start", env)
    assert rc == 0 and test_domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING


def test_files_missing_on_this_node_are_err_args(tmp_path: Path) -> None:
    env = {**BASE, "OCF_RESKEY_guest_name": "test",
           "OCF_RESKEY_guest_config_file_path": str(tmp_path / "absent.xml")}  # fmt: skip
    rc, _, err = run_agent("validate-all", env)
    assert rc == Ocf.ERR_ARGS and "not readable on this node" in err
    rc, _, _ = run_agent("start", env)
    assert rc == Ocf.ERR_ARGS


def test_unreadable_config_never_says_not_running_when_it_cannot_know(
    tmp_path: Path, test_domain: libvirt.virDomain
) -> None:
    """A probe on a node whose main.cf is on storage that is not mounted (VirtualDomain
    says "not running" there, and Pacemaker starts the guest a second time)."""
    rsctmp = tmp_path / "rsctmp"
    cfg_file = tmp_path / "main.cf"
    cfg_file.write_text(MAIN_CF.replace("GuestName = gA", "GuestName = test"))
    env = {
        **BASE,
        "HA_RSCTMP": str(rsctmp),
        "OCF_RESKEY_config": str(cfg_file),
        "OCF_RESKEY_resource": "vm",
        "OCF_RESKEY_CRM_meta_on_node": "hostA",
    }
    assert run_agent("monitor", env)[0] == Ocf.SUCCESS  # remembers the guest name
    cfg_file.unlink()  # the shared storage goes away
    rc, _, err = run_agent("monitor", env)
    assert rc == Ocf.SUCCESS, err  # by the last known name: it runs
    for memo in rsctmp.iterdir():
        memo.unlink()
    rc, _, err = run_agent("monitor", env)
    # Nothing known, and guests run here: an error, never "not running".
    assert rc == Ocf.ERR_GENERIC and "guest name is unknown" in err
    rc, _, err = run_agent("monitor", {**env, "OCF_RESKEY_guest_name": "test"})
    assert rc == Ocf.SUCCESS, err
    assert run_agent("start", env)[0] == Ocf.ERR_ARGS  # hard error: try another node


def test_lean_monitor_imports_neither_click_nor_lark() -> None:
    code = (
        "import sys\n"
        "from kvmguest.ocf.main import main\n"
        "rc = main(['monitor'])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'lark')\n"
        "             or m in ('kvmguest.model.parser', 'kvmguest.agents.kvmguest.params',\n"
        "                      'kvmguest.agents.kvmguest.entrypoints', 'dataclasses_json'))\n"
        "print(rc, bad)\n"
    )
    env = {**os.environ, **BASE, "OCF_RESKEY_guest_name": "test"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.stdout.strip() == "0 []", proc.stdout + proc.stderr
