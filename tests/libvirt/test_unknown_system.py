"""A system that main.cf does not declare: an error for the entry points, the daemon and
the OCF agent reading main.cf, never a silent "runs no group"; the OCF agent run from
parameters alone (no main.cf, so no declared systems) is exempt."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from kvmguest.agents.ocf_interface import Ocf
from kvmguest.ocf.main import main as ocf_main

URI = "test:///default"
MAIN_CF = """\
cluster c ( LibvirtURITemplate = "test:///default" )
system n1 ( )
system n2 ( )
group g ( SystemList = { n1 = 0, n2 = 1 } )
    KVMGuest r ( GuestName = test )
"""
WHY = "system 'n9' is not declared (systems: n1, n2)"


def kvmguest(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KVMGUEST_LIBVIRT_URI": URI}
    env.pop("KVMGUEST_SYSTEM", None)
    return subprocess.run([sys.executable, "-m", "kvmguest", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_entry_point_on_an_undeclared_system_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "main.cf"
    cfg.write_text(MAIN_CF)
    proc = kvmguest(["-c", str(cfg), "--system", "n9", "online", "r"], tmp_path)
    assert proc.returncode == 1 and WHY in proc.stderr
    ok = kvmguest(["-c", str(cfg), "--system", "n1", "monitor", "r"], tmp_path)
    assert ok.returncode == 110, ok.stderr  # the same config on a declared system runs


def test_agent_check_on_an_undeclared_system_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "main.cf"
    cfg.write_text(MAIN_CF)
    proc = kvmguest(["-c", str(cfg), "--system", "n9", "agent", "--check"], tmp_path)
    assert proc.returncode == 1 and WHY in proc.stderr and "runs group" not in proc.stdout


def test_daemon_on_an_undeclared_system_does_not_start(tmp_path: Path) -> None:
    cfg = tmp_path / "main.cf"
    cfg.write_text(MAIN_CF)
    sock = tmp_path / "agent.sock"
    args = ["-c", str(cfg), "--system", "n9", "agent", "--socket", str(sock),
            "--db", str(tmp_path / "state.db")]  # fmt: skip
    proc = kvmguest(args, tmp_path)
    assert proc.returncode == 78 and WHY in proc.stderr  # EX_CONFIG: systemd does not loop
    assert not sock.exists()


def _ocf(action: str, environ: dict[str, str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = ocf_main([action], environ)
    return rc, err.getvalue()


def test_ocf_agent_with_main_cf_on_an_undeclared_node_is_err_configured(tmp_path: Path) -> None:
    cfg = tmp_path / "main.cf"
    cfg.write_text(MAIN_CF)
    env = {"OCF_RESOURCE_INSTANCE": "r", "OCF_RESKEY_config": str(cfg),
           "OCF_RESKEY_resource": "r", "OCF_RESKEY_hypervisor": URI,
           "OCF_RESKEY_CRM_meta_on_node": "n9"}  # fmt: skip
    rc, err = _ocf("monitor", env)
    assert rc == Ocf.ERR_CONFIGURED and WHY in err
    assert _ocf("monitor", {**env, "OCF_RESKEY_CRM_meta_on_node": "n1"})[0] == Ocf.SUCCESS


def test_ocf_agent_from_parameters_alone_is_exempt() -> None:
    env = {"OCF_RESOURCE_INSTANCE": "r", "OCF_RESKEY_guest_name": "test",
           "OCF_RESKEY_hypervisor": URI, "OCF_RESKEY_CRM_meta_on_node": "n9"}  # fmt: skip
    assert _ocf("monitor", env)[0] == Ocf.SUCCESS
