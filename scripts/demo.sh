#!/usr/bin/env bash
# Set up what the demo needs and run kvmguest's main job on libvirt's embedded
# test:///default driver (in-process: no daemon, no root beyond the package install).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

need=(libvirt-dev pkg-config gcc python3-venv)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -q
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [[ ! -x .venv/bin/kvmguest ]]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q -e .
fi
exec .venv/bin/kvmguest demo "$@"
