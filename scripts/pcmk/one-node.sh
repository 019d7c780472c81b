#!/usr/bin/env bash
# One-node Pacemaker/Corosync cluster on this host (knet on 127.0.0.1), for ocf-tester
# runs and benchmarks. Runs in the host's namespaces: the host's crm_mon/crm_resource/
# cibadmin talk to it directly.
#
#   scripts/pcmk/one-node.sh start    # corosync + pacemakerd, wait until Online
#   scripts/pcmk/one-node.sh stop     # kill everything it started, wipe its state
#   scripts/pcmk/one-node.sh status   # exit 0 if Online, prints crm_mon
#
# Environment:
#   KVMGUEST_PCMK_STATE   state root (default /var/tmp/kvmguest-pcmk)
#   PCMK_DC_DEADTIME      dc-deadtime seeded into the CIB (default 20s, Pacemaker's default)
#   PCMK_TOKEN_MS         corosync totem token (default 3000, corosync's default)
#   PCMK_START_TIMEOUT    seconds to wait for Online (default 120)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/pcmk/lib.sh
source "$HERE/lib.sh"

STATE_ROOT=${KVMGUEST_PCMK_STATE:-/var/tmp/kvmguest-pcmk}
STATE=$STATE_ROOT/one-node
NODE_NAME=$(uname -n)
START_TIMEOUT=${PCMK_START_TIMEOUT:-120}
export PATH=$PCMK_PATH

host_pidns=$(readlink /proc/self/ns/pid)

# A pid from a pid file counts only if it is alive, in the host pid namespace and runs the
# expected program (pid files may be stale).
pid_from() {
    local file=$1 comm=$2 pid
    [[ -r $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    pid_alive "$pid" || return 1
    [[ $(readlink "/proc/$pid/ns/pid" 2>/dev/null) == "$host_pidns" ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 1
    echo "$pid"
}

corosync_pid() { pid_from "$STATE/corosync.pid" corosync; }
pacemakerd_pid() { pid_from "$STATE/pacemakerd.pid" pacemakerd; }

# Refuse to start over someone else's corosync/pacemaker in the host pid namespace.
foreign_cluster_running() {
    local p comm
    for p in /proc/[0-9]*; do
        comm=$(cat "$p/comm" 2>/dev/null) || continue
        case $comm in corosync|pacemakerd) ;; *) continue ;; esac
        [[ $(readlink "$p/ns/pid" 2>/dev/null) == "$host_pidns" ]] || continue
        pid_alive "${p#/proc/}" || continue
        echo "${p#/proc/} $comm"
        return 0
    done
    return 1
}

wipe_state() {
    # Pacemaker's and corosync's own state directories on the host (the one-node cluster
    # is the only user of them here); the directories themselves stay, as packaged.
    local d
    for d in cib pengine blackbox cores; do
        find "/var/lib/pacemaker/$d" -mindepth 1 -delete 2>/dev/null || true
    done
    find /var/lib/corosync -mindepth 1 -delete 2>/dev/null || true
    find /dev/shm -maxdepth 1 -name 'qb-*' -delete 2>/dev/null || true
    rm -f /run/corosync.pid
}

do_start() {
    need_root
    need_bins corosync pacemakerd crm_mon crm_attribute cibadmin xmllint
    if corosync_pid >/dev/null || pacemakerd_pid >/dev/null; then
        die "one-node cluster already running (use stop first)"
    fi
    local other
    if other=$(foreign_cluster_running); then
        die "a corosync/pacemaker not started by this script is running: $other"
    fi
    local t0
    t0=$(now_ms)
    rm -rf "$STATE"
    install -d -m 0755 "$STATE"
    install -d -o hacluster -g haclient -m 0770 "$STATE/log"
    wipe_state
    write_corosync_conf "$STATE/corosync.conf" kvmguest-one "$STATE/log/corosync.log" \
        "$NODE_NAME=127.0.0.1"
    seed_cib /var/lib/pacemaker/cib

    log "starting corosync (knet on 127.0.0.1)"
    setsid -f corosync -f -c "$STATE/corosync.conf" \
        </dev/null >>"$STATE/log/corosync.out" 2>&1
    wait_until 10 "corosync pid" test -s /run/corosync.pid || die "corosync did not start"
    cp /run/corosync.pid "$STATE/corosync.pid"
    wait_until 20 "corosync quorate" corosync-quorumtool -s \
        || die "corosync not ready; see $STATE/log/corosync.log"

    log "starting pacemakerd"
    # shellcheck disable=SC2016  # $$ is the inner shell's pid, on purpose
    setsid -f env -i PATH="$PATH" LC_ALL=C PCMK_logfile="$STATE/log/pacemaker.log" \
        bash -c 'echo $$ >"$1"; exec pacemakerd' _ "$STATE/pacemakerd.pid" \
        </dev/null >>"$STATE/log/pacemakerd.out" 2>&1
    wait_until 10 "pacemakerd pid" pacemakerd_pid || die "pacemakerd did not start"

    EXPECT_NODES=1 wait_until "$START_TIMEOUT" "node $NODE_NAME Online" cluster_online \
        || die "cluster not Online after ${START_TIMEOUT}s; see $STATE/log"
    local ms=$(( $(now_ms) - t0 ))
    echo "$ms" >"$STATE/online_ms"
    log "one-node cluster Online in ${ms} ms (node $NODE_NAME)"
}

do_stop() {
    need_root
    local pids=() p
    if p=$(pacemakerd_pid); then
        # Graceful first (bounded), so resources are stopped by their agents.
        pacemakerd --shutdown >/dev/null 2>&1 || true
        wait_until "${PCMK_STOP_TIMEOUT:-30}" "pacemakerd to exit" bash -c "! kill -0 $p" \
            || log "pacemakerd did not stop gracefully; killing"
        if pid_alive "$p"; then
            mapfile -t pids < <(descendants "$p")
            pids+=("$p")
        fi
    fi
    if p=$(corosync_pid); then
        pids+=("$p")
    fi
    if (( ${#pids[@]} )); then
        kill_and_wait 10 "${pids[@]}" || die "processes survived SIGKILL: ${pids[*]}"
    fi
    # Subdaemons orphaned by an earlier crash of pacemakerd: children of init in the host pid
    # namespace whose executable is one of pacemaker's, started by us (logfile env marker).
    local orphan=()
    for p in /proc/[0-9]*; do
        case $(cat "$p/comm" 2>/dev/null) in
            pacemaker-*) ;;
            *) continue ;;
        esac
        [[ $(readlink "$p/ns/pid" 2>/dev/null) == "$host_pidns" ]] || continue
        pid_alive "${p#/proc/}" || continue
        { tr '\0' '\n' <"$p/environ"; } 2>/dev/null \
            | grep -qx "PCMK_logfile=$STATE/log/pacemaker.log" || continue
        orphan+=("${p#/proc/}")
    done
    if (( ${#orphan[@]} )); then
        kill_and_wait 10 "${orphan[@]}" || die "orphans survived SIGKILL: ${orphan[*]}"
    fi
    wipe_state
    rm -rf "$STATE"
    log "one-node cluster stopped"
}

do_status() {
    if ! corosync_pid >/dev/null || ! pacemakerd_pid >/dev/null; then
        echo "one-node cluster: not running"
        return 3
    fi
    crm_mon -1 || true
    # shellcheck disable=SC2119  # no prefix: crm_mon runs on the host
    EXPECT_NODES=1 cluster_online
}

case ${1:-} in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
