#!/usr/bin/env bash
# Two-node Pacemaker/Corosync cluster on this one machine. Each node is a set of namespaces
# (mount, UTS, IPC, network, PID) whose PID 1 is node-init.sh; the nodes are joined by veth
# pairs to a bridge that lives in its own network namespace (nothing is added to the host's
# network namespace); corosync uses knet over 10.213.0.0/24.
#
#   two-node.sh start                 create node1+node2, start corosync+pacemaker, wait Online
#   two-node.sh stop                  kill everything in both nodes, remove net, mounts, state
#   two-node.sh status                crm_mon from each live node; exit 0 if both Online
#   two-node.sh exec NODE CMD...      run CMD inside NODE's namespaces (nsenter)
#   two-node.sh crash NODE            SIGKILL every process of NODE (corosync, pacemaker,
#                                     libvirtd, qemu, ...): a power loss; the namespaces stay
#   two-node.sh crash NODE --cluster-only
#                                     SIGKILL only corosync + pacemaker (libvirtd and guests
#                                     survive: what a split brain without fencing looks like)
#   two-node.sh boot NODE             after a crash: clear NODE's /run, start libvirtd (if it
#                                     had been started before) then corosync+pacemaker
#   two-node.sh libvirtd NODE         start virtlogd+libvirtd inside NODE (and on every boot)
#   two-node.sh uri NODE              print the libvirt URI that reaches NODE's libvirtd
#   two-node.sh pid NODE              print the host pid of NODE's init (for nsenter -t)
#
# Environment:
#   KVMGUEST_PCMK_STATE   state root (default /var/tmp/kvmguest-pcmk); per-node dirs under
#                         STATE/two-node/NODE (logs: var-log-pacemaker, var-log-corosync, ...)
#   KVMGUEST_PCMK_SHARE   shared root (default /srv/kvmguest-pcmk): SHARE/NODE/libvirt-sock,
#                         SHARE/NODE/run (= NODE's /run/libvirt), SHARE/shared (same path in
#                         every node: put shared guest storage there)
#   PCMK_DC_DEADTIME      dc-deadtime seeded into the CIB (default 20s, Pacemaker's default)
#   PCMK_TOKEN_MS         corosync totem token (default 3000, corosync's default)
#   PCMK_START_TIMEOUT    seconds to wait for Online (default 120)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/pcmk/lib.sh
source "$HERE/lib.sh"

STATE_ROOT=${KVMGUEST_PCMK_STATE:-/var/tmp/kvmguest-pcmk}
STATE=$STATE_ROOT/two-node
SHARE=${KVMGUEST_PCMK_SHARE:-/srv/kvmguest-pcmk}
START_TIMEOUT=${PCMK_START_TIMEOUT:-120}
NODES=(node1 node2)
declare -A ADDR=([node1]=10.213.0.1 [node2]=10.213.0.2)
SWITCH_NS=kvmgpcmk-sw
BRIDGE=br0
export PATH=$PCMK_PATH

check_node() {
    [[ -n ${ADDR[${1:-}]+x} ]] || die "unknown node '${1:-}' (expected: ${NODES[*]})"
}

# Host pid of NODE's init (PID 1 of its namespaces), or failure if the node is not up.
node_pid() {
    local node=$1 upid child
    [[ -r $STATE/$node/unshare.pid ]] || return 1
    upid=$(<"$STATE/$node/unshare.pid")
    pid_alive "$upid" || return 1
    [[ $(cat "/proc/$upid/comm" 2>/dev/null) == unshare ]] || return 1
    child=$(cat "/proc/$upid/task/$upid/children" 2>/dev/null) || return 1
    child=${child%% *}
    [[ -n $child ]] && pid_alive "$child" || return 1
    echo "$child"
}

# nexec NODE CMD... -- run CMD in every namespace of NODE (cwd and environment kept).
nexec() {
    local node=$1 pid
    shift
    pid=$(node_pid "$node") || die "$node is not running"
    nsenter --target "$pid" --mount --uts --ipc --net --pid -- "$@"
}

# Pids of every process in NODE's pid namespace except its init.
node_procs() {
    local node=$1 init ns p
    init=$(node_pid "$node") || return 0
    ns=$(readlink "/proc/$init/ns/pid")
    for p in /proc/[0-9]*; do
        [[ ${p#/proc/} == "$init" ]] && continue
        [[ $(readlink "$p/ns/pid" 2>/dev/null) == "$ns" ]] || continue
        pid_alive "${p#/proc/}" || continue
        echo "${p#/proc/}"
    done
}

node_has() {  # node_has NODE COMM -- a live process named COMM runs in NODE
    local p
    for p in $(node_procs "$1"); do
        [[ $(cat "/proc/$p/comm" 2>/dev/null) == "$2" ]] && return 0
    done
    return 1
}

prepare_node_dirs() {
    local node=$1 ns=$STATE/$1 d
    install -d -m 0755 "$ns"
    for d in etc-corosync var-lib-corosync var-log-corosync var-cache-libvirt; do
        install -d -m 0755 "$ns/$d"
    done
    install -d -o hacluster -g haclient -m 0750 "$ns/var-lib-pacemaker"
    for d in cib pengine blackbox cores; do
        install -d -o hacluster -g haclient -m 0750 "$ns/var-lib-pacemaker/$d"
    done
    install -d -o hacluster -g haclient -m 0770 "$ns/var-log-pacemaker" \
        "$ns/var-log-pacemaker/bundles"
    # libvirt: a copy of the host's configuration without its domains and autostarted
    # networks, with this node's own host_uuid; empty skeletons for lib/log/cache.
    cp -a /etc/libvirt "$ns/etc-libvirt"
    find "$ns/etc-libvirt/qemu" -maxdepth 1 -name '*.xml' -delete
    rm -rf "$ns/etc-libvirt/qemu/autostart"
    find "$ns/etc-libvirt/qemu/networks/autostart" -mindepth 1 -delete 2>/dev/null || true
    sed -i -E '/^[[:space:]]*(host_uuid|unix_sock_dir)[[:space:]]*=/d' \
        "$ns/etc-libvirt/libvirtd.conf"
    printf '\n# kvmguest two-node test cluster (%s)\nhost_uuid = "%s"\n' \
        "$node" "$(cat /proc/sys/kernel/random/uuid)" >>"$ns/etc-libvirt/libvirtd.conf"
    # Two libvirtds on one kernel would fight over the same cgroup names (qemu-1-NAME...).
    sed -i -E '/^[[:space:]]*cgroup_controllers[[:space:]]*=/d' "$ns/etc-libvirt/qemu.conf"
    printf '\n# kvmguest two-node test cluster\ncgroup_controllers = [ ]\n' \
        >>"$ns/etc-libvirt/qemu.conf"
    install -d -m 0755 "$ns/var-lib-libvirt" "$ns/var-log-libvirt"
    install -d -m 0711 "$ns/var-lib-libvirt/images" "$ns/var-lib-libvirt/boot" \
        "$ns/var-cache-libvirt" "$ns/var-cache-libvirt/qemu"
    install -d -o libvirt-qemu -g libvirt-qemu -m 0750 "$ns/var-lib-libvirt/qemu"
    install -d -m 0755 "$ns/var-log-libvirt/qemu"
    {
        cat /etc/hosts
        local n
        for n in "${NODES[@]}"; do echo "${ADDR[$n]} $n"; done
    } >"$ns/hosts"
    # Shared, host-visible: /run/libvirt of the node, a link to its socket.
    install -d -m 1777 "$SHARE" "$SHARE/shared" "$SHARE/$node"
    install -d -m 0755 "$SHARE/$node/run"
    ln -sfn run/libvirt-sock "$SHARE/$node/libvirt-sock"
    ln -sfn run/libvirt-sock-ro "$SHARE/$node/libvirt-sock-ro"
}

start_holder() {
    local node=$1 ns=$STATE/$1
    rm -f "$ns/ready"
    # shellcheck disable=SC2016  # $$ is the inner shell's pid, on purpose
    setsid -f bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$ns/unshare.pid" \
        unshare --mount --uts --ipc --net --pid --fork --mount-proc --propagation private \
        bash "$HERE/node-init.sh" "$node" "$ns" "$SHARE/$node" \
        </dev/null >>"$ns/init.log" 2>&1
    wait_until 10 "$node namespaces ready" test -s "$ns/ready" \
        || die "$node init failed; see $ns/init.log"
    wait_until 5 "$node init pid" node_pid "$node" || die "$node init pid not found"
}

setup_network() {
    ip netns add "$SWITCH_NS"
    ip -n "$SWITCH_NS" link add "$BRIDGE" type bridge
    ip -n "$SWITCH_NS" link set "$BRIDGE" up
    local node pid i=0 sw_if
    for node in "${NODES[@]}"; do
        i=$(( i + 1 ))
        pid=$(node_pid "$node")
        sw_if=kvmgp-n$i
        # Both ends are created directly in their namespaces: the host's network namespace
        # never sees them.
        ip -n "$SWITCH_NS" link add "$sw_if" type veth peer name eth0 netns "$pid"
        ip -n "$SWITCH_NS" link set "$sw_if" master "$BRIDGE" up
        nsenter --target "$pid" --net ip addr add "${ADDR[$node]}/24" dev eth0
        nsenter --target "$pid" --net ip link set eth0 up
    done
}

link_up() { nexec "$1" ip -o link show eth0 | grep -q LOWER_UP; }

start_stack() {  # start_stack NODE -- corosync + pacemakerd inside NODE (returns at once)
    local node=$1
    node_has "$node" corosync && die "$node: corosync already running"
    nexec "$node" setsid -f env -i PATH="$PATH" LC_ALL=C corosync -f \
        </dev/null >>"$STATE/$node/corosync.out" 2>&1
    wait_until 20 "$node corosync up" nexec "$node" corosync-cmapctl -g totem.cluster_name \
        || die "$node: corosync did not start; see $STATE/$node/var-log-corosync"
    nexec "$node" setsid -f env -i PATH="$PATH" LC_ALL=C pacemakerd \
        </dev/null >>"$STATE/$node/pacemakerd.out" 2>&1
}

both_online() {
    local node
    for node in "${NODES[@]}"; do
        EXPECT_NODES=2 cluster_online nexec "$node" || return 1
    done
}

do_start() {
    need_root
    need_bins unshare nsenter ip corosync pacemakerd crm_mon crm_attribute cibadmin xmllint
    if [[ -e $STATE ]] || ip netns list | grep -qw "$SWITCH_NS"; then
        die "two-node cluster state exists ($STATE or netns $SWITCH_NS): run stop first"
    fi
    local t0 node
    t0=$(now_ms)
    install -d -m 0755 "$STATE"
    local specs=()
    for node in "${NODES[@]}"; do specs+=("$node=${ADDR[$node]}"); done
    for node in "${NODES[@]}"; do
        prepare_node_dirs "$node"
        write_corosync_conf "$STATE/$node/etc-corosync/corosync.conf" kvmguest-two \
            /var/log/corosync/corosync.log "${specs[@]}"
    done
    # Identical seed CIB on both nodes (same epoch, same content: nothing to reconcile).
    seed_cib "$STATE/node1/var-lib-pacemaker/cib"
    install -o hacluster -g haclient -m 0600 "$STATE/node1/var-lib-pacemaker/cib/cib.xml" \
        "$STATE/node2/var-lib-pacemaker/cib/cib.xml"
    for node in "${NODES[@]}"; do start_holder "$node"; done
    setup_network
    for node in "${NODES[@]}"; do
        wait_until 10 "$node eth0 carrier" link_up "$node" || die "$node: eth0 has no carrier"
    done
    log "namespaces and network ready in $(( $(now_ms) - t0 )) ms; starting corosync+pacemaker"
    for node in "${NODES[@]}"; do start_stack "$node"; done
    wait_until "$START_TIMEOUT" "both nodes Online" both_online \
        || die "cluster not Online after ${START_TIMEOUT}s; logs under $STATE/*/var-log-*"
    local ms=$(( $(now_ms) - t0 ))
    echo "$ms" >"$STATE/online_ms"
    log "two-node cluster Online in ${ms} ms"
}

do_stop() {
    need_root
    local node pid pids=()
    for node in "${NODES[@]}"; do
        # PID 1 of the node dies -> the kernel SIGKILLs every process of its namespace.
        if pid=$(node_pid "$node"); then
            mapfile -t -O "${#pids[@]}" pids < <(node_procs "$node")
            pids+=("$pid")
        fi
    done
    if (( ${#pids[@]} )); then
        kill_and_wait 20 "${pids[@]}" || die "processes survived SIGKILL: ${pids[*]}"
    fi
    for node in "${NODES[@]}"; do
        if [[ -r $STATE/$node/unshare.pid ]]; then
            pid=$(<"$STATE/$node/unshare.pid")
            if pid_alive "$pid" && [[ $(cat "/proc/$pid/comm") == unshare ]]; then
                wait_until 5 "unshare $pid to exit" bash -c "! kill -0 $pid" || true
            fi
        fi
    done
    if ip netns list | grep -qw "$SWITCH_NS"; then
        ip netns del "$SWITCH_NS"
    fi
    rm -rf "$STATE"
    for node in "${NODES[@]}"; do rm -rf "${SHARE:?}/$node"; done
    rm -rf "${SHARE:?}/shared"
    rmdir "$SHARE" 2>/dev/null || true
    log "two-node cluster stopped"
}

do_status() {
    local node rc=0
    for node in "${NODES[@]}"; do
        if ! node_pid "$node" >/dev/null; then
            echo "== $node: not running"
            rc=3
            continue
        fi
        echo "== $node ($(nexec "$node" hostname), ${ADDR[$node]})"
        if node_has "$node" pacemakerd; then
            nexec "$node" crm_mon -1 2>&1 || rc=1
        else
            echo "pacemakerd not running (crashed?)"
            rc=3
        fi
    done
    (( rc == 0 )) || return "$rc"
    both_online
}

do_crash() {
    local node=$1 mode=${2:-} t0 pids=() p
    need_root
    node_pid "$node" >/dev/null || die "$node is not running"
    t0=$(now_ms)
    if [[ $mode == --cluster-only ]]; then
        for p in $(node_procs "$node"); do
            case $(cat "/proc/$p/comm" 2>/dev/null) in
                corosync|pacemakerd|pacemaker-*) pids+=("$p") ;;
            esac
        done
    elif [[ -z $mode ]]; then
        mapfile -t pids < <(node_procs "$node")
    else
        die "crash: unknown option $mode"
    fi
    if (( ${#pids[@]} )); then
        kill_and_wait 10 "${pids[@]}" || die "$node: processes survived SIGKILL"
    fi
    log "$node crashed: SIGKILLed ${#pids[@]} processes in $(( $(now_ms) - t0 )) ms"
}

do_boot() {
    local node=$1 t0
    need_root
    node_pid "$node" >/dev/null || die "$node is not running (start the cluster first)"
    if node_has "$node" corosync || node_has "$node" pacemakerd; then
        die "$node is up; crash it first"
    fi
    t0=$(now_ms)
    local p survivors=0
    for p in $(node_procs "$node"); do
        [[ $(cat "/proc/$p/comm" 2>/dev/null) == sleep ]] || survivors=$(( survivors + 1 ))
    done
    if (( survivors == 0 )); then
        # After a power loss a reboot clears volatile state: /run (incl. /run/libvirt) and
        # /dev/shm. Not /tmp: the nodes share the host's (the checkout may live there).
        nexec "$node" bash -c 'find /run -mindepth 1 -maxdepth 1 ! -name libvirt \
            ! -name lock -exec rm -rf {} +; find /run/libvirt /run/lock /dev/shm \
            -mindepth 1 -delete'
    else
        # --cluster-only crash: libvirtd/guests still run; drop only the stack's leftovers.
        nexec "$node" bash -c 'rm -f /run/corosync.pid /dev/shm/qb-*'
    fi
    # Like a host whose init starts libvirtd before pacemaker: a node whose libvirtd was
    # started with `two-node.sh libvirtd` gets it back before the cluster stack.
    if [[ -e $STATE/$node/libvirtd.enabled ]] && ! node_has "$node" libvirtd; then
        start_libvirtd "$node"
    fi
    start_stack "$node"
    wait_until "$START_TIMEOUT" "both nodes Online" both_online \
        || die "$node did not rejoin within ${START_TIMEOUT}s"
    log "$node rejoined; both nodes Online in $(( $(now_ms) - t0 )) ms"
}

do_libvirtd() {
    local node=$1
    need_root
    need_bins virtlogd libvirtd virsh
    node_pid "$node" >/dev/null || die "$node is not running"
    node_has "$node" libvirtd && die "$node: libvirtd already running"
    start_libvirtd "$node"
    touch "$STATE/$node/libvirtd.enabled"
}

start_libvirtd() {
    local node=$1 t0
    t0=$(now_ms)
    # Without this QEMU is re-probed on every libvirtd start (~45 s) -- see DESIGN.md §6.
    if [[ -e /dev/kvm ]]; then
        chown root:kvm /dev/kvm
        chmod 0660 /dev/kvm
    fi
    node_has "$node" virtlogd || nexec "$node" env -i PATH="$PATH" LC_ALL=C virtlogd -d
    nexec "$node" env -i PATH="$PATH" LC_ALL=C libvirtd -d
    wait_until 90 "$node libvirtd answers" \
        nexec "$node" virsh -c qemu:///system version \
        || die "$node: libvirtd not answering; see $STATE/$node/var-log-libvirt"
    log "$node libvirtd up in $(( $(now_ms) - t0 )) ms; uri: $(node_uri "$node")"
}

node_uri() { echo "qemu+unix:///system?socket=$SHARE/$1/libvirt-sock"; }

cmd=${1:-}
shift || true
case $cmd in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    exec)
        (( $# >= 2 )) || die "usage: $0 exec NODE CMD..."
        check_node "$1"
        node=$1
        shift
        nexec "$node" "$@"
        ;;
    crash) check_node "${1:-}"; do_crash "$1" "${2:-}" ;;
    boot) check_node "${1:-}"; do_boot "$1" ;;
    libvirtd) check_node "${1:-}"; do_libvirtd "$1" ;;
    uri) check_node "${1:-}"; node_uri "$1" ;;
    pid) check_node "${1:-}"; node_pid "$1" ;;
    *)
        echo "usage: $0 start|stop|status|exec NODE CMD...|crash NODE|boot NODE|libvirtd NODE|uri NODE|pid NODE" >&2
        exit 2
        ;;
esac
