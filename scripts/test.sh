#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian 12 machine and pass them all:
# apt packages and the Python venv, the tiny TCG guest, the host's libvirtd and a second
# libvirt host; then lint (ruff), type check (mypy) and the whole pytest suite, with the
# real-component tests required (KVMGUEST_REQUIRE_SYSTEM=1: missing = failure, not skip).
# Run as root. Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/unit -x`).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
[[ $(id -u) -eq 0 ]] || { echo "scripts/test.sh: run as root (it starts libvirtd, namespaces, Pacemaker)" >&2; exit 1; }

step() { printf '\n=== %s (%(%H:%M:%S)T)\n' "$*" -1; }

step "install: apt packages and the Python environment"
bash scripts/install-deps.sh

step "real components: guest images, libvirtd, second libvirt host"
# shellcheck source=scripts/ci-env.sh
source scripts/ci-env.sh

step "lint: ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench

step "type check: mypy --strict"
.venv/bin/mypy

step "Debian package: build, lintian, install, demo/validate/ocf-tester with Debian's python3"
bash scripts/package-test.sh

step "tests"
export KVMGUEST_REQUIRE_SYSTEM=1
# Tests write to a private copy of the key/cache dirs, never to the real /etc/kvmguest.
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$REPO/.cache}
.venv/bin/python -m pytest -p no:cacheprovider -q -ra --durations=15 "${@:-tests}"
