#!/usr/bin/env bash
# End-to-end proof of the test clusters, with timings:
#   1. ocf-tester on ocf:heartbeat:Dummy (host);
#   2. one-node cluster: time to Online;
#   3. two-node cluster: time to Online; Dummy preferring node1 starts there,
#      crm_resource --move to node2, --clear (back to node1), crash node1 -> failover time,
#      boot node1 -> back on node1;
#   4. (if the test guest exists, default /srv/kvmguest-ci/guest) libvirtd in both nodes,
#      virsh across nodes, ocf:heartbeat:VirtualDomain with allow-migrate: live migration
#      node1 -> node2 by crm_resource --move, crash node2 -> restart on node1, boot node2.
#
#   scripts/pcmk/prove.sh [all|dummy|libvirt]     (default all)
#
# Starts and stops the clusters itself: refuses to run if one is already up.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/pcmk/lib.sh
source "$HERE/lib.sh"
export PATH=$PCMK_PATH
ONE=$HERE/one-node.sh
TWO=$HERE/two-node.sh
WHAT=${1:-all}
GUEST_DIR=${KVMGUEST_GUEST_DIR:-/srv/kvmguest-ci/guest}
SHARE=${KVMGUEST_PCMK_SHARE:-/srv/kvmguest-pcmk}
export PCMK_DC_DEADTIME=${PCMK_DC_DEADTIME:-2s}

declare -a RESULTS=()
result() { RESULTS+=("$1"); log "RESULT $1"; }

# where NODE RSC -- nodes (space separated) where RSC is active, as NODE sees it.
where() {
    "$TWO" exec "$1" crm_mon -1 --output-as=xml 2>/dev/null \
        | xmllint --xpath "//resources//resource[@id='$2' and @active='true']/node/@name" - \
            2>/dev/null | sed -E 's/ *name="([^"]*)"/\1 /g; s/ $//'
}
on_only() { [[ $(where "$1" "$2") == "$3" ]]; }  # on_only VIEW_NODE RSC EXPECTED_NODE

# timed SECONDS DESC CMD... -- wait_until, and print how long it took.
timed() {
    local t0 ms
    t0=$(now_ms)
    wait_until "$@" || die "timed out: $2"
    ms=$(( $(now_ms) - t0 ))
    echo "$ms"
}

cleanup() {
    "$TWO" stop >/dev/null 2>&1 || true
}

prove_dummy() {
    local ms
    log "== ocf-tester on Dummy"
    ocf-tester -n t -o state=/tmp/kvmguest-pcmk-ocftester.state \
        /usr/lib/ocf/resource.d/heartbeat/Dummy | tail -1
    rm -f /tmp/kvmguest-pcmk-ocftester.state
    result "ocf-tester Dummy: passed"

    log "== one-node cluster"
    "$ONE" start
    result "one-node Online: $(< "${KVMGUEST_PCMK_STATE:-/var/tmp/kvmguest-pcmk}/one-node/online_ms") ms (dc-deadtime=$PCMK_DC_DEADTIME)"
    "$ONE" stop

    log "== two-node cluster"
    "$TWO" start
    result "two-node Online: $(< "${KVMGUEST_PCMK_STATE:-/var/tmp/kvmguest-pcmk}/two-node/online_ms") ms (dc-deadtime=$PCMK_DC_DEADTIME)"
    "$TWO" exec node1 cibadmin --create --scope resources --xml-text \
        '<primitive id="d1" class="ocf" provider="heartbeat" type="Dummy">
           <operations><op id="d1-mon" name="monitor" interval="2s" timeout="20s"/></operations>
         </primitive>'
    "$TWO" exec node1 cibadmin --create --scope constraints --xml-text \
        '<rsc_location id="d1-prefers-node1" rsc="d1" node="node1" score="100"/>'
    ms=$(timed 30 "d1 on node1" on_only node2 d1 node1)
    result "Dummy started on node1: $ms ms"
    "$TWO" exec node2 crm_resource --move --resource d1 --node node2
    ms=$(timed 30 "d1 on node2" on_only node1 d1 node2)
    result "Dummy moved to node2: $ms ms"
    "$TWO" exec node2 crm_resource --clear --resource d1
    ms=$(timed 30 "d1 on node1" on_only node2 d1 node1)
    result "Dummy back on node1 after --clear: $ms ms"
    local t0
    t0=$(now_ms)
    "$TWO" crash node1
    wait_until 60 "d1 on node2" on_only node2 d1 node2 || die "no failover"
    ms=$(( $(now_ms) - t0 ))
    result "Dummy failover after crash of node1: $ms ms (token ${PCMK_TOKEN_MS:-3000} ms)"
    t0=$(now_ms)
    "$TWO" boot node1
    wait_until 60 "d1 back on node1" on_only node2 d1 node1 || die "no failback"
    result "boot node1 until Dummy back on node1: $(( $(now_ms) - t0 )) ms"
    "$TWO" stop
}

prove_libvirt() {
    if [[ ! -r $GUEST_DIR/vmlinuz || ! -r $GUEST_DIR/initrd-cooperative.img ]]; then
        log "== libvirt part skipped: no test guest in $GUEST_DIR (scripts/build-guest.sh)"
        result "libvirt: skipped (no guest)"
        return 0
    fi
    log "== libvirtd in both nodes"
    "$TWO" start
    "$TWO" libvirtd node1
    "$TWO" libvirtd node2
    local n
    for n in node1 node2; do
        [[ $(virsh -c "$("$TWO" uri "$n")" hostname) == "$n" ]] || die "virsh to $n failed"
    done
    result "virsh -c \$($TWO uri NODE) reaches node1 and node2"
    local xml=$SHARE/shared/pcmkguest.xml console=$SHARE/shared/pcmkguest.console
    rm -f "$console"
    cat >"$xml" <<EOF
<domain type='qemu'>
  <name>pcmkguest</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$GUEST_DIR/vmlinuz</kernel>
    <initrd>$GUEST_DIR/initrd-cooperative.img</initrd>
    <cmdline>console=ttyS0 quiet</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='$console' append='on'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
    # Plain virsh live migration both ways (unix data socket, then TCP over the veths).
    local u1 u2 t0 ms
    u1=$("$TWO" uri node1)
    u2=$("$TWO" uri node2)
    virsh -c "$u1" create "$xml" >/dev/null
    ms=$(timed 60 "guest up" grep -q KVMGUEST-GUEST-UP "$console")
    result "guest boots on node1: $ms ms"
    t0=$(now_ms)
    virsh -c "$u1" migrate --live pcmkguest "$u2" "unix://$SHARE/node2/mig.sock"
    result "virsh live migration node1 -> node2 (unix socket): $(( $(now_ms) - t0 )) ms"
    t0=$(now_ms)
    virsh -c "$u2" migrate --live pcmkguest "$u1" tcp://10.213.0.1
    result "virsh live migration node2 -> node1 (tcp over veth): $(( $(now_ms) - t0 )) ms"
    virsh -c "$u1" destroy pcmkguest >/dev/null
    rm -f "$console"

    log "== VirtualDomain resource with allow-migrate"
    "$TWO" exec node1 cibadmin --create --scope resources --xml-text "
<primitive id='vm1' class='ocf' provider='heartbeat' type='VirtualDomain'>
  <instance_attributes id='vm1-ia'>
    <nvpair id='vm1-config' name='config' value='$xml'/>
    <nvpair id='vm1-hv' name='hypervisor' value='qemu:///system'/>
    <nvpair id='vm1-ruri' name='remoteuri'
            value='qemu+unix:///system?socket=$SHARE/%n/libvirt-sock'/>
    <nvpair id='vm1-muri' name='migrateuri' value='unix://$SHARE/%n/mig.sock'/>
  </instance_attributes>
  <meta_attributes id='vm1-ma'>
    <nvpair id='vm1-am' name='allow-migrate' value='true'/>
  </meta_attributes>
  <operations>
    <op id='vm1-start' name='start' interval='0s' timeout='60s'/>
    <op id='vm1-stop' name='stop' interval='0s' timeout='60s'/>
    <op id='vm1-mon' name='monitor' interval='5s' timeout='30s'/>
    <op id='vm1-mt' name='migrate_to' interval='0s' timeout='60s'/>
    <op id='vm1-mf' name='migrate_from' interval='0s' timeout='60s'/>
  </operations>
</primitive>"
    "$TWO" exec node1 cibadmin --create --scope constraints --xml-text \
        '<rsc_location id="vm1-prefers-node1" rsc="vm1" node="node1" score="100"/>'
    ms=$(timed 60 "vm1 on node1" on_only node2 vm1 node1)
    result "VirtualDomain started on node1: $ms ms"
    wait_until 60 "guest up" grep -q KVMGUEST-GUEST-UP "$console" || die "guest did not boot"
    "$TWO" exec node2 crm_resource --move --resource vm1 --node node2
    ms=$(timed 60 "vm1 on node2" on_only node1 vm1 node2)
    result "VirtualDomain live-migrated to node2: $ms ms"
    [[ $(virsh -c "$u2" domstate pcmkguest) == running ]] || die "guest not running on node2"
    grep -q 'migrate_to operation for vm1 on node1: ok' \
        "${KVMGUEST_PCMK_STATE:-/var/tmp/kvmguest-pcmk}"/two-node/node1/var-log-pacemaker/pacemaker.log \
        || die "the move was not a migration"
    t0=$(now_ms)
    "$TWO" crash node2
    wait_until 90 "vm1 on node1" on_only node1 vm1 node1 || die "no VM failover"
    wait_until 30 "guest running on node1" \
        bash -c "[[ \$(virsh -c '$u1' domstate pcmkguest) == running ]]" || die "guest not running"
    result "VirtualDomain restarted on node1 after crash of node2: $(( $(now_ms) - t0 )) ms"
    t0=$(now_ms)
    "$TWO" boot node2  # libvirtd first, then the stack; cli-prefer pulls vm1 back (migrating)
    wait_until 90 "vm1 back on node2" on_only node1 vm1 node2 || die "vm1 did not come back"
    result "boot node2 (libvirtd + stack) until vm1 migrated back: $(( $(now_ms) - t0 )) ms"
    "$TWO" exec node1 crm_resource --clear --resource vm1 >/dev/null
    "$TWO" exec node1 crm_attribute --type crm_config --name stop-all-resources --update true
    wait_until 90 "vm1 stopped" bash -c "[[ -z \$(\"$TWO\" exec node1 crm_mon -1 --output-as=xml \
        | xmllint --xpath \"//resource[@id='vm1' and @active='true']\" - 2>/dev/null) ]]" \
        || die "vm1 did not stop"
    "$TWO" stop
    rm -f "$xml" "$console"
}

need_root
if "$TWO" status >/dev/null 2>&1 || "$ONE" status >/dev/null 2>&1; then
    die "a test cluster is already running; stop it first"
fi
trap cleanup EXIT
case $WHAT in
    all) prove_dummy; prove_libvirt ;;
    dummy) prove_dummy ;;
    libvirt) prove_libvirt ;;
    *) die "usage: $0 [all|dummy|libvirt]" ;;
esac
echo
echo "== results"
printf '  %s\n' "${RESULTS[@]}"
