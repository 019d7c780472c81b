#!/usr/bin/env bash
# Install everything the project and its tests need on Debian 12 (bookworm), then the
# Python venv (.venv at the repository root, editable install with the test extras).
#
#   scripts/install-deps.sh [--no-apt] [--no-venv]
#
# Fast when everything is there: apt is skipped when every package is installed, pip is
# skipped when .venv already holds an install of the current pyproject.toml.
# Environment: PYTHON (interpreter for the venv, default python3),
#              APT_MAX_AGE_DAYS (refresh apt lists older than this, default 7).
set -euo pipefail

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export DEBIAN_FRONTEND=noninteractive
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
APT_MAX_AGE_DAYS=${APT_MAX_AGE_DAYS:-7}

PACKAGES=(
    # libvirt + QEMU (TCG guests), and what libvirt-python builds against
    qemu-system-x86 qemu-utils seabios ipxe-qemu
    libvirt-daemon-system libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
    libvirt-dev pkg-config gcc libc6-dev python3-venv python3-dev
    # the test guest (scripts/build-guest.sh) and ISO images
    busybox-static cpio gzip xz-utils zstd xorriso
    # ovirt-engine-sdk-python builds (pycurl, lxml-free C extension)
    libxml2-dev libcurl4-openssl-dev libssl-dev
    # Pacemaker / Corosync test clusters, ocf-tester
    pacemaker corosync resource-agents pacemaker-cli-utils libxml2-utils crmsh
    # container engines for DockerDaemon / DockerContainer (tests start private instances),
    # and Debian's Docker SDK for the package
    docker.io podman runc python3-docker
    # namespaces, networking, misc tools used by the scripts
    iproute2 util-linux mount procps coreutils ca-certificates
    # the Debian package (scripts/package-test.sh): build, lintian, and the runtime
    # python3-* packages it depends on (Debian's python3 runs the installed package)
    debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools
    python3-wheel dpkg-dev fakeroot lintian
    python3-libvirt python3-lark python3-click python3-rich python3-cryptography
    python3-pycdlib python3-pyroute2 python3-prometheus-client
)

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

do_apt=1 do_venv=1
for arg in "$@"; do
    case $arg in
        --no-apt) do_apt=0 ;;
        --no-venv) do_venv=0 ;;
        *) die "unknown argument $arg (usage: $0 [--no-apt] [--no-venv])" ;;
    esac
done

missing_packages() {
    local p status
    for p in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [[ $status == "install ok installed" ]] || echo "$p"
    done
}

apt_lists_fresh() {
    local newest
    newest=$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -printf '%T@\n' \
        2>/dev/null | sort -n | tail -1)
    [[ -n $newest ]] || return 1
    (( ${newest%.*} > $(date +%s) - APT_MAX_AGE_DAYS * 86400 ))
}

if (( do_apt )); then
    mapfile -t missing < <(missing_packages)
    if (( ${#missing[@]} )); then
        [[ $(id -u) -eq 0 ]] || die "must run as root to install: ${missing[*]}"
        if ! apt_lists_fresh; then
            log "apt-get update"
            apt-get update -q
        fi
        log "installing: ${missing[*]}"
        if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
            # Stale lists (404 on a superseded version): refresh once and retry.
            apt-get update -q
            apt-get install -y -q --no-install-recommends "${missing[@]}"
        fi
    else
        log "apt packages: all ${#PACKAGES[@]} installed"
    fi
fi

if (( do_venv )); then
    VENV=$REPO/.venv
    STAMP=$VENV/.kvmguest-install-stamp
    if [[ ! -x $VENV/bin/python ]]; then
        log "creating $VENV with $($PYTHON --version 2>&1)"
        "$PYTHON" -m venv "$VENV"
    fi
    want=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
    if [[ -f $STAMP && $(<"$STAMP") == "$want" ]] &&
        (cd /tmp && "$VENV/bin/python" -c 'import kvmguest, libvirt, pytest') 2>/dev/null; then
        log "venv: up to date ($VENV)"
    else
        log "venv: pip install -e '.[test]'"
        (cd "$REPO" && "$VENV/bin/python" -m pip install -q -e '.[test]')
        echo "$want" >"$STAMP"
    fi
fi
log "done"
