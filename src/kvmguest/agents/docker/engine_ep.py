"""The DockerDaemon entry points: the container engine itself (dockerd, or Podman's API
service), through systemd where systemd runs, else started from DaemonCommand.

The engine's process is the one that listens on its API socket (or the one kvmguest
started, kept in a pid file with its start time): monitor is the API's ping plus that
process, and a process that lives while the API does not answer is UNKNOWN.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

from kvmguest.agents.base import Ended, Outcome, Progress, cap_output
from kvmguest.agents.docker import engine_api as api
from kvmguest.agents.docker import procs
from kvmguest.agents.docker.params import DaemonParams
from kvmguest.deadline import Deadline
from kvmguest.errors import AgentError
from kvmguest.model import states
from kvmguest.model.states import MonitorResult

RUN_DIR = os.environ.get("KVMGUEST_ENGINE_RUNDIR", "/run/kvmguest/engines")
POLL = 0.1
SYSTEMCTL_TIMEOUT = 90.0


def systemd_runs() -> bool:
    return os.path.isdir("/run/systemd/system")


@dataclass
class Context:
    params: DaemonParams
    progress: Progress | None = None
    changed: threading.Event = field(default_factory=threading.Event)

    def say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)

    @property
    def _stem(self) -> str:
        return os.path.join(RUN_DIR, hashlib.sha256(self.params.host.encode()).hexdigest()[:16])

    @property
    def pid_file(self) -> str:
        return self._stem + ".pid"

    @property
    def log_file(self) -> str:
        return self._stem + ".log"

    def engine_pid(self) -> int | None:
        """The engine's verified pid: the one kvmguest started while it lives, else the one
        that listens on the API socket."""
        try:
            with open(self.pid_file, encoding="ascii") as f:
                pid_s, started_s = f.read().split()
            pid, started = int(pid_s), int(started_s)
            if procs.alive(pid, started):
                return pid
        except (OSError, ValueError):
            pass
        return procs.socket_holder(self.params.host)


def _ping(p: DaemonParams, deadline: Deadline) -> str | None:
    """None when the API answers; otherwise why not."""
    try:
        api.ping(api.client(p.host, max(1.0, min(5.0, deadline.remaining()))), p.host)
        return None
    except AgentError as e:
        return str(e)


def monitor(ctx: Context, deadline: Deadline) -> MonitorResult:
    p = ctx.params
    why = _ping(p, deadline)
    pid = ctx.engine_pid()
    if why is None:
        where = f" (pid {pid})" if pid else ""
        return states.online(100, f"{p.engine} engine at {p.host} answers{where}")
    if pid is not None:
        return states.unknown(f"{p.engine} engine process {pid} lives but its API does not "
                              f"answer: {why}")  # fmt: skip
    if procs.socket_path(p.host) is None:
        return states.unknown(f"{why} (a remote engine: no process to look at here)")
    return states.offline(f"no {p.engine} engine process at {p.host}")


def _argv(p: DaemonParams) -> list[str]:
    argv = shlex.split(p.command)
    if p.options:
        return argv + list(p.options)
    # No options: listen where DockerHost says (the engine's default otherwise).
    if p.host and p.engine == "docker":
        return [*argv, "-H", p.host]
    if p.host:
        return [*argv, p.host]
    return argv


def _systemctl(verb: str, unit: str, *extra: str) -> None:
    try:
        done = subprocess.run(["systemctl", verb, *extra, unit], capture_output=True, text=True,
                              timeout=SYSTEMCTL_TIMEOUT, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AgentError(f"systemctl {verb} {unit}: {type(e).__name__}") from None
    if done.returncode != 0:
        raise AgentError(f"systemctl {verb} {unit}: {done.stderr.strip()[:200]}")


def _spawn(ctx: Context) -> subprocess.Popen[bytes]:
    p = ctx.params
    argv = _argv(p)
    os.makedirs(RUN_DIR, exist_ok=True)
    ctx.say(f"starting {shlex.join(argv)}")
    with open(ctx.log_file, "ab") as log:
        try:
            # Its own session: it outlives this process, and clean kills its whole group.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, close_fds=True,
                                    env={**os.environ, **p.env})  # fmt: skip
        except OSError as e:
            raise AgentError(f"cannot run {argv[0]}: {e.strerror}") from None
    started = procs.start_time(proc.pid)
    tmp = ctx.pid_file + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{proc.pid} {started or 0}\n")
    os.replace(tmp, ctx.pid_file)
    return proc


def _log_tail(ctx: Context) -> str:
    try:
        with open(ctx.log_file, "rb") as f:
            f.seek(max(0, os.path.getsize(ctx.log_file) - 600))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-2:])


def online(ctx: Context) -> Outcome:
    p = ctx.params
    deadline = Deadline(p.timeout("Online"))
    if _ping(p, deadline) is None:
        return Outcome(True, f"{p.engine} engine at {p.host} already answers")
    proc = None
    try:
        if systemd_runs():
            ctx.say(f"systemctl start {p.unit}")
            _systemctl("start", p.unit)
        else:
            pid = ctx.engine_pid()
            if pid is not None:
                lives = f"{p.engine} engine process {pid} lives but does not answer"
                return Outcome(False, f"{lives}: no second one", ended=Ended.UNREACHABLE)
            proc = _spawn(ctx)
    except AgentError as e:
        return Outcome(False, str(e))
    wait = deadline.sub(p.delay_online)
    while True:
        why = _ping(p, wait)
        if why is None:
            return Outcome(True, f"{p.engine} engine at {p.host} answers")
        if proc is not None and proc.poll() is not None:
            return Outcome(False, f"{p.command} exited with {proc.returncode}: {_log_tail(ctx)}")
        if wait.expired():
            return Outcome(False, f"the engine's API did not answer within DelayAfterOnline "
                           f"({p.delay_online} s): {why}", ended=Ended.TIMED_OUT)  # fmt: skip
        time.sleep(min(POLL * 2, wait.remaining()))


def _wait_gone(pid: int, deadline: Deadline) -> bool:
    started = procs.start_time(pid)
    while procs.alive(pid, started):
        if deadline.expired():
            return False
        # Reap it if it is our child (a one-shot online in this process started it).
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(POLL)
    return True


def _signal(pid: int, sig: signal.Signals, group: bool) -> None:
    try:
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def offline(ctx: Context) -> Outcome:
    p = ctx.params
    deadline = Deadline(p.timeout("Offline"))
    try:
        if systemd_runs():
            ctx.say(f"systemctl stop {p.unit}")
            _systemctl("stop", p.unit)
    except AgentError as e:
        return Outcome(False, str(e))
    pid = ctx.engine_pid()
    if pid is None:
        return Outcome(True, f"no {p.engine} engine process at {p.host}")
    ctx.say(f"stopping the {p.engine} engine (pid {pid})")
    _signal(pid, signal.SIGTERM, group=False)
    if _wait_gone(pid, deadline.sub(p.delay_offline)):
        return Outcome(True, f"{p.engine} engine (pid {pid}) stopped")
    return Outcome(False, f"{p.engine} engine (pid {pid}) still runs after DelayAfterOffline "
                   f"({p.delay_offline} s)", ended=Ended.TIMED_OUT)  # fmt: skip


def clean(ctx: Context, reason: int) -> Outcome:
    p = ctx.params
    deadline = Deadline(p.timeout("Clean"))
    if systemd_runs():
        # Not running under systemd: the process below, if any.
        with contextlib.suppress(AgentError):
            _systemctl("kill", p.unit, "--signal=SIGKILL")
    pid = ctx.engine_pid()
    if pid is None:
        return Outcome(True, f"no {p.engine} engine process at {p.host}")
    # Its whole group when kvmguest started it (dockerd's own containerd goes with it).
    _signal(pid, signal.SIGKILL, group=True)
    if _wait_gone(pid, deadline):
        return Outcome(True, f"{p.engine} engine (pid {pid}) killed")
    return Outcome(False, f"{p.engine} engine (pid {pid}) survived SIGKILL",
                   ended=Ended.TIMED_OUT)  # fmt: skip


def action(ctx: Context, token: str, args: list[str]) -> Outcome:
    p = ctx.params
    if token != "info":
        return Outcome(False, f"unknown action {token!r} (supported: info)")
    deadline = Deadline(p.timeout("Action"))
    try:
        client = api.client(p.host, max(1.0, deadline.remaining()))
        version = api.call(p.host, "version", lambda: client.api.version())
        info = api.call(p.host, "info", lambda: client.api.info())
    except AgentError as e:
        return Outcome(False, str(e))
    lines = [f"engine: {p.engine} at {p.host}, pid {ctx.engine_pid()}"]
    for comp in version.get("Components") or []:
        lines.append(f"{comp.get('Name')}: {comp.get('Version')}")
    lines.append(f"API {version.get('ApiVersion')}, containers {info.get('Containers')} "
                 f"(running {info.get('ContainersRunning')}), images {info.get('Images')}, "
                 f"live-restore {info.get('LiveRestoreEnabled')}")  # fmt: skip
    return Outcome(True, f"{p.engine} engine answers", output=cap_output("\n".join(lines)))
