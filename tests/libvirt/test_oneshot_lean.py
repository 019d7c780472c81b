"""The one-shot ``kvmguest monitor`` on its lean paths, on libvirt's test:///default driver.

The first run validates the configuration (the full path) and caches it; later runs answer
from the cache without importing click or lark, with the same output and exit code; a
changed, invalid or untrusted cache is never used; a running agent daemon answers without
the one-shot importing libvirt at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.system.waiting import wait_until

MAIN_CF = """\
cluster c ( )
system h1 ( )
group g ( SystemList = {{ h1 = 0 }} )
    KVMGuest vm ( GuestName = {name} )
"""


def run(cfg: Path, cache: Path, *args: str, importtime: bool = False) -> tuple[int, str, set[str]]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "KVMGUEST_SYSTEM": "h1",
           "KVMGUEST_LIBVIRT_URI": "test:///default"}  # fmt: skip
    env.pop("KVMGUEST_CONFIG", None)
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "kvmguest"]
    proc = subprocess.run([*argv, *args], capture_output=True, text=True, env=env, timeout=120)
    imported = {
        line.split("|")[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    stderr = "\n".join(x for x in proc.stderr.splitlines() if not x.startswith("import time:"))
    return proc.returncode, proc.stdout + stderr, imported


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "main.cf"
    path.write_text(MAIN_CF.format(name="test"))
    return path


def test_cached_path_answers_like_the_full_path(cfg: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # The full path (no cache yet), as text and as JSON: what the cached path must repeat.
    full_json = run(cfg, tmp_path / "cache-json", "monitor", "vm", "-c", str(cfg), "--json")
    full = run(cfg, cache, "monitor", "vm", "-c", str(cfg))
    assert full[0] == 110 and full[1] == "vm ONLINE (confidence 100): running\n"
    assert full_json[0] == 110 and json.loads(full_json[1])["state"] == "ONLINE"
    for args in (["monitor", "vm", "-c", str(cfg)], ["-c", str(cfg), "monitor", "vm"],
                 [f"--config={cfg}", "monitor", "vm", "--json"]):  # fmt: skip
        code, out, imported = run(cfg, cache, *args, importtime=True)
        assert not {m for m in imported if m.split(".")[0] in ("click", "lark")}, args
        assert "kvmguest.cli.lean" in imported
        if "--json" in args:
            assert code == 110 and json.loads(out) == json.loads(full_json[1])
        else:
            assert (code, out) == full[:2]


def test_a_changed_or_invalid_configuration_is_validated_again(cfg: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert run(cfg, cache, "monitor", "vm", "-c", str(cfg))[0] == 110
    # The same size and mtime cannot hide a change: the content hash is checked too.
    st = cfg.stat()
    cfg.write_text(MAIN_CF.format(name="tset"))
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns))
    code, out, _ = run(cfg, cache, "monitor", "vm", "-c", str(cfg))
    assert code == 100 and "vm OFFLINE" in out  # no domain "tset": the new file was read
    cfg.write_text(MAIN_CF.format(name="test") + "    KVMGuest bad ( Guest = x )\n")
    code, out, imported = run(cfg, cache, "monitor", "vm", "-c", str(cfg), importtime=True)
    assert code == 99 and "main.cf:5:" in out and "unknown attribute 'Guest'" in out
    assert "lark" in imported  # validated on the full path, never answered from the cache


def test_an_untrusted_cache_is_not_used(cfg: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert run(cfg, cache, "monitor", "vm", "-c", str(cfg))[0] == 110
    (cache / "kvmguest").chmod(0o777)  # writable by others: anyone could plant an entry
    code, _, imported = run(cfg, cache, "monitor", "vm", "-c", str(cfg), importtime=True)
    assert code == 110 and "lark" in imported


def test_unusual_arguments_take_the_full_path(cfg: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert run(cfg, cache, "monitor", "vm", "-c", str(cfg))[0] == 110
    code, out, _ = run(cfg, cache, "monitor", "nope", "-c", str(cfg))
    assert code == 99 and "no resource named 'nope'" in out
    code, out, _ = run(cfg, cache, "monitor", "vm", "-c", str(cfg), "--bogus")
    assert code == 2 and "No such option" in out  # click's usage error, as before


def test_a_running_daemon_answers_without_libvirt(cfg: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    sock = tmp_path / "agent.sock"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "KVMGUEST_SYSTEM": "h1",
           "KVMGUEST_LIBVIRT_URI": "test:///default"}  # fmt: skip
    daemon = subprocess.Popen(
        [sys.executable, "-m", "kvmguest", "agent", "-c", str(cfg), "--socket", str(sock),
         "--db", str(tmp_path / "agent.db"), "--no-autostart"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(sock.exists, bool, 60, "the daemon's socket")
        os.environ["KVMGUEST_SOCKET"] = str(sock)
        try:
            code, out, imported = run(cfg, cache, "monitor", "vm", "-c", str(cfg),
                                      importtime=True)  # fmt: skip
        finally:
            del os.environ["KVMGUEST_SOCKET"]
        assert (code, out) == (110, "vm ONLINE (confidence 100): running\n")
        assert "libvirt" not in imported and "lark" not in imported
    finally:
        daemon.terminate()
        daemon.wait(60)


def test_a_running_companion_answers_without_libvirt(cfg: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    sock = tmp_path / "pacemaker.sock"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "KVMGUEST_SYSTEM": "h1"}
    companion = subprocess.Popen(
        [sys.executable, "-m", "kvmguest", "agent", "--pacemaker", "--socket", str(sock),
         "--agent-socket", str(tmp_path / "none.sock")], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(sock.exists, bool, 60, "the companion's socket")
        os.environ["KVMGUEST_COMPANION_SOCKET"] = str(sock)
        try:
            code, out, imported = run(cfg, cache, "monitor", "vm", "-c", str(cfg), "--json",
                                      importtime=True)  # fmt: skip
        finally:
            del os.environ["KVMGUEST_COMPANION_SOCKET"]
        assert code == 110 and json.loads(out) == {
            "state": "ONLINE", "confidence": 100, "detail": "running", "ok": True}  # fmt: skip
        assert "libvirt" not in imported and "lark" not in imported
    finally:
        companion.terminate()
        companion.wait(60)
