"""The man page and the bash completion come from the click definitions: every command, and
every option of it, is in both, and the completion completes in a real bash."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from kvmguest.cli.main import cli
from kvmguest.cli.manual import render_bash, render_man, render_man_argparse, walk
from kvmguest.guest.netreconfig import build_parser

COMMANDS = [" ".join(path) for path, _ in walk(cli)]
MAN = render_man(cli, "kvmguest", "0.1.0", dt.date(2026, 12, 6))
BASH = render_bash(cli, "kvmguest")


def _man_text(roff: str) -> str:
    return roff.replace("\\-", "-").replace("\\e", "\\")


def test_the_walk_finds_every_command() -> None:
    for expected in ("monitor", "online", "status", "resource", "export pacemaker", "ocf install",
                     "encrypt", "dr-payload", "types", "validate", "group", "history"):  # fmt: skip
        assert expected in COMMANDS
    assert "generate" not in COMMANDS  # hidden: the build's, not the operator's


@pytest.mark.parametrize("path", COMMANDS)
def test_every_command_and_option_is_in_the_man_page(path: str) -> None:
    text = _man_text(MAN)
    assert f".SS {path}\n" in text
    cmd = dict(walk(cli))[tuple(path.split())]
    for param in cmd.params:
        if isinstance(param, click.Option) and not param.hidden:
            for opt in param.opts:
                assert opt in text, f"{opt} of {path} is missing"


@pytest.mark.parametrize("path", COMMANDS)
def test_every_command_and_option_is_in_the_completion(path: str) -> None:
    assert f"\n        '{path}') words=" in BASH or f"\n        {path}) words=" in BASH
    cmd = dict(walk(cli))[tuple(path.split())]
    line = next(
        ln
        for ln in BASH.splitlines()
        if ln.strip().startswith((f"'{path}')", f"{path})")) and "words=" in ln
    )
    for param in cmd.params:
        if isinstance(param, click.Option):
            for opt in param.opts:
                assert opt in line, f"{opt} of {path} is missing from its completion"


def _complete(words: list[str], tmp_path: Path) -> list[str]:
    script = tmp_path / "kvmguest.bash"
    script.write_text(BASH)
    quoted = " ".join(f"'{w}'" for w in words)
    proc = subprocess.run(
        ["bash", "-c", f"source {script}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
         '_kvmguest; printf "%s\\n" "${COMPREPLY[@]}"'],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return proc.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_completion_completes_in_bash(tmp_path: Path) -> None:
    assert _complete(["kvmguest", "mon"], tmp_path) == ["monitor"]
    assert set(_complete(["kvmguest", "group", ""], tmp_path)) >= {"switch", "freeze", "--to"}
    assert _complete(["kvmguest", "export", "pac"], tmp_path) == ["pacemaker"]
    assert "--format" in _complete(["kvmguest", "export", "pacemaker", "--f"], tmp_path)
    # The global options after the command, too.
    assert "--json" in _complete(["kvmguest", "-c", "x.cf", "status", "--j"], tmp_path)
    assert set(_complete(["kvmguest", "resource", ""], tmp_path)) >= {"show", "probe"}


def test_the_man_pages_are_valid_roff(tmp_path: Path) -> None:
    if shutil.which("groff") is None and shutil.which("man") is None:
        pytest.skip("neither groff nor man is installed")
    guest = render_man_argparse(build_parser(), 8, "0.1.0", dt.date(2026, 12, 6), "apply it")
    for name, text in (("kvmguest.1", MAN), ("kvmguest-net-reconfig.8", guest)):
        page = tmp_path / name
        page.write_text(text)
        if shutil.which("man"):
            proc = subprocess.run(["man", "--warnings", "-l", "-E", "UTF-8", str(page)],
                                  capture_output=True, text=True, timeout=60,
                                  env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin"})  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            assert "warning" not in proc.stderr.lower(), proc.stderr
    assert "--wait-source" in _man_text(guest)
