"""``kvmguest export pacemaker`` of a VCS main.cf: Mount and IP as their resource-agents
peers, the other bundled types listed as not exported, Critical and Enabled; the realistic
fixture (tests/data/vcs) checked by crm_verify on an offline CIB."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import unavailable

from kvmguest.agents.loader import validate
from kvmguest.model.config import errors_of
from kvmguest.model.parser import load
from kvmguest.ocf.export import Export, Primitive, export, render_crm, render_xml

VCS = Path(__file__).resolve().parents[1] / "data" / "vcs"

TYPES = """\
type Mount ( str MountPoint
    str BlockDevice
    str FSType
    str MountOpt
    str FsckOpt )
type IP ( str Device
    str Address
    str NetMask )
type NIC ( str Device )
"""


def exported(tmp_path: Path, resources: str) -> Export:
    (tmp_path / "types.cf").write_text(TYPES)
    path = tmp_path / "main.cf"
    path.write_text(
        'include "types.cf"\nsystem a ( )\nsystem b ( )\n'
        "group g ( SystemList = { a = 0, b = 1 } AutoStartList = { a } )\n" + resources
    )
    cfg, diags = load(path)
    assert not errors_of(diags or validate(cfg)), diags
    return export(cfg)


def prim(e: Export, name: str) -> Primitive:
    return next(p for p in e.primitives if p.id == name)


def test_mount_is_exported_as_ocf_heartbeat_filesystem(tmp_path: Path) -> None:
    e = exported(tmp_path, "    Mount fs ( MountPoint = /srv BlockDevice = /dev/vg/lv FSType = xfs "
                           "MountOpt = noatime FsckOpt = -y )\n")  # fmt: skip
    fs = prim(e, "fs")
    assert (fs.provider, fs.kind) == (("ocf", "heartbeat"), "Filesystem")
    assert fs.params[0].values == {"directory": "/srv", "device": "/dev/vg/lv",
                                   "fstype": "xfs", "options": "noatime"}  # fmt: skip
    assert "primitive fs ocf:heartbeat:Filesystem" in render_crm(e)
    assert 'class="ocf" provider="heartbeat" type="Filesystem"' in render_xml(e)
    assert "not exported: resource fs: FsckOpt = -y (no ocf:heartbeat:Filesystem parameter)" in (
        e.notes
    )


def test_ip_is_exported_as_ocf_heartbeat_ipaddr2(tmp_path: Path) -> None:
    e = exported(tmp_path, "    IP vip ( Device = eth0 Address = 192.0.2.5 "
                           "NetMask = 255.255.255.0 )\n")  # fmt: skip
    vip = prim(e, "vip")
    assert (vip.provider, vip.kind) == (("ocf", "heartbeat"), "IPaddr2")
    assert vip.params[0].values == {"nic": "eth0", "ip": "192.0.2.5", "cidr_netmask": "24"}


def test_mapped_resources_keep_the_requires_order_and_others_are_not_exported(
    tmp_path: Path,
) -> None:
    e = exported(tmp_path, "    KVMGuest vm ( GuestName = vm )\n"
                           "    IP vip ( Device = eth0 Address = 192.0.2.5 )\n"
                           "    NIC nic ( Device = eth0 )\n"
                           "    Mount fs ( MountPoint = /srv BlockDevice = /dev/x FSType = xfs )\n"
                           "    vm requires vip\n    vm requires fs\n"
                           "    vip requires nic\n")  # fmt: skip
    assert [g.members for g in e.groups] == [["vip", "fs", "vm"]]
    assert any("resource nic of type NIC in group g" in n for n in e.notes)
    assert "not exported: vip requires nic (nic is not exported)" in e.notes


def test_a_non_critical_resource_is_stopped_where_it_runs_on_failure(tmp_path: Path) -> None:
    e = exported(tmp_path, "    KVMGuest vm ( GuestName = vm )\n"
                           "    KVMGuest side ( GuestName = side\n Critical = 0 )\n"
                           "    Mount fs ( MountPoint = /srv BlockDevice = /dev/x FSType = xfs\n"
                           "        Critical = 0 )\n"
                           "    vm requires fs\n")  # fmt: skip

    def on_fail(name: str) -> set[str | None]:
        return {op.on_fail for op in prim(e, name).ops if op.name == "monitor" and not op.role}

    assert on_fail("side") == {"stop"}  # nothing critical requires it: the group stays
    assert on_fail("fs") == {None}  # vm (critical) requires it: the group fails over
    assert on_fail("vm") == {None}
    assert "on-fail=stop" in render_crm(e)


def test_a_disabled_resource_is_not_exported(tmp_path: Path) -> None:
    e = exported(tmp_path, "    KVMGuest vm ( GuestName = vm )\n"
                           "    KVMGuest old ( GuestName = old\n Enabled = 0 )\n")  # fmt: skip
    assert [p.id for p in e.primitives] == ["vm"]
    assert "not exported: resource old: Enabled = 0 (not managed, as in VCS)" in e.notes


def test_realistic_vcs_main_cf_exports_and_passes_crm_verify(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kvmguest", "export", "pacemaker", "-c", str(VCS / "main.cf"),
         "--format", "xml"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cfg, _ = load(VCS / "main.cf")
    e = export(cfg)
    assert [(g.id, g.members) for g in e.groups] == [("appsg", ["appfs", "appip", "appvm"])]
    assert {p.id: p.kind for p in e.primitives} == {
        "appfs": "Filesystem", "appip": "IPaddr2", "appvm": "KVMGuest", "webvm": "KVMGuest",
    }  # fmt: skip
    assert "not exported: resource appnic of type NIC" in proc.stderr
    # VCS's UserNames holds its users' encrypted passwords: named, never printed.
    assert "UserNames = { admin = ... }" in proc.stderr and "dKLdKFkHLgLLjTLfKI" not in proc.stderr
    missing = [t for t in ("cibadmin", "crm_verify", "crm_attribute") if not shutil.which(t)]
    if missing:
        unavailable("not installed: " + ", ".join(missing))
    cib = tmp_path / "cib.xml"
    cib.write_text(subprocess.run(["cibadmin", "--empty"], capture_output=True, text=True,
                                  check=True).stdout)  # fmt: skip
    env = {**os.environ, "CIB_file": str(cib)}
    subprocess.run(["crm_attribute", "--type", "crm_config", "--name", "stonith-enabled",
                    "--update", "false"], env=env, check=True, capture_output=True)  # fmt: skip
    for i, node in enumerate(("hostA", "hostB"), 1):
        subprocess.run(["cibadmin", "--create", "--scope", "nodes", "--xml-text",
                        f'<node id="{i}" uname="{node}"/>'], env=env, check=True,
                       capture_output=True)  # fmt: skip
    out = tmp_path / "export.xml"
    out.write_text(proc.stdout)
    loaded = subprocess.run(["cibadmin", "--modify", "--allow-create", "--scope",
                             "configuration", "--xml-file", str(out)], env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    verify = subprocess.run(["crm_verify", "--xml-file", str(cib)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
