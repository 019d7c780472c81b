"""Every command's ``--json`` output, on success and on failure, against the schema that
docs/cli.md documents (read from the doc itself), and the global options after the command.

The commands run as a user runs them (``python -m kvmguest``) on libvirt's in-process
``test:///default`` driver; the agent-daemon commands talk to a real ``kvmguest agent`` on
that driver, with its socket and database in the test's directory.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
KVMGUEST = [sys.executable, "-m", "kvmguest"]
URI = "test:///default"

CONFIG = """\
cluster c ( )
system sys1 ( )
system sys2 ( LibvirtURI = "test:///default" )
group g (
    SystemList = { sys1 = 0, sys2 = 1 }
    )
    KVMGuest vm1 (
        GuestName = test
        DelayAfterGuestOffline = 1
        DelayAfterGuestOnline@sys1 = 3
        MonitorInterval = 30
        DROpts = { ConfigureNetwork = 1, IPAddress = "192.0.2.7", Netmask = "255.255.255.0",
                   Gateway = "192.0.2.1", Device = "eth0" }
        )
"""


def _schema() -> dict[str, Any]:
    text = (ROOT / "docs" / "cli.md").read_text()
    m = re.search(r"<!-- schema -->\s*```json\n(.*?)```\s*<!-- /schema -->", text, re.S)
    assert m, "docs/cli.md has no schema block"
    doc: dict[str, Any] = json.loads(m.group(1))
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


SCHEMA = _schema()


def check(kind: str, data: dict[str, Any]) -> None:
    """``kind`` is a command of the schema's "commands", or "error"."""
    sub = SCHEMA["error"] if kind == "error" else SCHEMA["commands"][kind]
    jsonschema.validate(data, {"$defs": SCHEMA["$defs"], **sub})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("clijson")
    (d / "main.cf").write_text(CONFIG)
    (d / "bad.cf").write_text("group g (\n    SystemList = { sys1 = 0 }\n")
    return d


def run(
    workdir: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KVMGUEST, *args], capture_output=True, text=True, timeout=120, input=stdin,
        cwd=workdir,
        env={**os.environ, "KVMGUEST_SYSTEM": "sys1", "KVMGUEST_LIBVIRT_URI": URI,
             "KVMGUEST_CONFIG": str(workdir / "main.cf"),
             "KVMGUEST_KEY_FILE": str(workdir / "secret.key"),
             "KVMGUEST_SOCKET": str(workdir / "agent.sock"), **(env or {})},
    )  # fmt: skip


def one_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """stdout holds exactly one JSON object, whatever went to stderr."""
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"stdout: {proc.stdout!r} stderr: {proc.stderr!r}"
    data: dict[str, Any] = json.loads(lines[0])
    return data


# (schema entry, argv, exit code): one-shot commands, success then failure.
ONE_SHOT = [
    ("monitor", ["monitor", "vm1"], 110),
    ("error", ["monitor", "nope"], 99),
    ("error", ["monitor", "vm1", "-c", "bad.cf"], 99),
    ("error", ["monitor", "vm1", "-c", "missing.cf"], 99),
    ("online", ["online", "vm1"], 0),
    ("offline", ["offline", "vm1"], 0),
    ("clean", ["clean", "vm1", "--reason", "4"], 0),
    ("error", ["migrate", "vm1", "--to", "sys2"], 1),
    ("error", ["migrate", "vm1", "--to", "nowhere"], 1),
    ("action", ["action", "vm1", "guestmigrated"], 0),
    ("error", ["action", "vm1", "nosuchtoken"], 1),
    ("validate", ["validate"], 0),
    ("validate", ["validate", "."], 0),  # the configuration directory, as hacf -verify DIR
    ("error", ["validate", "-c", "bad.cf"], 1),
    ("types", ["types"], 0),
    ("types", ["types", "--all"], 0),
    ("export pacemaker", ["export", "pacemaker"], 0),
    ("export pacemaker", ["export", "pacemaker", "--format", "xml"], 0),
    ("error", ["export", "pacemaker", "-c", "bad.cf"], 1),
    ("dr-payload", ["dr-payload", "vm1", "-o", "p.iso"], 0),
    ("error", ["dr-payload", "vm1", "-o", "no/such/dir/p.iso"], 1),
    ("resource show", ["resource", "show", "vm1"], 0),
    ("error", ["resource", "show", "nope"], 1),
    ("agent --check", ["agent", "--check"], 0),
    ("error", ["agent", "--check", "-c", "bad.cf"], 1),
    ("ocf metadata", ["ocf", "metadata", "KVMGuest"], 0),
    ("error", ["ocf", "metadata", "NoSuchType"], 1),
    ("ocf install", ["ocf", "install", "--dir", "ocf", "--units-dir", "units"], 0),
    ("ocf uninstall", ["ocf", "uninstall", "--dir", "ocf"], 0),
    # Usage errors: before the command runs, still JSON.
    ("error", ["monitor"], 2),
    ("error", ["clean", "vm1", "--reason", "9"], 2),
    ("error", ["history", "-n", "-1"], 2),
    ("error", ["validate", "-c", "qemu:///system"], 2),
    # No agent listening.
    ("error", ["status", "--socket", "nobody.sock"], 1),
]


@pytest.mark.parametrize(("kind", "argv", "code"), ONE_SHOT, ids=[" ".join(c[1]) for c in ONE_SHOT])
@pytest.mark.parametrize("where", ["after", "before"])
def test_one_shot_json(workdir: Path, kind: str, argv: list[str], code: int, where: str) -> None:
    args = [*argv, "--json"] if where == "after" else ["--json", *argv]
    proc = run(workdir, *args)
    assert proc.returncode == code, proc.stdout + proc.stderr
    data = one_json(proc)
    check(kind, data)
    assert "Traceback" not in proc.stderr


def test_encrypt_json_and_new_key_note(workdir: Path) -> None:
    key = workdir / "fresh.key"
    proc = run(workdir, "encrypt", "--json", stdin="s3cret\n", env={"KVMGUEST_KEY_FILE": str(key)})
    assert proc.returncode == 0, proc.stderr
    data = one_json(proc)
    check("encrypt", data)
    assert data["key_created"] is True and data["key_file"] == str(key)
    assert f"created a new host key {key}" in proc.stderr  # said even with --json
    again = run(workdir, "encrypt", "--json", stdin="s3cret\n", env={"KVMGUEST_KEY_FILE": str(key)})
    assert one_json(again)["key_created"] is False and "new host key" not in again.stderr
    empty = run(workdir, "encrypt", "--json", stdin="\n")
    assert empty.returncode == 1
    check("error", one_json(empty))


def test_global_options_after_the_command(workdir: Path) -> None:
    # -c, --system, --connect, -v after the command name, as before it.
    other = workdir / "other.cf"
    other.write_text(CONFIG.replace("sys1", "hostX"))
    proc = run(workdir, "agent", "--check", "-v", "-c", str(other), "--system", "hostX",
               "--connect", URI, env={"KVMGUEST_CONFIG": "/nonexistent"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "system hostX runs group(s): g" in proc.stdout
    proc = run(workdir, "dr-payload", "vm1", "-o", "q.iso", "--system", "sys2")
    assert proc.returncode == 0, proc.stderr


def test_config_that_looks_like_a_uri_gets_a_hint(workdir: Path) -> None:
    proc = run(workdir, "-c", "qemu:///system", "validate")
    assert proc.returncode == 2
    assert "-c is the configuration file" in proc.stderr and "--connect" in proc.stderr


def test_resource_show_says_where_each_value_came_from(workdir: Path) -> None:
    data = one_json(run(workdir, "resource", "show", "vm1", "--json"))
    by_name = {a["name"]: a for a in data["attributes"]}
    assert by_name["GuestName"] == {"name": "GuestName", "value": "test", "source": "resource"}
    assert by_name["DelayAfterGuestOnline"]["source"] == "local value"
    assert by_name["DelayAfterGuestOnline"]["value"] == 3
    assert by_name["MonitorInterval"]["source"] == "static override"
    assert by_name["OnlineTimeout"]["source"] == "type default"
    # On another system, the local value does not apply.
    other = one_json(run(workdir, "resource", "show", "vm1", "--json", "--system", "sys2"))
    online = {a["name"]: a for a in other["attributes"]}["DelayAfterGuestOnline"]
    assert online == {"name": "DelayAfterGuestOnline", "value": 5, "source": "type default"}
    # Plain text when stdout is not a terminal: one line per attribute.
    text = run(workdir, "resource", "show", "vm1").stdout.splitlines()
    assert any(re.fullmatch(r"GuestName\s+test\s+resource", ln) for ln in text)


# --- the commands that talk to the agent ------------------------------------------------


@pytest.fixture(scope="module")
def agent(workdir: Path) -> Iterator[Path]:
    sock = workdir / "agent.sock"
    proc = subprocess.Popen(
        [*KVMGUEST, "agent", "--socket", str(sock), "--db", str(workdir / "agent.db"),
         "--no-autostart", "-c", str(workdir / "main.cf"), "--system", "sys1",
         "--connect", URI],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the agent exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
            break
        except OSError:
            # Polls the socket until the agent answers (no fixed sleep: bounded wait).
            time.sleep(0.05)
    else:
        pytest.fail("the agent did not open its socket within 60 s")
    yield sock
    proc.terminate()
    proc.wait(timeout=60)


DAEMON = [
    ("status", ["status"], 0),
    ("status", ["status", "vm1"], 0),
    ("error", ["status", "nope"], 1),
    ("history", ["history"], 0),
    ("history", ["history", "vm1", "-n", "5"], 0),
    ("error", ["history", "nope"], 1),
    ("resource", ["resource", "probe", "vm1"], 0),
    ("error", ["resource", "probe", "nope"], 1),
    ("error", ["resource", "action", "vm1", "nosuchtoken"], 1),
    ("resource", ["resource", "action", "vm1", "guestmigrated"], 0),
    ("group", ["group", "unfreeze", "g"], 0),
    ("error", ["group", "online", "nogroup"], 1),
]


@pytest.mark.parametrize(("kind", "argv", "code"), DAEMON, ids=[" ".join(c[1]) for c in DAEMON])
def test_agent_commands_json(
    workdir: Path, agent: Path, kind: str, argv: list[str], code: int
) -> None:
    proc = run(workdir, *argv, "--json")
    assert proc.returncode == code, proc.stdout + proc.stderr
    check(kind, one_json(proc))


def test_status_plain_table_freeze_and_switch_reason(workdir: Path, agent: Path) -> None:
    proc = run(workdir, "status")
    assert proc.returncode == 0, proc.stderr
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("vm1 ")]
    # One line per row, the whole row on it, no box drawing: `status | grep vm1` works.
    assert len(rows) == 1 and re.match(r"vm1\s+g\s+\S+", rows[0])
    assert not re.search("[\u2500-\u257f]", proc.stdout)

    first = run(workdir, "group", "freeze", "g")
    assert first.returncode == 0 and "frozen" in first.stdout
    again = run(workdir, "group", "freeze", "g")
    assert again.returncode == 0 and "group g is already frozen" in again.stdout
    status = one_json(run(workdir, "status", "--json"))
    assert status["groups"]["g"]["frozen"] is True
    assert "group g: " in run(workdir, "status").stdout
    assert "(frozen)" in run(workdir, "status").stdout
    assert run(workdir, "group", "unfreeze", "g").returncode == 0

    # test:///default cannot migrate: the reason is libvirt's, not only the guest's state.
    switch = run(workdir, "group", "switch", "g", "--to", "sys2")
    assert switch.returncode == 1
    assert "virDomainMigrate3" in switch.stderr, switch.stderr
    history = run(workdir, "history", "vm1", "-n", "0")
    assert history.returncode == 2


def test_status_shows_the_fields_other_issues_add(capsys: pytest.CaptureFixture[str]) -> None:
    """The formatter shows state_saved/state_error/reset_at/admin_wait when the agent sends
    them, and defines them (null) when it does not."""
    from kvmguest.cli.agent_cmd import status_data, status_text

    old = status_data({"system": "s", "connected": True, "groups": {"g": "ONLINE"},
                       "resources": [{"resource": "r", "group": "g", "guest": "r",
                                      "state": "ONLINE", "confidence": 100, "detail": "",
                                      "since": 1.7e9, "last_monitor": None, "frozen": False,
                                      "counters": {}}]})  # fmt: skip
    check("status", {**old, "ok": True})
    assert old["state_saved"] is None and old["resources"][0]["admin_wait"] is None
    new = status_data({**old, "state_saved": False, "state_error": "disk full",
                       "reset_at": "2026-12-06T00:00:00+00:00",
                       "resources": [{**old["resources"][0], "since": 1.7e9,
                                      "admin_wait": "libvirt hangs, QEMU alive"}]})  # fmt: skip
    check("status", {**new, "ok": True})
    assert new["state_error"] == "disk full"
    assert new["resources"][0]["admin_wait"] == "libvirt hangs, QEMU alive"
    status_text(old)
    out = capsys.readouterr()
    assert "admin wait" not in out.out and "reset" not in out.out and out.err == ""
    status_text(new)
    out = capsys.readouterr()
    assert re.search(r"^r\s+g\s+ONLINE\s+100\s.*libvirt hangs, QEMU alive$", out.out, re.M)
    assert "r waits for the operator: libvirt hangs, QEMU alive" in out.out
    assert "state lost, reset at 2026-12-06T00:00:00+00:00" in out.out
    assert "state NOT being saved: disk full" in out.out
