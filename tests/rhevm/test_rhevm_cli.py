"""`python -m kvmguest ...` on RHV-M (the simulator), as an operator or VCS runs it.

Every run goes through :func:`run`, which also checks that neither the password nor a
wrong one appears in its stdout or stderr (at debug verbosity).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from kvmguest.secrets import decrypt

from .conftest import PASSWORD, WRONG_PASSWORD, Rhev, leaks
from .test_rhevm_entrypoints import SEED_TABLE

KVMGUEST = [sys.executable, "-m", "kvmguest"]


def run(
    rhev: Rhev,
    *args: str,
    system: str = "host1",
    as_json: bool = False,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    cmd = [*KVMGUEST, "-vv", "--system", system, *(["--json"] if as_json else []), *args]
    if args[:1] != ("encrypt",):
        cmd += ["-c", str(rhev.cfg)]
    proc = subprocess.run(
        cmd,
        input=stdin,
        capture_output=True,
        text=True,
        env=env or rhev.env(),
        timeout=timeout,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    assert leaks([proc.stdout, proc.stderr]) == [], (proc.stdout, proc.stderr)
    return proc


# -- monitor -------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "state", "confidence", "code"), SEED_TABLE)
def test_monitor_exit_code_and_json_follow_the_seed_table(
    rhev: Rhev, status: str, state: object, confidence: int, code: int
) -> None:
    rhev.write()
    rhev.sim.set_vm_status("vm1", status, host="host1")
    human = run(rhev, "monitor", "res1")
    assert human.returncode == code, human.stderr
    line = human.stdout.strip()
    assert line.startswith(f"res1 {state.value}")  # type: ignore[attr-defined]
    assert (f"(confidence {confidence})" in line) == (confidence > 0)
    as_json = run(rhev, "monitor", "res1", as_json=True)
    assert as_json.returncode == code
    doc = json.loads(as_json.stdout)
    assert (doc["state"], doc["confidence"]) == (state.value, confidence)  # type: ignore[attr-defined]
    assert f"VM status {status}" in doc["detail"]


def test_rhvm_down_exits_99(rhev: Rhev) -> None:
    rhev.write()
    rhev.sim.stop()
    proc = run(rhev, "monitor", "res1", as_json=True)
    assert proc.returncode == 99
    doc = json.loads(proc.stdout)
    assert doc["state"] == "UNKNOWN" and "cannot connect to RHV-M" in doc["detail"]


def test_monitor_process_returns_within_monitor_timeout(rhev: Rhev) -> None:
    rhev.write()  # MonitorTimeout = 3
    rhev.sim.inject_latency(30, path="/api/", count=None)
    start = time.monotonic()
    proc = run(rhev, "monitor", "res1")
    elapsed = time.monotonic() - start
    assert proc.returncode == 99
    # The message gives what was left of the 3 s deadline when the call began.
    assert re.search(r"did not answer within (3|2\.\d+) s", proc.stdout), proc.stdout
    # 3 s plus the interpreter's start (~0.3 s here), far from the server's 30 s; the slack
    # is for a busy CI host (the figure itself is measured in bench/, not asserted here).
    assert elapsed < 10, elapsed


def test_online_process_returns_within_online_timeout(rhev: Rhev) -> None:
    rhev.write(vm="vm2")  # OnlineTimeout = 5
    rhev.sim.inject_latency(30, path="/api/vms", count=None)
    start = time.monotonic()
    proc = run(rhev, "online", "res1", system="host2")
    elapsed = time.monotonic() - start
    assert proc.returncode == 1
    assert "online of res1" in proc.stderr and "did not answer within" in proc.stderr
    assert elapsed < 12, elapsed  # 5 s deadline, not the server's 30 s


def test_wrong_password_is_a_clear_error(rhev: Rhev) -> None:
    rhev.write(password=WRONG_PASSWORD)
    proc = run(rhev, "monitor", "res1")
    assert proc.returncode == 99 and "refused user admin@internal" in proc.stdout
    proc = run(rhev, "online", "res1", system="host2")
    assert proc.returncode == 1 and "refused user admin@internal" in proc.stderr
    assert "kvmguest encrypt" in proc.stderr


def test_wrong_certificate_is_refused(rhev: Rhev) -> None:
    rhev.write()
    rhev.sim.set_certificate_mode("wrong_ca")
    proc = run(rhev, "monitor", "res1", as_json=True)
    assert proc.returncode == 99 and "TLS" in json.loads(proc.stdout)["detail"]


# -- the other entry points ----------------------------------------------------------------


def test_offline_online_and_migrate_from_the_command_line(rhev: Rhev) -> None:
    rhev.write()
    assert run(rhev, "offline", "res1").returncode == 0
    assert rhev.sim.vm_status("vm1") == "down"
    proc = run(rhev, "online", "res1", system="host2", as_json=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)["ok"] is True
    assert (rhev.sim.vm_status("vm1"), rhev.sim.vm_host("vm1")) == ("up", "host2")
    assert run(rhev, "monitor", "res1", system="host2").returncode == 110
    assert run(rhev, "monitor", "res1", system="host1").returncode == 200
    proc = run(rhev, "migrate", "res1", "--to", "host1", system="host2")
    assert proc.returncode == 0, proc.stderr
    assert rhev.sim.vm_host("vm1") == "host1"
    rhev.sim.set_vm_affinity("vm1", "pinned", ["host1"])
    proc = run(rhev, "migrate", "res1", "--to", "host2")
    assert proc.returncode == 1 and "pinned" in proc.stderr
    proc = run(rhev, "clean", "res1", "--reason", "4")
    assert proc.returncode == 0 and rhev.sim.vm_status("vm1") == "down"


def test_manual_fencing_from_the_command_line(rhev: Rhev) -> None:
    rhev.write(fencing=0)
    rhev.sim.set_host_status("host1", "non_responsive")
    proc = run(rhev, "online", "res1", system="host2")
    assert proc.returncode == 1
    assert "Host has been rebooted" in proc.stderr and "UseManualRHEVMFencing" in proc.stderr
    rhev.write(fencing=1)
    proc = run(rhev, "online", "res1", system="host2")
    assert proc.returncode == 0, proc.stderr
    assert rhev.sim.host_fence_confirmed("host1") and rhev.sim.vm_host("vm1") == "host2"


# -- validate ------------------------------------------------------------------------------


def test_validate_refuses_an_http_url(rhev: Rhev) -> None:
    rhev.write(url=f"http://127.0.0.1:{rhev.sim.port}")
    proc = run(rhev, "validate")
    assert proc.returncode == 1
    assert "RHEVMInfo.URL must be https://" in proc.stderr
    assert f"{rhev.cfg}:" in proc.stderr  # file:line:col
    # And nothing runs from it: monitor says UNKNOWN without asking anybody.
    rhev.sim.clear_requests()
    assert run(rhev, "monitor", "res1").returncode == 99
    assert rhev.sim.requests() == []
    rhev.write()
    assert run(rhev, "validate").returncode == 0


# -- kvmguest encrypt ----------------------------------------------------------------------


def test_encrypt_from_stdin_creates_a_private_key(rhev: Rhev, tmp_path: Path) -> None:
    key = tmp_path / "keys" / "secret.key"
    proc = run(rhev, "encrypt", "--key-file", str(key), stdin=PASSWORD + "\n")
    assert proc.returncode == 0, proc.stderr
    ciphertext = proc.stdout.strip()
    assert key.stat().st_mode & 0o777 == 0o600
    assert decrypt(ciphertext, key) == PASSWORD
    # The same key next time; a new ciphertext (random IV) for the same password.
    again = run(rhev, "encrypt", "--key-file", str(key), stdin=PASSWORD).stdout.strip()
    assert again != ciphertext and decrypt(again, key) == PASSWORD
    # A password with spaces at the ends keeps them; only the line ending goes.
    spaced = run(rhev, "encrypt", "--key-file", str(key), stdin=" a b \r\n").stdout.strip()
    assert decrypt(spaced, key) == " a b "


def test_encrypt_uses_kvmguest_key_file_and_json(rhev: Rhev, tmp_path: Path) -> None:
    key = tmp_path / "env.key"
    env = {**rhev.env(), "KVMGUEST_KEY_FILE": str(key)}
    proc = run(rhev, "encrypt", as_json=True, stdin=PASSWORD, env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["key_file"] == str(key) and decrypt(doc["ciphertext"], key) == PASSWORD


@pytest.mark.parametrize(
    ("stdin", "why"),
    [("", "empty"), ("\n", "empty"), ("a\nb\n", "single line"), ("x" * 5000, "more than")],
)
def test_encrypt_refuses_bad_input(rhev: Rhev, tmp_path: Path, stdin: str, why: str) -> None:
    proc = run(rhev, "encrypt", "--key-file", str(tmp_path / "k"), stdin=stdin)
    assert proc.returncode == 1 and why in proc.stderr and proc.stdout == ""


def test_encrypt_never_takes_the_secret_from_argv(rhev: Rhev, tmp_path: Path) -> None:
    proc = run(rhev, "encrypt", "--key-file", str(tmp_path / "k"), "s3cret", stdin="")
    assert proc.returncode == 2 and "unexpected extra argument" in proc.stderr


def test_encrypt_then_use_it_end_to_end(rhev: Rhev) -> None:
    """The ciphertext that `kvmguest encrypt` prints is what main.cf holds."""
    proc = run(rhev, "encrypt", "--key-file", str(rhev.key), stdin=PASSWORD)
    rhev.write(ciphertext=proc.stdout.strip())
    assert run(rhev, "monitor", "res1").returncode == 110


def _tty_encrypt(key: Path, entries: list[str]) -> tuple[int, str, str]:
    """Run `kvmguest encrypt` on a pseudo-terminal; type ``entries`` at its prompts.

    Returns (exit code, stdout, everything the terminal showed).
    """
    master, slave = os.openpty()

    def controlling_tty() -> None:  # runs in the child, after setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [*KVMGUEST, "encrypt", "--key-file", str(key)],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        start_new_session=True,
        preexec_fn=controlling_tty,
    )
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + 30
    try:
        for i, entry in enumerate(entries):
            prompt = b"Password: " if i == 0 else b"Password (again): "
            seen_before = len(shown)
            while prompt not in shown[seen_before:]:
                left = deadline - time.monotonic()
                assert left > 0, f"no prompt {prompt!r}; the terminal shows {shown!r}"
                if select.select([master], [], [], left)[0]:
                    shown += os.read(master, 4096)
            os.write(master, entry.encode() + b"\n")
        out, _ = proc.communicate(timeout=30)
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(), shown.decode(errors="replace")


def test_encrypt_asks_twice_without_echo(tmp_path: Path) -> None:
    key = tmp_path / "tty.key"
    code, out, shown = _tty_encrypt(key, [PASSWORD, PASSWORD])
    assert code == 0, shown
    assert decrypt(out.strip(), key) == PASSWORD
    assert "Password: " in shown and "Password (again): " in shown
    assert leaks([shown]) == []  # not echoed


def test_encrypt_refuses_two_different_entries(tmp_path: Path) -> None:
    key = tmp_path / "tty.key"
    code, out, shown = _tty_encrypt(key, [PASSWORD, WRONG_PASSWORD])
    assert code == 1 and out == "" and "differ" in shown
    assert leaks([shown]) == []


def test_the_leak_check_in_run_is_live(rhev: Rhev) -> None:
    # A GuestName equal to the password is quoted back by the monitor ("no VM named ..."):
    # run() must notice, or its check on every other run proves nothing.
    rhev.write(vm=f'"{PASSWORD}"')
    with pytest.raises(AssertionError):
        run(rhev, "monitor", "res1")
