"""The container agents side by side, in one run, on a private dockerd and a private
Podman (tests/docker/engines.py; nothing of the system's engines is touched):

1. detection: `kill -9` of a container's main process until the kvmguest daemon has it
   (its history row), p50/p99 — the daemon watches the process with a pidfd;
2. recovery: the same kill until the container runs again with a new process, under the
   daemon (RestartLimit) and under the engine's own `--restart=always`, interleaved;
3. the OCF monitor's cost (wall and CPU of the whole process tree): ocf:kvmguest:
   DockerContainer's lean monitor against Pacemaker's ocf:heartbeat:docker and
   ocf:heartbeat:podman (Debian's resource-agents) on the same container, interleaved.

    .venv/bin/python bench/docker_monitor.py [--kills N] [--monitors N]

Run as root (the engines); takes about a minute with the defaults.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, median_ms, p

sys.path.insert(0, str(REPO))
import docker
from tests.daemon.conftest import Agent
from tests.docker.engines import IMAGE, SLEEPER, Engine, missing

HEARTBEAT = Path("/usr/lib/ocf/resource.d/heartbeat")
PYTHON = str(REPO / ".venv/bin/python")


def _sdk(e: Engine) -> Any:
    return docker.DockerClient(base_url=e.host, version="1.41", timeout=30)


def _pid(e: Engine, name: str) -> int:
    try:
        doc = _sdk(e).api.inspect_container(name)
    except docker.errors.NotFound:
        return 0
    return int(doc["State"]["Pid"]) if doc["State"]["Status"] == "running" else 0


def _wait(fn: Any, timeout: float, period: float = 0.002) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {fn}")
        time.sleep(period)


def _cfg(e: Engine, d: Path, name: str) -> Path:
    cmd = ", ".join(f'"{x}"' for x in SLEEPER)
    cfg = d / "main.cf"
    cfg.write_text(
        "cluster c ( )\nsystem host1 ( )\n"
        "group g ( SystemList = { host1 = 0 }\n    AutoStartList = { host1 } )\n"
        f'    DockerContainer ct ( ContainerName = {name}\n        Image = "{IMAGE}"\n'
        f'        DockerHost = "{e.host}"\n        Engine = {e.kind}\n        Network = none\n'
        f"        Command = {{ {cmd} }}\n        StopTimeout = 2\n        RestartLimit = 100000\n"
        "        ConfInterval = 1\n        MonitorInterval = 60\n        )\n"
    )
    return cfg


def _daemon_kill(a: Agent, e: Engine, name: str) -> tuple[float, float]:
    """(detection, recovery) seconds of one kill -9 under the daemon."""
    pid = _wait(lambda: _pid(e, name), 60)
    # The daemon watches the pid its last monitor saw: wait until it has seen this one.
    _wait(lambda: any(h["kind"] == "decision" and f"(pid {pid})" in h["detail"]
                      for h in a.history("ct", limit=30)), 60)  # fmt: skip
    t0 = time.time()
    os.kill(pid, signal.SIGKILL)
    gone = f"container process {pid} exited"
    row = _wait(lambda: next((h for h in a.history("ct", limit=30) if gone in h["detail"]), None),
                30)  # fmt: skip
    new = _wait(lambda: (lambda q: q if q not in (0, pid) else 0)(_pid(e, name)), 60)
    recovered = time.time() - t0
    assert new != pid
    return float(row["ts"]) - t0, recovered


def _engine_kill(e: Engine, name: str) -> float:
    """One kill -9 under the engine's --restart=always, on a fresh container: the engine
    doubles its restart delay at every failure of a container that ran less than 10 s
    (100 ms, 200 ms, … up to a minute), so back-to-back kills of one container would
    measure that backoff; a fresh one measures its best case."""
    _sdk(e).containers.run(IMAGE, SLEEPER, name=name, detach=True, network_mode="none",
                           restart_policy={"Name": "always"})  # fmt: skip
    try:
        pid = _wait(lambda: _pid(e, name), 60)
        t0 = time.time()
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: (lambda q: q if q not in (0, pid) else 0)(_pid(e, name)), 60)
        return time.time() - t0
    finally:
        e.cli("rm", "-f", name, check=False)


def _time(cmd: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode not in ok:
        raise SystemExit(f"{cmd[0]} exited {r.returncode}: {r.stdout}{r.stderr}")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def _storage_conf(e: Engine) -> Path:
    """What makes the podman command line (of ocf:heartbeat:podman) use this instance."""
    conf = e.dir / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{e.dir / "root"}"\n'
                    f'runroot = "{e.dir / "run"}"\n')  # fmt: skip
    with e.conf.open("a") as f:
        f.write(f'tmp_dir = "{e.dir / "tmp"}"\n')  # [engine] is the file's last section
    return conf


def bench_engine(e: Engine, base: Path, ocf_dir: Path, kills: int, monitors: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    d = base / f"run-{e.kind}"
    d.mkdir()
    name = f"kvmg-bench-{e.kind}"
    # -- detection and recovery under the daemon, interleaved with --restart=always ----
    a = Agent(d)
    _cfg(e, d, name)  # a.cfg
    a.start()
    always = f"kvmg-bench-always-{e.kind}"
    det, rec, eng = [], [], []
    try:
        a.wait_state("ct", "ONLINE", 60)
        for _ in range(kills):
            dd, rr = _daemon_kill(a, e, name)
            det.append(dd)
            rec.append(rr)
            eng.append(_engine_kill(e, always))
    finally:
        a.stop()
        e.cli("rm", "-f", always, check=False)
    out["detect"], out["recover"], out["always"] = det, rec, eng
    # -- the OCF monitor: ours (lean) against Pacemaker's agent for this engine ---------
    ours_env = {"PATH": os.environ["PATH"], "OCF_ROOT": "/usr/lib/ocf",
                "OCF_RESOURCE_INSTANCE": "bench", "OCF_RESKEY_container_name": name,
                "OCF_RESKEY_image": IMAGE, "OCF_RESKEY_docker_host": e.host,
                "OCF_RESKEY_engine": e.kind, "OCF_RESKEY_CRM_meta_interval": "30000",
                "OCF_RESKEY_CRM_meta_timeout": "20000"}  # fmt: skip
    theirs_env = {"PATH": os.environ["PATH"], "OCF_ROOT": "/usr/lib/ocf",
                  "OCF_RESOURCE_INSTANCE": "bench", "OCF_RESKEY_name": name,
                  "OCF_RESKEY_image": IMAGE, "HA_RSCTMP": str(d),
                  "OCF_RESKEY_CRM_meta_interval": "30000"}  # fmt: skip
    if e.kind == "docker":
        theirs_env["DOCKER_HOST"] = e.host
    else:
        theirs_env["CONTAINERS_CONF"] = str(e.conf)
        theirs_env["CONTAINERS_STORAGE_CONF"] = str(_storage_conf(e))
    r = subprocess.run([PYTHON, "-m", "kvmguest", "--system", "host1", "online", "ct", "-c",
                        str(a.cfg)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    ours_cmd = [str(ocf_dir / "DockerContainer"), "monitor"]
    theirs_cmd = [str(HEARTBEAT / e.kind), "monitor"]
    _time(ours_cmd, ours_env)
    _time(theirs_cmd, theirs_env)  # warm both
    ours, theirs = [], []
    for _ in range(monitors):
        ours.append(_time(ours_cmd, ours_env))
        theirs.append(_time(theirs_cmd, theirs_env))
    out["ours"], out["theirs"] = ours, theirs
    e.cli("rm", "-f", name, check=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--monitors", type=int, default=30)
    args = ap.parse_args()
    reasons = missing()
    if reasons:
        raise SystemExit("; ".join(reasons))
    base = Path(tempfile.mkdtemp(prefix="kvmguest-docker-bench-", dir="/tmp"))
    ocf_dir = Path(tempfile.mkdtemp(prefix="kvmguest-docker-ocf-", dir="/var/tmp"))
    os.chmod(ocf_dir, 0o755)
    subprocess.run([PYTHON, "-m", "kvmguest", "ocf", "install", "--python", PYTHON,
                    "--no-units", "--dir", str(ocf_dir)], check=True, capture_output=True,
                   timeout=300)  # fmt: skip
    results = {}
    engines = [Engine(k, base) for k in ("docker", "podman")]
    try:
        for e in engines:
            e.start()
            e.images(base)
            results[e.kind] = bench_engine(e, base, ocf_dir, args.kills, args.monitors)
    finally:
        for e in engines:
            e.cleanup()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(ocf_dir, ignore_errors=True)
    print(f"{'engine':8} {'what':48} {'p50 ms':>9} {'p99 ms':>9}")
    for kind, r in results.items():
        agent = f"ocf:heartbeat:{kind}"
        ow, oc = [x[0] for x in r["ours"]], [x[1] for x in r["ours"]]
        tw, tc = [x[0] for x in r["theirs"]], [x[1] for x in r["theirs"]]
        rows = [("detection: kill -9 -> daemon has it", r["detect"]),
                ("recovery under the kvmguest daemon", r["recover"]),
                ("recovery by the engine (--restart=always)", r["always"]),
                ("OCF monitor wall: ocf:kvmguest:DockerContainer", ow),
                (f"OCF monitor wall: {agent}", tw),
                ("OCF monitor CPU: ocf:kvmguest:DockerContainer", oc),
                (f"OCF monitor CPU: {agent}", tc)]  # fmt: skip
        for what, xs in rows:
            print(f"{kind:8} {what:48} {median_ms(xs):9.1f} {p(xs, 0.99):9.1f}")
        wall = median_ms(tw) / median_ms(ow)
        cpu = median_ms(tc) / max(median_ms(oc), 1e-3)
        print(f"{kind:8} {'=> ours cheaper by (wall, CPU; medians)':48} {wall:8.1f}x {cpu:8.1f}x")


if __name__ == "__main__":
    main()
