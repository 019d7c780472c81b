"""``kvmguest export pacemaker``: the pure export, and its output checked by Pacemaker's own
tools on an offline CIB (``CIB_file``): cibadmin loads it, crm_verify accepts it, crmsh (when
installed) loads the crm form."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import unavailable

from kvmguest.agents.loader import validate
from kvmguest.model.config import Config
from kvmguest.model.parser import load
from kvmguest.ocf.export import Export, export, render_crm, render_xml

REPO = Path(__file__).resolve().parents[2]

FULL_CF = """\
cluster prod (
    LibvirtURITemplate = "qemu+tls://{system}.example.com/system"
    MigrateDataURITemplate = "tcp://{system}-mig"
    UseFence = SCSI3
    )
system kvm1 ( Site = east )
system kvm2 ( Site = east
    LibvirtURI = "qemu+ssh://kvm2-admin/system" )
system kvm3 ( Site = west
    Capacity = 200 )
group web (
    SystemList = { kvm1 = 0, kvm2 = 1, kvm3 = 2 }
    AutoStartList = { kvm1 }
    Parallel = 0
    OnlineRetryLimit = 3
    )
    KVMGuest web1 (
        GuestName = web1
        GuestConfigFilePath = "/shared/web1.xml"
        SyncDir@kvm1 = "/shared/sync"
        DROpts = { ConfigureNetwork = 1, IPAddress = "192.0.2.10", Netmask = 24 }
        DROpts@kvm3 = { ConfigureNetwork = 1, IPAddress = "198.51.100.10", Netmask = 24 }
        MonitorInterval = 10
        MonitorTimeout = 20
        RestartLimit = 2
        ToleranceLimit = 1
        LevelTwoMonitorFreq = 6
        )
    KVMGuest web2 (
        GuestName = web2
        DelayAfterGuestOffline = 120
        CEInfo = { Enabled = 1, CESystem = kvm3, FaultOnHBLoss = 0 }
        )
    web2 requires web1
group db (
    SystemList = { kvm2 = 0, kvm1 = 0 }
    Frozen = 1
    ManageFaults = NONE
    )
    KVMGuest db1 ( GuestName = db1 )
    requires group web online local soft
"""


@pytest.fixture
def full(tmp_path: Path) -> tuple[Config, Export]:
    path = tmp_path / "main.cf"
    path.write_text(FULL_CF)
    cfg, diags = load(path)
    assert not diags and not validate(cfg), diags or validate(cfg)
    return cfg, export(cfg)


def test_primitive_parameters_ops_and_meta(full: tuple[Config, Export]) -> None:
    _, e = full
    web1 = next(p for p in e.primitives if p.id == "web1")
    base = web1.params[0].values
    assert base["guest_name"] == "web1"
    assert base["dr_configure_network"] == "true" and base["dr_netmask"] == "24"
    assert base["libvirt_uri_template"] == "qemu+tls://{system}.example.com/system"
    assert base["libvirt_uris"] == "kvm2=qemu+ssh://kvm2-admin/system"
    assert base["sites"] == "kvm1=east kvm2=east kvm3=west"
    by_node = {ps.node: ps for ps in web1.params[1:]}
    assert by_node["kvm1"].values == {"sync_dir": "/shared/sync"} and by_node["kvm1"].score == 2
    # The local DROpts replaces the whole association on kvm3: only what differs is set.
    assert by_node["kvm3"].values == {"dr_ipaddress": "198.51.100.10"}
    assert web1.meta == {"migration-threshold": "3", "allow-migrate": "true"}
    ops = {(o.name, o.interval, o.role, o.check_level): o.timeout for o in web1.ops}
    assert ops == {
        ("start", 0, None, None): 300,
        ("stop", 0, None, None): 300,
        ("monitor", 10, None, None): 20,
        ("monitor", 300, "Stopped", None): 20,
        ("monitor", 60, None, 10): 20,  # LevelTwoMonitorFreq 6 x MonitorInterval 10
        ("migrate_to", 0, None, None): 300,
        ("migrate_from", 0, None, None): 300,
    }
    web2 = next(p for p in e.primitives if p.id == "web2")
    assert web2.params[0].values["ce_enabled"] == "true"
    assert web2.params[0].values["ce_fault_on_hb_loss"] == "false"
    assert web2.params[0].values["delay_after_guest_offline"] == "120"
    assert web2.meta["migration-threshold"] == "1"  # RestartLimit 0: fail over at once


def test_groups_locations_and_dependencies(full: tuple[Config, Export]) -> None:
    _, e = full
    (web,) = e.groups
    assert web.members == ["web1", "web2"]  # web2 requires web1: web1 first
    assert web.meta["target-role"] == "Started"
    scores = {loc.node: int(loc.score) for loc in e.locations if loc.rsc == "web" and loc.node}
    assert scores == {"kvm1": 300, "kvm2": 200, "kvm3": 100}  # lower priority, higher score
    assert int(web.meta["resource-stickiness"]) > scores["kvm1"] - scores["kvm3"]  # no failback
    (fence,) = [loc for loc in e.locations if loc.rsc == "web" and loc.not_on]
    assert fence.score == "-INFINITY" and fence.not_on == ["kvm1", "kvm2", "kvm3"]
    # db: a lone resource stays a primitive with the group's meta; equal priorities tie.
    db1 = next(p for p in e.primitives if p.id == "db1")
    assert db1.meta["target-role"] == "Stopped"  # no AutoStartList
    assert db1.meta["is-managed"] == "false"  # Frozen
    assert db1.meta["resource-stickiness"] == "200"  # no rebalancing either
    monitors = [o for o in db1.ops if o.name == "monitor" and o.role is None]
    assert {o.on_fail for o in monitors} == {"block"}  # ManageFaults = NONE
    assert {loc.score for loc in e.locations if loc.rsc == "db1" and loc.node} == {"100"}
    (order,) = e.orders
    assert (order.first, order.then, order.kind) == ("web", "db1", "Optional")  # soft
    (coloc,) = e.colocations
    assert (coloc.rsc, coloc.with_rsc, coloc.score) == ("db1", "web", "INFINITY")


def test_what_cannot_be_expressed_is_reported(full: tuple[Config, Export]) -> None:
    _, e = full
    notes = "\n".join(e.notes)
    for needle in (
        "not exported: resource web1: ToleranceLimit = 1",
        "not exported: group web: OnlineRetryLimit = 3",
        "not exported: cluster prod: UseFence = SCSI3",
        "not exported: system kvm3: Capacity = 200",
        "approximated: requires group web online local soft",
    ):
        assert needle in notes
    assert "Parallel" not in notes  # Parallel = 0 is the failover group that is exported


def test_every_written_attribute_is_exported_or_reported(full: tuple[Config, Export]) -> None:
    cfg, e = full
    text = render_crm(e) + render_xml(e) + "\n".join(e.notes)
    statics_as_ops = {
        "MonitorInterval": "interval=10s",
        "MonitorTimeout": "timeout=20s",
        "RestartLimit": "migration-threshold=3",
        "LevelTwoMonitorFreq": "OCF_CHECK_LEVEL=10",
        "SystemList": "web-on-kvm3",
        "AutoStartList": "target-role=Started",
        "Frozen": "is-managed=false",
        "ManageFaults": "on-fail=block",
    }
    blocks = [*cfg.resources.values(), *cfg.groups.values(), *cfg.systems.values()]
    blocks += [cfg.cluster] if cfg.cluster else []
    for block in blocks:
        for attr in block.attrs.keys() | block.local.keys():
            if attr in statics_as_ops:
                assert statics_as_ops[attr] in text, attr
                continue
            value = block.attrs.get(attr) or next(iter(block.local[attr].values()))
            if attr == "Parallel" and value == "0":
                continue
            if isinstance(value, dict):
                shown = next(iter(value.values()))
            elif isinstance(value, list):
                shown = value[0]
            else:
                shown = value
            assert attr in text or str(shown) in text, f"{block.name}: {attr} silently dropped"


def test_non_kvmguest_resources_and_their_links_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "main.cf"
    path.write_text(
        'include "types.cf"\n'
        "group g ( SystemList = { a = 0 } AutoStartList = { a } )\n"
        "    NIC m ( Device = eth0 )\n"
        "    KVMGuest vm ( GuestName = vm )\n"
        "    vm requires m\n"
    )
    (tmp_path / "types.cf").write_text("type NIC ( str Device )\n")
    cfg, diags = load(path)
    assert not diags, diags
    e = export(cfg)
    assert [p.id for p in e.primitives] == ["vm"]
    assert any("resource m of type NIC" in n for n in e.notes)
    assert any("vm requires m" in n for n in e.notes)


def test_crm_rendering(full: tuple[Config, Export]) -> None:
    _, e = full
    crm = render_crm(e)
    assert "primitive web1 ocf:kvmguest:KVMGuest" in crm
    assert "params 2: rule #uname eq kvm1 sync_dir=/shared/sync" in crm
    assert "group web web1 web2" in crm
    assert "location web-only-systemlist web rule -inf: #uname ne kvm1 and #uname ne kvm2" in crm
    assert "order db1-online-local-web-order Optional: web db1" in crm
    assert re.search(r"op monitor interval=60s timeout=20s OCF_CHECK_LEVEL=10", crm)


# --- Pacemaker's own tools on an offline CIB ---------------------------------------------

PCMK_TOOLS = ("cibadmin", "crm_verify", "crm_attribute")


def _offline_cib(tmp_path: Path, nodes: list[str]) -> dict[str, str]:
    cib = tmp_path / "cib.xml"
    cib.write_text(subprocess.run(["cibadmin", "--empty"], capture_output=True, text=True,
                                  check=True).stdout)  # fmt: skip
    env = {**os.environ, "CIB_file": str(cib)}
    subprocess.run(
        ["crm_attribute", "--type", "crm_config", "--name", "stonith-enabled", "--update",
         "false"], env=env, check=True, capture_output=True,
    )  # fmt: skip
    for i, node in enumerate(nodes, 1):
        subprocess.run(
            ["cibadmin", "--create", "--scope", "nodes", "--xml-text",
             f'<node id="{i}" uname="{node}"/>'], env=env, check=True, capture_output=True,
        )  # fmt: skip
    return env


def _cli_export(tmp_path: Path, fmt: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "main.cf"
    path.write_text(FULL_CF)
    return subprocess.run(
        [sys.executable, "-m", "kvmguest", "export", "pacemaker", "-c", str(path),
         "--format", fmt], capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        unavailable("not installed: " + ", ".join(missing))


def test_exported_xml_loads_with_cibadmin_and_passes_crm_verify(tmp_path: Path) -> None:
    _require_tools(*PCMK_TOOLS)
    proc = _cli_export(tmp_path, "xml")
    assert proc.returncode == 0, proc.stderr
    assert "not exported: resource web1: ToleranceLimit = 1" in proc.stderr
    ET.fromstring(proc.stdout.split("-->", 1)[1])  # well-formed after the comment
    out = tmp_path / "export.xml"
    out.write_text(proc.stdout)
    env = _offline_cib(tmp_path, ["kvm1", "kvm2", "kvm3"])
    load = subprocess.run(
        ["cibadmin", "--modify", "--allow-create", "--scope", "configuration",
         "--xml-file", str(out)], env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert load.returncode == 0, load.stderr
    verify = subprocess.run(
        ["crm_verify", "--xml-file", env["CIB_file"]], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    query = subprocess.run(
        ["cibadmin", "--query", "--scope", "resources"], env=env, capture_output=True, text=True
    )
    root = ET.fromstring(query.stdout)
    assert [g.get("id") for g in root.iter("group")] == ["web"]
    assert {p.get("id") for p in root.iter("primitive")} == {"web1", "web2", "db1"}


def test_exported_crm_loads_with_crmsh(tmp_path: Path, ocf_agent: Path) -> None:
    # crmsh checks every parameter against the installed agent's meta-data: ocf_agent.
    _require_tools(*PCMK_TOOLS, "crm")
    proc = _cli_export(tmp_path, "crm")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "export.crm"
    out.write_text(proc.stdout)
    env = _offline_cib(tmp_path, ["kvm1", "kvm2", "kvm3"])
    load = subprocess.run(
        ["crm", "configure", "load", "update", str(out)], env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert load.returncode == 0, load.stdout + load.stderr
    verify = subprocess.run(
        ["crm_verify", "--xml-file", env["CIB_file"]], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    shown = subprocess.run(
        ["cibadmin", "--query", "--scope", "configuration"], env=env, capture_output=True,
        text=True,
    ).stdout  # fmt: skip
    root = ET.fromstring(shown)
    web1 = next(p for p in root.iter("primitive") if p.get("id") == "web1")
    rules = [e.get("value") for e in web1.iter("expression")]
    assert rules == ["kvm1", "kvm3"]  # the local values' node rules survived crmsh


ENGINE_CF = """\
cluster c ( )
system n1 ( )
system n2 ( )
group engine (
    SystemList = { n1 = 0, n2 = 0 }
    AutoStartList = { n1, n2 }
    Parallel = 1
    )
    DockerDaemon podman (
        Engine = podman
        DockerHost@n1 = "unix:///srv/n1/podman.sock"
        DockerHost@n2 = "unix:///srv/n2/podman.sock"
        )
group app (
    SystemList = { n1 = 0, n2 = 1 }
    AutoStartList = { n1 }
    )
    DockerContainer web (
        ContainerName = web
        Image = "busybox:test"
        Engine = podman
        Volumes = { "/srv/shared/web:/data" }
        )
    requires group engine online local firm
"""


def test_parallel_group_exports_as_a_clone_that_containers_follow(tmp_path: Path) -> None:
    path = tmp_path / "main.cf"
    path.write_text(ENGINE_CF)
    cfg, diags = load(path)
    assert not diags, diags
    e = export(cfg)
    assert not [n for n in e.notes if "Parallel" in n], e.notes
    crm = render_crm(e)
    assert "clone podman-clone podman" in crm
    assert "order web-online-local-podman-clone-order Mandatory: podman-clone web" in crm
    assert "colocation web-online-local-podman-clone-colocation inf: web podman-clone" in crm
    assert "location podman-clone-on-n2 podman-clone 100: n2" in crm
    _require_tools(*PCMK_TOOLS)
    out = tmp_path / "export.xml"
    out.write_text(render_xml(e))
    env = _offline_cib(tmp_path, ["n1", "n2"])
    loaded = subprocess.run(
        ["cibadmin", "--modify", "--allow-create", "--scope", "configuration",
         "--xml-file", str(out)], env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    verify = subprocess.run(["crm_verify", "--xml-file", env["CIB_file"]], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    query = subprocess.run(["cibadmin", "--query", "--scope", "resources"], env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    clone = ET.fromstring(query.stdout).find("./clone")
    assert clone is not None and clone.get("id") == "podman-clone"
    assert [p.get("id") for p in clone.iter("primitive")] == ["podman"]
