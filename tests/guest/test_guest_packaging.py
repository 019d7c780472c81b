"""The guest side stands alone: its imports, the single-file bundle, the systemd unit."""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import kvmguest.guest
from kvmguest.guest.netreconfig import main

from .guest_testlib import SITE_A, GuestNet, needs_netns

GUEST_DIR = Path(kvmguest.guest.__file__).parent
REPO = GUEST_DIR.parents[2]
BUILD = REPO / "scripts" / "build-guest-bundle.sh"
ALLOWED_THIRD_PARTY = {"pycdlib", "pyroute2"}


def guest_modules() -> list[Path]:
    return sorted(GUEST_DIR.glob("*.py"))


@pytest.mark.parametrize("module", guest_modules(), ids=lambda p: p.name)
def test_imports_only_stdlib_and_the_guest_package(module: Path) -> None:
    tree = ast.parse(module.read_text(), str(module))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module.name}: use absolute imports"
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top == "kvmguest":
                assert name == "kvmguest.guest" or name.startswith("kvmguest.guest."), name
            else:
                assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, name


@pytest.mark.parametrize("module", guest_modules(), ids=lambda p: p.name)
def test_grammar_of_python_3_8(module: Path) -> None:
    """Guests run older Pythons than the agent; the bundle promises 3.8."""
    ast.parse(module.read_text(), str(module), feature_version=(3, 8))
    assert "from __future__ import annotations" in module.read_text() or module.name in (
        "__init__.py",
        "__main__.py",
    )


def test_agent_side_import_is_light() -> None:
    code = (
        "import sys, kvmguest.guest.payload as p; "
        "p.validate_dropts({'ConfigureNetwork': '0'}); "
        "heavy = {'pycdlib', 'pyroute2', 'kvmguest.guest.netlink', 'subprocess'}; "
        "heavy &= set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unit_file() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(GUEST_DIR / "kvmguest-net-reconfig.service")
    assert unit["Service"]["Type"] == "oneshot"
    assert unit["Service"]["RemainAfterExit"] == "yes"
    assert "3" in unit["Service"]["SuccessExitStatus"].split()
    before = unit["Unit"]["Before"].split()
    assert "network-pre.target" in before and "network-online.target" in before
    assert "network-pre.target" in unit["Unit"]["Wants"].split()
    assert "systemd-udev-trigger.service" in unit["Unit"]["After"].split()
    assert unit["Service"]["ExecStart"].startswith("/usr/local/bin/kvmguest-net-reconfig ")


def test_print_unit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--print-unit"]) == 0
    assert capsys.readouterr().out == (GUEST_DIR / "kvmguest-net-reconfig.service").read_text()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bundle")
    env_python = {"PYTHON": sys.executable}
    built = {}
    for name, extra in (("full", []), ("bare", ["--no-pycdlib"])):
        target = out / f"{name}.pyz"
        subprocess.run(
            ["bash", str(BUILD), *extra, str(target)],
            check=True,
            capture_output=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env_python},
        )
        built[name] = target
    return built


def test_bundle_contents(bundles: dict[str, Path]) -> None:
    names = {n for n in zipfile.ZipFile(bundles["full"]).namelist() if not n.endswith("/")}
    assert "__main__.py" in names
    assert "kvmguest/guest/netreconfig.py" in names
    assert "kvmguest/guest/kvmguest-net-reconfig.service" in names
    assert "pycdlib/pycdlib.py" in names
    assert {n.split("/")[0] for n in names} == {"__main__.py", "kvmguest", "pycdlib"}
    assert {n for n in names if n.startswith("kvmguest/") and "/guest/" not in n} == {
        "kvmguest/__init__.py"
    }
    bare = set(zipfile.ZipFile(bundles["bare"]).namelist())
    assert not any(n.startswith("pycdlib") for n in bare)
    assert bundles["full"].stat().st_mode & 0o111


def _system_python() -> str:
    # An interpreter without the project's virtualenv. Run with -S (no site): Debian's
    # python3-pycdlib and python3-pyroute2 (the Debian package's dependencies, installed by
    # scripts/install-deps.sh) must not be found, as in a guest with the standard library only.
    return "/usr/bin/python3"


def test_bundle_runs_on_a_bare_python(bundles: dict[str, Path]) -> None:
    for bundle in bundles.values():
        result = subprocess.run(
            [_system_python(), "-I", "-S", str(bundle), "--help"], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert "Exit codes: 0 done or nothing to change" in result.stdout


@needs_netns
def test_bundle_applies_a_site_without_pyroute2(
    bundles: dict[str, Path], guest: GuestNet, tmp_path: Path
) -> None:
    from kvmguest.guest.iso import build_iso
    from kvmguest.guest.payload import payload_from_dropts

    image = tmp_path / "dr.iso"
    build_iso(payload_from_dropts(SITE_A, "siteA"), image)
    argv = ["ip", "netns", "exec", guest.ns, _system_python(), "-I", "-S", str(bundles["full"])]
    args = ["--source", str(image), "--root", str(guest.root), "--backend", "networkd"]
    result = subprocess.run([*argv, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert guest.addresses() == ["198.51.100.10/24"]
    assert guest.default_routes() == [("198.51.100.1", "eth0")]
    # Without pycdlib the image can only be mounted; here it cannot, and nothing changes.
    # -S: not even a pycdlib of the system's own (Debian's python3-pycdlib) is seen.
    bare = [*argv[:-2], "-S", "-I", str(bundles["bare"])]
    result = subprocess.run([*bare, *args], capture_output=True, text=True)
    assert result.returncode == 3, result.stderr
    assert "cannot mount" in result.stderr
    assert guest.addresses() == ["198.51.100.10/24"]
