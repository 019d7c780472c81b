#!/usr/bin/env bash
# The host's libvirtd (qemu:///system), for the system tests. No systemd here: the daemons
# are started by hand, as root.
#
#   scripts/libvirtd.sh start          fix /dev/kvm, start virtlogd + libvirtd if not
#                                      running, wait until `virsh version` answers
#   scripts/libvirtd.sh stop [--kill]  stop libvirtd only (SIGTERM, SIGKILL after
#                                      LIBVIRTD_STOP_TIMEOUT; --kill: SIGKILL at once).
#                                      Guests (QEMU) and virtlogd keep running; a later
#                                      `start` reconnects to them. Used by tests to simulate
#                                      "libvirtd down".
#   scripts/libvirtd.sh status         exit 0 if libvirtd answers, 1 if not; prints a line
#
# Environment: LIBVIRTD_START_TIMEOUT (s, default 30), LIBVIRTD_STOP_TIMEOUT (s, default 10).
# Only daemons in this script's mount namespace are considered: the libvirtds of
# scripts/host2.sh and of the Pacemaker test nodes (other namespaces) are never touched.
set -euo pipefail

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
URI=qemu:///system
START_TIMEOUT=${LIBVIRTD_START_TIMEOUT:-30}
STOP_TIMEOUT=${LIBVIRTD_STOP_TIMEOUT:-10}
LOGDIR=/var/log/libvirt

log() { printf 'libvirtd.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

now_ms() {
    local up
    read -r up _ </proc/uptime
    echo $(( ${up%.*} * 1000 + 10#${up#*.} * 10 ))
}

MY_MNT=$(readlink /proc/self/ns/mnt)
MY_PID_NS=$(readlink /proc/self/ns/pid)

# pids of live processes named COMM in our mount and pid namespaces.
pids_of() {
    local comm=$1 p pid state
    for p in /proc/[0-9]*; do
        [[ $(cat "$p/comm" 2>/dev/null) == "$comm" ]] || continue
        [[ $(readlink "$p/ns/mnt" 2>/dev/null) == "$MY_MNT" ]] || continue
        [[ $(readlink "$p/ns/pid" 2>/dev/null) == "$MY_PID_NS" ]] || continue
        pid=${p#/proc/}
        state=$(awk '{print $3}' "$p/stat" 2>/dev/null) || continue
        [[ $state == Z || $state == X ]] && continue
        echo "$pid"
    done
}

answers() { timeout 5 virsh -c "$URI" version >/dev/null 2>&1; }

# wait_for TIMEOUT_S CMD... -- poll CMD every 0.1 s until it succeeds or the deadline passes.
wait_for() {
    local deadline=$(( $(now_ms) + $1 * 1000 ))
    shift
    until "$@"; do
        (( $(now_ms) < deadline )) || return 1
        sleep 0.1
    done
}

no_libvirtd() { [[ -z $(pids_of libvirtd) ]]; }

pid_list() { pids_of "$1" | paste -sd' ' -; }

fix_kvm() {
    # Without this (no udev here: /dev/kvm is 0600 root:root) libvirt re-probes QEMU on
    # every start and a domain start takes ~45 s.
    if [[ -e /dev/kvm ]]; then
        getent group kvm >/dev/null && chown root:kvm /dev/kvm
        chmod 0660 /dev/kvm
    fi
}

do_start() {
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    fix_kvm
    if answers; then
        log "libvirtd already running (pid $(pid_list libvirtd))"
        return 0
    fi
    local t0
    t0=$(now_ms)
    mkdir -p "$LOGDIR"
    if [[ -z $(pids_of virtlogd) ]]; then
        virtlogd -d
    fi
    if [[ -z $(pids_of libvirtd) ]]; then
        LIBVIRT_LOG_OUTPUTS="3:file:$LOGDIR/libvirtd.log" libvirtd -d
    else
        log "libvirtd process exists but does not answer yet; waiting"
    fi
    if ! wait_for "$START_TIMEOUT" answers; then
        die "libvirtd did not answer within ${START_TIMEOUT}s (see $LOGDIR/libvirtd.log)"
    fi
    log "libvirtd started (pid $(pid_list libvirtd)) in $(( $(now_ms) - t0 )) ms"
}

do_stop() {
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    local sig=TERM pids
    [[ ${1:-} == --kill ]] && sig=KILL
    pids=$(pids_of libvirtd)
    if [[ -z $pids ]]; then
        log "libvirtd not running"
        return 0
    fi
    # shellcheck disable=SC2086
    kill -s "$sig" $pids 2>/dev/null || true
    if ! wait_for "$STOP_TIMEOUT" no_libvirtd; then
        log "libvirtd still alive after ${STOP_TIMEOUT}s: SIGKILL"
        pids=$(pids_of libvirtd)
        if [[ -n $pids ]]; then
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
        fi
        wait_for 5 no_libvirtd || die "libvirtd ($pids) does not die"
    fi
    log "libvirtd stopped (SIG$sig)"
}

do_status() {
    if answers; then
        echo "libvirtd running (pid $(pid_list libvirtd)), $URI"
        return 0
    fi
    local p
    p=$(pid_list libvirtd)
    if [[ -n $p ]]; then
        echo "libvirtd process $p exists but does not answer on $URI"
    else
        echo "libvirtd not running"
    fi
    return 1
}

case ${1:-} in
    start) do_start ;;
    stop) do_stop "${2:-}" ;;
    status) do_status ;;
    *) echo "usage: $0 start|stop [--kill]|status" >&2; exit 2 ;;
esac
