#!/usr/bin/env bash
# PID 1 of one node of the two-node test cluster (see two-node.sh). Started by
#   unshare --mount --uts --ipc --net --pid --fork --mount-proc --propagation private
# so it already runs in fresh mount/UTS/IPC/network/PID namespaces with its own /proc.
# It gives the node its hostname and its private directories, writes NODE_STATE/ready,
# then stays as the namespace's init: it reaps orphans (daemons started with nsenter are
# re-parented to it) and, when it dies, the kernel SIGKILLs everything in the node.
#
#   node-init.sh NODE NODE_STATE SHARE
set -euo pipefail

node=$1 nstate=$2 share=$3

hostname "$node"

# Runtime state: /run (= /var/run), POSIX shm used by libqb IPC.
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
install -d -m 1777 /run/lock
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm

# /run/libvirt lives on the shared /srv path so that the other node and the host can reach
# this node's libvirt socket: SHARE/run is this node's /run/libvirt.
install -d -m 0755 /run/libvirt
mount --bind "$share/run" /run/libvirt

# Persistent per-node directories (survive a crash of the node, as a disk would).
for pair in \
    etc-corosync:/etc/corosync \
    var-lib-corosync:/var/lib/corosync \
    var-log-corosync:/var/log/corosync \
    var-lib-pacemaker:/var/lib/pacemaker \
    var-log-pacemaker:/var/log/pacemaker \
    etc-libvirt:/etc/libvirt \
    var-lib-libvirt:/var/lib/libvirt \
    var-log-libvirt:/var/log/libvirt \
    var-cache-libvirt:/var/cache/libvirt; do
    install -d "${pair#*:}"
    mount --bind "$nstate/${pair%%:*}" "${pair#*:}"
done
mount --bind "$nstate/hosts" /etc/hosts

ip link set lo up

echo "$node" >"$nstate/ready"
# /tmp stays the host's: the checkout (and the venv the OCF agent runs on) may live there.

trap 'exit 0' TERM INT
# bash reaps any child (waitpid(-1)) whenever SIGCHLD arrives while it waits here.
while :; do
    sleep 86400 &
    wait $! || true
done
