#!/usr/bin/env bash
# One entry point for the system-test environment:
#   1. (with --install-deps) scripts/install-deps.sh: apt packages + .venv
#   2. scripts/build-guest.sh "$KVMGUEST_GUEST_DIR"   (cached)
#   3. scripts/libvirtd.sh start                     (the host's qemu:///system)
#   4. scripts/host2.sh start                        (second libvirt host; --no-host2 skips)
#
#   scripts/ci-env.sh [--install-deps] [--no-host2]          run; prints `export ...` lines
#   eval "$(scripts/ci-env.sh)"                               ... and apply them
#   source scripts/ci-env.sh [--install-deps] [--no-host2]   run and export into this shell
#
# Exported: KVMGUEST_GUEST_DIR (default /srv/kvmguest-ci/guest), KVMGUEST_IMAGE_DIR
# (default /srv/kvmguest-ci/images), KVMGUEST_HOST2_DIR (default /srv/kvmguest-host2),
# KVMGUEST_HOST2_URI, KVMGUEST_HOST2_MIGRATE_URI. Quick (~0.5 s) when everything is up.
# Progress goes to stderr, the export lines to stdout.

_kvmguest_ci_env() (
    set -euo pipefail
    local here install=0 host2=1 arg
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    for arg in "$@"; do
        case $arg in
            --install-deps) install=1 ;;
            --no-host2) host2=0 ;;
            *) echo "ci-env: unknown argument $arg" >&2; return 2 ;;
        esac
    done
    export KVMGUEST_GUEST_DIR=${KVMGUEST_GUEST_DIR:-/srv/kvmguest-ci/guest}
    export KVMGUEST_IMAGE_DIR=${KVMGUEST_IMAGE_DIR:-/srv/kvmguest-ci/images}
    export KVMGUEST_HOST2_DIR=${KVMGUEST_HOST2_DIR:-/srv/kvmguest-host2}
    (( install )) && "$here/install-deps.sh"
    "$here/build-guest.sh" "$KVMGUEST_GUEST_DIR"
    install -d -m 0755 "$(dirname "$KVMGUEST_IMAGE_DIR")" "$KVMGUEST_IMAGE_DIR"
    "$here/libvirtd.sh" start
    echo "ci-env: host libvirtd: $("$here/libvirtd.sh" status)" >&2
    if (( host2 )); then
        "$here/host2.sh" start
        echo "ci-env: $("$here/host2.sh" status)" >&2
    fi
    printf 'export KVMGUEST_GUEST_DIR=%q\n' "$KVMGUEST_GUEST_DIR"
    printf 'export KVMGUEST_IMAGE_DIR=%q\n' "$KVMGUEST_IMAGE_DIR"
    printf 'export KVMGUEST_HOST2_DIR=%q\n' "$KVMGUEST_HOST2_DIR"
    printf 'export KVMGUEST_HOST2_URI=%q\n' "$("$here/host2.sh" uri)"
    printf 'export KVMGUEST_HOST2_MIGRATE_URI=%q\n' "$("$here/host2.sh" migrate-uri)"
)

if [[ ${BASH_SOURCE[0]} != "$0" ]]; then
    # Sourced: run in a subshell (set -e must not leak into the caller), then export.
    if _kvmguest_ci_env_out=$(_kvmguest_ci_env "$@"); then
        eval "$_kvmguest_ci_env_out"
        unset _kvmguest_ci_env_out
    else
        unset _kvmguest_ci_env_out
        return 1
    fi
else
    set -euo pipefail
    _kvmguest_ci_env "$@"
fi
