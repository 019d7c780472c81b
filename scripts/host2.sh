#!/usr/bin/env bash
# A second libvirt host ("host2") on this machine, for live-migration and failover tests.
#
#   scripts/host2.sh start             start host2 (idempotent), wait until it answers
#   scripts/host2.sh stop              SIGKILL everything in host2 (libvirtd, virtlogd, its
#                                      QEMU guests); the host's libvirtd is not touched
#   scripts/host2.sh status            exit 0 if host2's libvirtd answers
#   scripts/host2.sh uri               qemu+unix:///system?socket=DIR/libvirt-sock
#   scripts/host2.sh migrate-uri       unix://DIR/mig.sock   (data URI, host -> host2)
#   scripts/host2.sh host-uri          qemu+unix:///system?socket=DIR/host1/libvirt-sock
#                                      (the host's libvirtd, valid in both namespaces)
#   scripts/host2.sh host-migrate-uri  unix://DIR/mig-host1.sock (data URI, host2 -> host)
#   scripts/host2.sh exec CMD...       run CMD inside host2's namespaces (nsenter)
#
# host2 = `unshare --mount --uts --fork` (same pid and network namespaces as the host): its
# own hostname "host2", tmpfs over /run and /var/lib/libvirt, private persistent
# /etc/libvirt (own host_uuid, unix_sock_dir=DIR), /var/log/libvirt and /var/cache/libvirt
# under STATE, its own virtlogd + libvirtd. DIR is world-writable (1777): QEMU, running as
# libvirt-qemu, creates the migration sockets there. Everything outside those paths (/srv,
# /tmp, guest images) is shared with the host under the same path.
#
# Environment:
#   KVMGUEST_HOST2_DIR     socket directory (default /srv/kvmguest-host2)
#   KVMGUEST_HOST2_STATE   state directory  (default /var/lib/kvmguest-host2): etc-libvirt
#                          (host2's persistent domain definitions), log (libvirtd.log, qemu/)
#   HOST2_START_TIMEOUT    seconds to wait for libvirtd to answer (default 60)
set -euo pipefail

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SELF=$(readlink -f "${BASH_SOURCE[0]}")
DIR=${KVMGUEST_HOST2_DIR:-/srv/kvmguest-host2}
STATE=${KVMGUEST_HOST2_STATE:-/var/lib/kvmguest-host2}
START_TIMEOUT=${HOST2_START_TIMEOUT:-60}
HOSTNAME2=host2
URI="qemu+unix:///system?socket=$DIR/libvirt-sock"
MIGRATE_URI="unix://$DIR/mig.sock"
HOST_URI="qemu+unix:///system?socket=$DIR/host1/libvirt-sock"
HOST_MIGRATE_URI="unix://$DIR/mig-host1.sock"

log() { printf 'host2.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

now_ms() {
    local up
    read -r up _ </proc/uptime
    echo $(( ${up%.*} * 1000 + 10#${up#*.} * 10 ))
}

# wait_for TIMEOUT_S CMD... -- poll CMD every 0.1 s until it succeeds or the deadline passes.
wait_for() {
    local deadline=$(( $(now_ms) + $1 * 1000 ))
    shift
    until "$@"; do
        (( $(now_ms) < deadline )) || return 1
        sleep 0.1
    done
}

answers() { timeout 5 virsh -c "$URI" version >/dev/null 2>&1; }

# ---- inside the new namespaces (PID = unshare's child) -------------------------------------
ns_init() {
    hostname "$HOSTNAME2"
    mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
    install -d -m 1777 /run/lock
    install -d -m 0755 /run/libvirt
    if [[ ! -L /var/run ]]; then
        mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /var/run
        install -d -m 0755 /var/run/libvirt
    fi
    mount -t tmpfs -o mode=0755 tmpfs /var/lib/libvirt
    mount --bind "$STATE/var-cache-libvirt" /var/cache/libvirt
    mount --bind "$STATE/log" /var/log/libvirt
    mount --bind "$STATE/etc-libvirt" /etc/libvirt
    virtlogd -d
    LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/libvirtd.log" libvirtd -d
    echo "$PPID" >"$STATE/unshare.pid"
    readlink /proc/self/ns/uts >"$STATE/uts"
    echo ready >"$STATE/ready"
    # Anchor of the namespaces (nsenter target); daemons re-parent to the host's init.
    trap 'exit 0' TERM INT
    while :; do
        sleep 86400 &
        wait $! || true
    done
}

# ---- host side ------------------------------------------------------------------------------
# pid of host2's `unshare` process (it lives in host2's namespaces), or failure.
anchor_pid() {
    local pid
    [[ -r $STATE/unshare.pid ]] || return 1
    pid=$(<"$STATE/unshare.pid")
    [[ $pid =~ ^[0-9]+$ && -e /proc/$pid ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == unshare ]] || return 1
    [[ $(readlink "/proc/$pid/ns/uts" 2>/dev/null) == "$(cat "$STATE/uts" 2>/dev/null)" ]] ||
        return 1
    echo "$pid"
}

# Every live process in host2's UTS namespace: libvirtd, virtlogd, QEMU (libvirt gives each
# QEMU a private mount namespace, but not a private UTS namespace), the anchor.
ns_pids() {
    local uts p state
    uts=$(cat "$STATE/uts" 2>/dev/null) || return 0
    [[ -n $uts && $uts != "$(readlink /proc/self/ns/uts)" ]] || return 0
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/ns/uts" 2>/dev/null) == "$uts" ]] || continue
        state=$(awk '{print $3}' "$p/stat" 2>/dev/null) || continue
        [[ $state == Z || $state == X ]] && continue
        echo "${p#/proc/}"
    done
}

no_ns_pids() { [[ -z $(ns_pids) ]]; }

prepare_state() {
    install -d -m 0755 "$STATE" "$STATE/log" "$STATE/var-cache-libvirt"
    install -d -m 1777 "$DIR"
    chmod 1777 "$DIR"
    if [[ ! -d $STATE/etc-libvirt ]]; then
        cp -a /etc/libvirt "$STATE/etc-libvirt.tmp"
        # The host's domain and network definitions are not host2's.
        find "$STATE/etc-libvirt.tmp/qemu" -maxdepth 1 -name '*.xml' -delete
        rm -rf "$STATE/etc-libvirt.tmp/qemu/autostart" \
            "$STATE/etc-libvirt.tmp/qemu/networks/autostart"
        mv "$STATE/etc-libvirt.tmp" "$STATE/etc-libvirt"
    fi
    local conf=$STATE/etc-libvirt/libvirtd.conf uuid
    if ! uuid=$(sed -n 's/^host_uuid = "\(.*\)"$/\1/p' "$conf") || [[ -z $uuid ]]; then
        uuid=$(cat /proc/sys/kernel/random/uuid)
    fi
    sed -i -e '/^host_uuid = /d' -e '/^unix_sock_dir = /d' -e '/^# kvmguest host2$/d' "$conf"
    printf '# kvmguest host2\nhost_uuid = "%s"\nunix_sock_dir = "%s"\n' "$uuid" "$DIR" >>"$conf"
    # The host's libvirt socket directory under a path both namespaces resolve alike
    # (destination URI of a host2 -> host peer-to-peer migration). Made before unshare so
    # that host2's mount namespace inherits it.
    install -d -m 0755 /run/libvirt "$DIR/host1"
    if ! mountpoint -q "$DIR/host1"; then
        mount --bind /run/libvirt "$DIR/host1"
    fi
}

do_start() {
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    local pid t0
    t0=$(now_ms)
    if pid=$(anchor_pid); then
        if answers; then
            log "host2 already running (anchor pid $pid)"
            return 0
        fi
        if ! pgrep_ns libvirtd >/dev/null; then
            log "host2 namespaces alive but libvirtd is not: restarting it"
            nsenter --target "$pid" --mount --uts -- env \
                LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/libvirtd.log" libvirtd -d
        fi
    else
        if [[ -n $(ns_pids) ]]; then
            log "stale host2 processes without an anchor: cleaning up"
            do_stop
        fi
        prepare_state
        rm -f "$STATE/ready" "$DIR"/libvirt-sock "$DIR"/libvirt-sock-ro \
            "$DIR"/libvirt-admin-sock "$DIR"/mig*.sock
        # /dev/kvm perms as scripts/libvirtd.sh sets them (host2's QEMU probe depends on it).
        if [[ -e /dev/kvm ]] && getent group kvm >/dev/null; then
            chown root:kvm /dev/kvm
            chmod 0660 /dev/kvm
        fi
        setsid unshare --mount --uts --fork --propagation private "$SELF" __init \
            </dev/null >>"$STATE/log/init.log" 2>&1 &
        wait_for 10 test -e "$STATE/ready" ||
            die "host2 namespace init failed (see $STATE/log/init.log)"
    fi
    wait_for "$START_TIMEOUT" answers ||
        die "host2 libvirtd did not answer in ${START_TIMEOUT}s ($STATE/log/libvirtd.log)"
    log "host2 running (anchor pid $(anchor_pid)) in $(( $(now_ms) - t0 )) ms: $URI"
}

# pids in host2's namespaces whose comm is $1
pgrep_ns() {
    local p found=1
    for p in $(ns_pids); do
        if [[ $(cat "/proc/$p/comm" 2>/dev/null) == "$1" ]]; then
            echo "$p"
            found=0
        fi
    done
    return $found
}

do_stop() {
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    local pids
    pids=$(ns_pids)
    if [[ -n $pids ]]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        wait_for 15 no_ns_pids || die "host2 processes do not die: $(ns_pids | tr '\n' ' ')"
        log "host2 stopped ($(wc -w <<<"$pids") processes killed)"
    else
        log "host2 not running"
    fi
    # Namespace inode numbers are reused once freed: forget this one.
    rm -f "$STATE/uts" "$STATE/unshare.pid" "$STATE/ready" "$DIR"/libvirt-sock "$DIR"/libvirt-sock-ro \
        "$DIR"/libvirt-admin-sock "$DIR"/mig*.sock
    if mountpoint -q "$DIR/host1" 2>/dev/null; then
        umount "$DIR/host1" || umount -l "$DIR/host1" || true
    fi
}

do_status() {
    local pid
    if pid=$(anchor_pid) && answers; then
        echo "host2 running (anchor pid $pid, hostname $HOSTNAME2): $URI"
        return 0
    fi
    echo "host2 not running"
    return 1
}

case ${1:-} in
    __init) ns_init ;;
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    uri) echo "$URI" ;;
    migrate-uri) echo "$MIGRATE_URI" ;;
    host-uri) echo "$HOST_URI" ;;
    host-migrate-uri) echo "$HOST_MIGRATE_URI" ;;
    exec)
        shift
        pid=$(anchor_pid) || die "host2 is not running"
        exec nsenter --target "$pid" --mount --uts -- "$@"
        ;;
    *)
        echo "usage: $0 start|stop|status|uri|migrate-uri|host-uri|host-migrate-uri|exec CMD..." >&2
        exit 2
        ;;
esac
