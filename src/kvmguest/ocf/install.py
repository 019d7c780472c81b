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
import shutil
import subprocess
import sys
from pathlib import Path

from kvmguest.agents import registry
from kvmguest.guest.fsutil import atomic_write
from kvmguest.ocf import companion_client
from kvmguest.ocf.companion_client import DEFAULT_SOCKET as COMPANION_SOCKET
from kvmguest.ocf.companion_client import FALLBACK
from kvmguest.ocf.metadata import render, version

OCF_DIR = Path("/usr/lib/ocf/resource.d/kvmguest")
# The companion's monitor client (stdlib only: imported alone, not as part of kvmguest).
CLIENT = str(Path(companion_client.__file__).resolve())
PACKAGED_CLIENT = "/usr/lib/python3/dist-packages/kvmguest/ocf/companion_client.py"
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
    packaged: bool = False,
) -> str:
    if _EOF in metadata_xml:
        raise InstallError("the meta-data holds the here-document delimiter")
    type_q = shlex.quote(type_name)
    # Imported, not run as a script: its compiled form is used (compiling it costs ~1 ms).
    client_code = (
        f"import sys; sys.path.insert(0, {json.dumps(os.path.dirname(client))}); "
        "import companion_client; companion_client.main()"
    )
    origin = (
        f"installed by the kvmguest package (kvmguest {version()}); dpkg upgrades it."
        if packaged
        else f"written by `kvmguest ocf install` (kvmguest {version()})."
    )
    again = "reinstall the kvmguest package" if packaged else "kvmguest ocf install"
    # -S: no site (its .pth processing costs every monitor ~2 ms; the agent runs it itself
    # when it needs more than the lean path); -c: no runpy (~3 ms).
    if paths:
        run = f"-S -P -c {shlex.quote(launch_code(paths, type_name))}"
    else:
        run = "-P -m kvmguest.ocf"
    return f"""#!/bin/sh
# ocf:kvmguest:{type_name} -- {origin}
# meta-data is answered here, from XML written at install time: Pacemaker's controller runs
# it as user hacluster, who may not be able to run the Python below. Every other action
# runs the agent in that Python.
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
{again}" >&2
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


def dpkg_owner(path: Path) -> str | None:
    """The Debian package that owns ``path`` (``dpkg-query -S``), or None."""
    if shutil.which("dpkg-query") is None:
        return None
    try:
        proc = subprocess.run(
            ["dpkg-query", "-S", str(path)], capture_output=True, text=True, timeout=30,
            check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    # "kvmguest: /usr/lib/ocf/resource.d/kvmguest/KVMGuest" (diversions start otherwise)
    for line in proc.stdout.splitlines():
        owner, sep, owned = line.partition(": ")
        if sep and owned.strip() == str(path):
            return owner.split(",")[0].strip()
    return None


def install(
    python: str | None = None,
    dest_dir: Path = OCF_DIR,
    *,
    check: bool = True,
    packaged: bool = False,
) -> list[Path]:
    """Write every OCF agent's wrapper (mode 0755) atomically; returns their paths.
    Refuses (InstallError, nothing written) a path that a Debian package owns."""
    interpreter = python or sys.executable
    agents = registry.ocf_agents()
    if not packaged:
        for agent in agents:
            owner = dpkg_owner(dest_dir / agent.type_name)
            if owner is not None:
                raise InstallError(
                    f"{dest_dir / agent.type_name} belongs to the Debian package {owner}, "
                    "which installs and upgrades the agents itself; nothing was written "
                    "(to use this copy instead, remove that package or give --dir)"
                )
    paths = check_python(interpreter) if check else None
    # The client as the target interpreter has it (the first of its paths that holds one).
    found = [Path(p, "kvmguest", "ocf", "companion_client.py") for p in paths or ()]
    client = next((str(c) for c in found if c.is_file()), CLIENT)
    if packaged:
        client = PACKAGED_CLIENT  # where dh_python3 installs kvmguest for Debian's python3
    written = []
    for agent in agents:
        name = agent.type_name
        text = wrapper(interpreter, render(type_name=name), name, paths, client, packaged)
        dest = dest_dir / name
        dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        atomic_write(dest, text, 0o755)
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


SYSTEMD_DIR = Path("/etc/systemd/system")
PACKAGED_PROGRAM = "/usr/bin/kvmguest"


def unit_texts(program: str) -> dict[str, str]:
    """The project's systemd units (packaging/systemd, shipped as package data) with their
    ``ExecStart=/usr/bin/kvmguest`` pointing at ``program``, the kvmguest really run."""
    import importlib.resources

    units = importlib.resources.files("kvmguest.ocf") / "units"
    out = {}
    for entry in sorted(units.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".service"):
            text = entry.read_text()
            out[entry.name] = text.replace(f"={PACKAGED_PROGRAM} ", f"={program} ")
    return out


def install_units(program: str, dest_dir: Path = SYSTEMD_DIR) -> list[Path]:
    """Write the units for a kvmguest that is not the package's (a pip install), unless a
    package owns them; returns the paths written. Enabling them is the operator's call."""
    written = []
    for name, text in unit_texts(program).items():
        dest = dest_dir / name
        if dpkg_owner(dest) is not None or dpkg_owner(Path("/lib/systemd/system") / name):
            continue
        dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        atomic_write(dest, text, 0o644)
        written.append(dest)
    return written
