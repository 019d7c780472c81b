"""What the Debian package may lack, and what a terminal shows: the oVirt SDK (RHEV
resources fail validation, KVM ones do not care), prometheus-client (metrics refused with
the package to install, the agent otherwise unaffected), and online's progress through
rich on a terminal only."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

from tests.libvirt.conftest import guest_xml

URI = "test:///default"


def run_without(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """kvmguest as a user runs it, with ``module`` impossible to import."""
    code = f"import sys; sys.modules[{module!r}] = None; from kvmguest.cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
        cwd=cwd, env={**os.environ, "KVMGUEST_SYSTEM": "sys1", "KVMGUEST_LIBVIRT_URI": URI},
    )  # fmt: skip


RHEV = """\
cluster c ( )
system sys1 ( )
group g ( SystemList = { sys1 = 0 } )
    KVMGuest kvm1 ( GuestName = test )
    KVMGuest rhev1 (
        GuestName = vm1
        RHEVMInfo = { Enabled = 1, URL = "https://rhvm.example.com", User = "admin@internal",
                      Password = "x", Cluster = Default }
        )
"""


def test_rhev_resources_need_the_ovirt_sdk(tmp_path: Path) -> None:
    cfg = tmp_path / "main.cf"
    cfg.write_text(RHEV)
    proc = run_without("ovirtsdk4", ["validate", "-c", str(cfg)], tmp_path)
    assert proc.returncode == 1
    assert "RHEVMInfo.Enabled = 1 needs the oVirt SDK: install ovirt-engine-sdk-python" in (
        proc.stderr
    )
    assert "main.cf:7:9: KVMGuest rhev1: RHEVMInfo" in proc.stderr  # where: its RHEVMInfo
    cfg.write_text(RHEV.split("    KVMGuest rhev1")[0])
    assert run_without("ovirtsdk4", ["validate", "-c", str(cfg)], tmp_path).returncode == 0


def test_metrics_without_prometheus_client(tmp_path: Path) -> None:
    cfg = tmp_path / "main.cf"
    cfg.write_text(RHEV.split("    KVMGuest rhev1")[0])
    args = ["agent", "-c", str(cfg), "--socket", str(tmp_path / "s"), "--db",
            str(tmp_path / "db"), "--metrics-port", "9"]  # fmt: skip
    proc = run_without("prometheus_client", args, tmp_path)
    assert proc.returncode == 78
    assert "install prometheus-client (python3-prometheus-client)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "s").exists()  # refused before anything started
    # Without --metrics-port the daemon does not need it: --check loads the same modules.
    check = run_without("prometheus_client", ["agent", "-c", str(cfg), "--check"], tmp_path)
    assert check.returncode == 0, check.stderr


def test_online_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    xml = tmp_path / "pg1.xml"
    xml.write_text(guest_xml("pg1"))
    cfg = tmp_path / "main.cf"
    cfg.write_text(
        "cluster c ( )\nsystem sys1 ( )\ngroup g ( SystemList = { sys1 = 0 } )\n"
        f'KVMGuest pg1 ( GuestName = pg1\n GuestConfigFilePath = "{xml}" )\n'
    )
    args = [sys.executable, "-m", "kvmguest", "online", "pg1", "-c", str(cfg),
            "--system", "sys1", "--connect", URI]  # fmt: skip
    # stderr a terminal: rich draws the progress there.
    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the command exited
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(leader)
    assert proc.returncode == 0, seen
    assert "pg1 online" in out
    # rich renders the latest step; its last one is always drawn when it stops.
    assert b"pg1: started, waiting up to 5 s for it to run" in seen
    # Not a terminal: no progress, no escape codes.
    plain = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0
    assert "starting" not in plain.stderr and "\x1b" not in plain.stderr + plain.stdout


def test_ocf_install_writes_units_for_this_kvmguest(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "kvmguest", "ocf", "install", "--dir", str(tmp_path / "ocf"),
            "--units-dir", str(tmp_path / "units")]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ocf" / "KVMGuest").exists()
    unit = (tmp_path / "units" / "kvmguest-agent.service").read_text()
    # The kvmguest that ran the command, not the package's /usr/bin/kvmguest.
    assert f"ExecStart={sys.executable} -m kvmguest agent -c /etc/kvmguest/main.cf" in unit
    assert "ConditionPathExists=/etc/kvmguest/main.cf" in unit
    assert f"wrote {tmp_path / 'units' / 'kvmguest-agent.service'}" in proc.stdout


def test_dpkg_owner() -> None:
    import shutil

    from kvmguest.ocf.install import dpkg_owner

    if shutil.which("dpkg-query") is None:
        return  # not a Debian system: nothing is owned
    assert dpkg_owner(Path(shutil.which("dpkg-query") or "")) == "dpkg"
    assert dpkg_owner(Path("/nonexistent/KVMGuest")) is None
