"""The agent daemon on a VCS main.cf (tests/data/vcs), on libvirt's embedded test driver
(``test:///default``, in-process): the group whose guest needs storage and an address that
kvmguest has no agent for is not run, and ``--check``, ``status`` and the group commands
say why; a resource with Enabled = 0 is not managed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Agent

VCS = Path(__file__).resolve().parents[1] / "data" / "vcs"
WHY = (
    "group appsg is not run: it holds appfs (Mount), appip (IP), appnic (NIC): kvmguest has "
    "no agent for those types, and its resources would start without them"
)


@pytest.fixture
def agent() -> Iterator[Agent]:
    d = Path(tempfile.mkdtemp(prefix="kvmguest-vcs-"))
    a = Agent(d, uri="test:///default")
    shutil.copy(VCS / "types.cf", d / "types.cf")
    # The Agent runs as host1; test:///default's one running domain is "test".
    text = (VCS / "main.cf").read_text().replace("hostA", "host1")
    text = text.replace("GuestName = webvm", "GuestName = test\n        MonitorInterval = 5")
    text += "\n    KVMGuest spare (\n        GuestName = spare\n        Enabled = 0\n        )\n"
    a.cfg.write_text(text)
    try:
        yield a
    finally:
        a.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_check_says_which_group_is_not_run_and_why(agent: Agent) -> None:
    r = subprocess.run(agent.argv("--check"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "valid; system host1 runs group(s): websg" in r.stdout
    assert WHY in r.stdout


def test_status_and_group_commands_say_why_a_group_is_not_run(agent: Agent) -> None:
    agent.start()
    assert agent.wait_state("webvm", "ONLINE", timeout=30) == "ONLINE"
    st = agent.cli_json("status")
    assert [r["resource"] for r in st["resources"]] == ["webvm"]  # spare: Enabled = 0
    assert list(st["groups"]) == ["websg"]
    assert WHY.split(" is not run: ")[1] in st["not_run"]["appsg"]
    text = agent.cli("status")
    assert WHY in text.stdout
    status = agent.cli("status", "appvm")
    assert status.returncode == 1 and "appvm: group appsg is not run: it holds" in status.stderr
    online = agent.cli("group", "online", "appsg")
    assert online.returncode == 1
    assert "group appsg is not run by kvmguest: it holds appfs (Mount)" in online.stderr


@pytest.mark.parametrize(("argv", "code"), [(["monitor", "appfs"], 99), (["online", "appfs"], 1)])
def test_one_shot_entry_points_refuse_a_type_without_agent(
    agent: Agent, argv: list[str], code: int
) -> None:
    r = subprocess.run(
        [*agent.argv()[:8], *argv, "-c", str(agent.cfg)], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert r.returncode == code, r.stdout + r.stderr
    assert "no agent for type 'Mount'" in r.stderr
