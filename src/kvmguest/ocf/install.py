"""Installing the resource agent: a small shell wrapper at
``/usr/lib/ocf/resource.d/kvmguest/KVMGuest``.

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

from kvmguest.ocf.metadata import render, version

AGENT_PATH = Path("/usr/lib/ocf/resource.d/kvmguest/KVMGuest")
_EOF = "__KVMGUEST_METADATA_END__"


class InstallError(Exception):
    """The agent cannot be installed (message says why)."""


def launch_code(paths: list[str]) -> str:
    """The Python that the wrapper runs, without ``site``, with ``paths`` on sys.path."""
    return f"import sys; sys.path += {json.dumps(paths)}; from kvmguest.ocf.main import run; run()"


def wrapper(python: str, metadata_xml: str, paths: list[str] | None = None) -> str:
    if _EOF in metadata_xml:
        raise InstallError("the meta-data holds the here-document delimiter")
    # -S: no site (its .pth processing costs every monitor ~2 ms; the agent runs it itself
    # when it needs more than the lean path); -c: no runpy (~3 ms).
    run = f"-S -P -c {shlex.quote(launch_code(paths))}" if paths else "-P -m kvmguest.ocf"
    return f"""#!/bin/sh
# ocf:kvmguest:KVMGuest -- written by `kvmguest ocf install` (kvmguest {version()}).
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
esac
if [ ! -x "$KVMGUEST_PYTHON" ]; then
    echo "${{OCF_EXIT_REASON_PREFIX:-ocf-exit-reason:}}$KVMGUEST_PYTHON is not executable; \
reinstall the agent with: kvmguest ocf install" >&2
    exit 5
fi
# -P: the working directory (Pacemaker's cores directory) is not put on sys.path.
exec "$KVMGUEST_PYTHON" {run} "$@"
"""


# Run in the target interpreter: byte-compile kvmguest (a monitor that compiles its modules
# from source on every run costs ~15 ms more: PYTHONDONTWRITEBYTECODE, or a directory the
# agent cannot write, keeps Python from caching them itself), import the agent, and print
# where kvmguest and libvirt are (the wrapper puts them on sys.path itself).
_CHECK = (
    "import compileall, json, os, kvmguest, libvirt; "
    "compileall.compile_dir(os.path.dirname(kvmguest.__file__), quiet=2); "
    "import kvmguest.ocf.agent, kvmguest.ocf.fastmon; "
    "print(json.dumps(sorted({os.path.dirname(os.path.dirname(kvmguest.__file__)), "
    "os.path.dirname(libvirt.__file__)})))"
)


def check_python(python: str) -> list[str]:
    """The interpreter must import the agent (and libvirt) as root will run it; returns
    the directories kvmguest and libvirt are imported from."""
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


def install(python: str | None = None, dest: Path = AGENT_PATH, *, check: bool = True) -> Path:
    """Write the wrapper (mode 0755) atomically; returns its path."""
    interpreter = python or sys.executable
    paths = check_python(interpreter) if check else None
    text = wrapper(interpreter, render(), paths)
    dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".KVMGuest.", dir=dest.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def uninstall(dest: Path = AGENT_PATH) -> bool:
    try:
        dest.unlink()
    except FileNotFoundError:
        return False
    return True
