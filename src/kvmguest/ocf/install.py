"""Installing the resource agents: one small shell wrapper per agent with a Pacemaker
side, at ``/usr/lib/ocf/resource.d/kvmguest/<type>``.

``meta-data`` prints XML written into the wrapper at install time: Pacemaker's controller
runs it as user hacluster, who often cannot run the Python kvmguest is installed in (a
virtualenv under /root). Every other action execs that Python on ``kvmguest.ocf``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from kvmguest.agents import registry
from kvmguest.ocf import companion_client
from kvmguest.ocf.companion_client import DEFAULT_SOCKET as COMPANION_SOCKET
from kvmguest.ocf.companion_client import FALLBACK
from kvmguest.ocf.metadata import render, version

OCF_DIR = Path("/usr/lib/ocf/resource.d/kvmguest")
# The companion's monitor client (stdlib only: imported alone, not as part of kvmguest).
CLIENT = str(Path(companion_client.__file__).resolve())
_EOF = "__KVMGUEST_METADATA_END__"


class InstallError(Exception):
    """The agent cannot be installed (message says why)."""


def launch_code(paths: list[str], type_name: str) -> str:
    """The Python that the wrapper runs, without ``site``, with ``paths`` on sys.path."""
    return (
        f"import sys; sys.path += {json.dumps(paths)}; "
        f"from kvmguest.ocf.main import run; run({type_name!r})"
    )


def wrapper(
    python: str,
    metadata_xml: str,
    type_name: str,
    paths: list[str] | None = None,
    client: str = CLIENT,
) -> str:
    if _EOF in metadata_xml:
        raise InstallError("the meta-data holds the here-document delimiter")
    type_q = shlex.quote(type_name)
    # Imported, not run as a script: its compiled form is used (compiling it costs ~1 ms).
    client_code = (
        f"import sys; sys.path.insert(0, {json.dumps(os.path.dirname(client))}); "
        "import companion_client; companion_client.main()"
    )
    # -S: no site (its .pth processing costs every monitor ~2 ms; the agent runs it itself
    # when it needs more than the lean path); -c: no runpy (~3 ms).
    if paths:
        run = f"-S -P -c {shlex.quote(launch_code(paths, type_name))}"
    else:
        run = "-P -m kvmguest.ocf"
    return f"""#!/bin/sh
# ocf:kvmguest:{type_name} -- written by `kvmguest ocf install` (kvmguest {version()}).
# meta-data is answered here, from XML written at install time: Pacemaker's controller runs
# it as user hacluster, who may not be able to run the Python below. Every other action
# runs the agent in that Python. Reinstall after upgrading kvmguest.
KVMGUEST_PYTHON={shlex.quote(python)}
case "$1" in
meta-data)
    cat <<'{_EOF}'
{metadata_xml}{_EOF}
    exit 0
    ;;
monitor|status)
    # The companion (kvmguest agent --pacemaker) answers from its event-driven state, with
    # the standard library only; exit {FALLBACK}: it cannot, take the direct path below.
    if [ -S "${{KVMGUEST_COMPANION_SOCKET:-{COMPANION_SOCKET}}}" ] && [ -x "$KVMGUEST_PYTHON" ]
    then
        OCF_RESOURCE_TYPE={type_q} "$KVMGUEST_PYTHON" -I -S -c {shlex.quote(client_code)} "$1"
        rc=$?
        [ "$rc" -ne {FALLBACK} ] && exit "$rc"
    fi
    ;;
esac
if [ ! -x "$KVMGUEST_PYTHON" ]; then
    echo "${{OCF_EXIT_REASON_PREFIX:-ocf-exit-reason:}}$KVMGUEST_PYTHON is not executable; \
reinstall the agent with: kvmguest ocf install" >&2
    exit 5
fi
# -P: the working directory (Pacemaker's cores directory) is not put on sys.path.
OCF_RESOURCE_TYPE={shlex.quote(type_name)} exec "$KVMGUEST_PYTHON" {run} "$@"
"""


def import_paths() -> list[str]:
    """Run in the target interpreter: byte-compile kvmguest (a monitor that compiles its
    modules from source on every run costs ~15 ms more: PYTHONDONTWRITEBYTECODE, or a
    directory the agent cannot write, keeps Python from caching them itself), import every
    OCF agent and its drivers, and return where kvmguest and the drivers are (the wrapper
    puts them on sys.path itself)."""
    import compileall
    import importlib

    import kvmguest

    here = os.path.dirname(kvmguest.__file__)
    compileall.compile_dir(here, quiet=2)
    paths = {os.path.dirname(here)}
    for agent in registry.ocf_agents():
        side = agent.ocf()
        for name in side.imports if side is not None else ():
            module = importlib.import_module(name)
            top = importlib.import_module(name.split(".")[0])
            if top.__name__ == "kvmguest" or module.__file__ is None or top.__file__ is None:
                continue
            # A package's directory is its parent's entry on sys.path; a module's, its own.
            is_pkg = os.path.basename(top.__file__) == "__init__.py"
            paths.add(os.path.dirname(os.path.dirname(top.__file__) if is_pkg else top.__file__))
    return sorted(paths)


_CHECK = (
    "import json; from kvmguest.ocf.install import import_paths; print(json.dumps(import_paths()))"
)


def check_python(python: str) -> list[str]:
    """The interpreter must import the agents (and their drivers) as root will run them;
    returns the directories kvmguest and the drivers are imported from."""
    if not os.access(python, os.X_OK):
        raise InstallError(f"{python} is not an executable")
    try:
        proc = subprocess.run(
            [python, "-P", "-c", _CHECK],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InstallError(f"{python} cannot run the agent: {e}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise InstallError(f"{python} cannot import the agent: {last}")
    paths: list[str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return paths


def install(
    python: str | None = None, dest_dir: Path = OCF_DIR, *, check: bool = True
) -> list[Path]:
    """Write every OCF agent's wrapper (mode 0755) atomically; returns their paths."""
    interpreter = python or sys.executable
    paths = check_python(interpreter) if check else None
    # The client as the target interpreter has it (the first of its paths that holds one).
    found = [Path(p, "kvmguest", "ocf", "companion_client.py") for p in paths or ()]
    client = next((str(c) for c in found if c.is_file()), CLIENT)
    written = []
    for agent in registry.ocf_agents():
        name = agent.type_name
        text = wrapper(interpreter, render(type_name=name), name, paths, client)
        dest = dest_dir / name
        dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=dest.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o755)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(dest)
    return written


def uninstall(dest_dir: Path = OCF_DIR) -> list[Path]:
    """Remove every OCF agent's wrapper; returns those that were there."""
    removed = []
    for agent in registry.ocf_agents():
        dest = dest_dir / agent.type_name
        try:
            dest.unlink()
        except FileNotFoundError:
            continue
        removed.append(dest)
    return removed
