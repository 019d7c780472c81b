#!/usr/bin/env bash
# The Debian package stage of CI (called by scripts/test.sh; docs/packaging.md):
#   1. build both binary packages (dpkg-buildpackage -us -uc -b) in a scratch copy of the
#      tree, and run lintian on them (any error fails the stage);
#   2. install the host package with `apt-get install ./kvmguest_*.deb` and, with Debian's
#      /usr/bin/python3 (not the venv): `kvmguest demo`, `kvmguest validate` on an example,
#      and ocf-tester against the installed /usr/lib/ocf/resource.d/kvmguest/KVMGuest on a
#      real guest of the host's libvirtd;
#   3. purge both packages, also on failure (the tests install agents at the same paths).
#
#   scripts/package-test.sh [--build-only] [--keep DIR]
# Needs: scripts/install-deps.sh (the build dependencies) and, for step 2,
# scripts/ci-env.sh sourced (KVMGUEST_TEST_KERNEL and the guest images, libvirtd running).
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_only=0 keep=""
while (($#)); do
    case $1 in
        --build-only) build_only=1 ;;
        --keep) keep=$2; shift ;;
        *) echo "usage: $0 [--build-only] [--keep DIR]" >&2; exit 2 ;;
    esac
    shift
done

log() { printf 'package-test: %s\n' "$*" >&2; }
WORK=${keep:-$(mktemp -d /tmp/kvmguest-pkg.XXXXXX)}
mkdir -p "$WORK"
cleanup_work() { [[ -n $keep ]] || rm -rf "$WORK"; }
trap cleanup_work EXIT

# --- 1. build and lintian ---------------------------------------------------------------
log "build: dpkg-buildpackage -us -uc -b in $WORK"
rm -rf "$WORK/src" && mkdir -p "$WORK/src"
# The tracked files plus the new ones, as they are in the work tree (not .venv, caches).
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$REPO" && tar --null -T - -cf -) | tar -xf - -C "$WORK/src"
(cd "$WORK/src" && dpkg-buildpackage -us -uc -b >"$WORK/build.log" 2>&1) || {
    tail -40 "$WORK/build.log" >&2
    log "FAILED: dpkg-buildpackage (log above)"
    exit 1
}
debs=("$WORK"/kvmguest_*.deb "$WORK"/kvmguest-guest_*.deb)
log "built: $(cd "$WORK" && ls ./*.deb | tr '\n' ' ')"
lintian_out=$(lintian --tag-display-limit 0 "$WORK"/*.changes 2>&1 |
    grep -v 'running with root privileges') || true
[[ -z $lintian_out ]] || printf '%s\n' "$lintian_out" | sed 's/^/    lintian: /' >&2
log "lintian summary: $(printf '%s\n' "$lintian_out" | grep -cE '^E: ' || true) error(s), $(
    printf '%s\n' "$lintian_out" | grep -cE '^W: ' || true) warning(s), $(
    printf '%s\n' "$lintian_out" | grep -cE '^[IP]: ' || true) info/pedantic"
if printf '%s\n' "$lintian_out" | grep -qE '^E: '; then
    log "FAILED: lintian reports errors"
    exit 1
fi
# The guest package must not pull in libvirt or anything of the host side.
guest_deps=$(dpkg-deb -f "$WORK"/kvmguest-guest_*.deb Depends)
log "kvmguest-guest Depends: $guest_deps"
if grep -qiE 'libvirt|lark|click|rich|cryptography|kvmguest\b' <<<"$guest_deps"; then
    log "FAILED: kvmguest-guest depends on the host side"
    exit 1
fi
((build_only)) && { log "build only: done"; exit 0; }

# --- 2. install, run with Debian's python3, 3. purge ------------------------------------
: "${KVMGUEST_GUEST_DIR:?source scripts/ci-env.sh first (the test guest and libvirtd)}"
GUEST=kvmguest-pkgtest-$$
OCF=/usr/lib/ocf/resource.d/kvmguest
# An agent a test wrote there (`kvmguest ocf install`) is put back after the purge.
if [[ -d $OCF ]]; then
    cp -a "$OCF" "$WORK/ocf-before"
fi
purge() {
    local rc=$?
    virsh -q -c qemu:///system destroy "$GUEST" >/dev/null 2>&1 || true
    virsh -q -c qemu:///system undefine "$GUEST" >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -q kvmguest kvmguest-guest >/dev/null 2>&1 || true
    if dpkg-query -W -f='${Status}' kvmguest 2>/dev/null | grep -q installed; then
        log "FAILED: kvmguest is still installed after the purge"
        rc=1
    fi
    if [[ -d $WORK/ocf-before ]]; then
        mkdir -p "$OCF" && cp -a "$WORK/ocf-before/." "$OCF/"
    fi
    [[ -z ${CFG:-} ]] || scratch_cleanup
    cleanup_work
    exit "$rc"
}
trap purge EXIT
log "apt-get install ./kvmguest_*.deb ./kvmguest-guest_*.deb"
(cd "$WORK" && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    ./kvmguest_*.deb ./kvmguest-guest_*.deb >"$WORK/install.log" 2>&1) || {
    tail -30 "$WORK/install.log" >&2; log "FAILED: apt-get install"; exit 1; }
log "installed under /usr/lib/ocf and /lib/systemd:"
for f in $(dpkg -L kvmguest kvmguest-guest | grep -E '^(/usr)?/lib/(ocf|systemd)/' | sort -u); do
    [[ -f $f ]] && printf '    %s\n' "$(ls -l "$f")" >&2
done
# A unit that runs on main.cf is skipped, not failed, until the operator wrote it. (The
# Pacemaker companion needs no main.cf; the guest unit runs inside a guest.)
for unit in $(dpkg -L kvmguest | grep -E '/lib/systemd/system/.+\.service$'); do
    if grep -q '^ExecStart=.*/etc/kvmguest/main\.cf' "$unit" &&
        ! grep -qx 'ConditionPathExists=/etc/kvmguest/main.cf' "$unit"; then
        log "FAILED: $unit runs on /etc/kvmguest/main.cf without ConditionPathExists"; exit 1
    fi
    systemctl is-enabled "$(basename "$unit")" >/dev/null 2>&1 && {
        log "FAILED: $unit is enabled by the install"; exit 1; }
done
# A pip install's `kvmguest ocf install` must not overwrite what dpkg owns.
if out=$("$REPO/.venv/bin/kvmguest" ocf install --no-units 2>&1); then
    log "FAILED: kvmguest ocf install overwrote the package's agent: $out"; exit 1
fi
log "kvmguest ocf install (venv) with the package installed: refused: $out"
[[ $(head -1 /usr/bin/kvmguest) == '#!/usr/bin/python3' ]] || {
    log "FAILED: /usr/bin/kvmguest does not run Debian's python3"; exit 1; }

# Away from the source tree and with a clean environment: only the installed package.
cd /
run() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root XDG_CACHE_HOME="$WORK/cache" "$@"; }
log "kvmguest --version: $(run /usr/bin/kvmguest --version)"
log "kvmguest demo (Debian's python3)"
run /usr/bin/kvmguest demo --workdir "$WORK/demo" 2>&1 | sed 's/^/    demo: /' >&2
log "demo: exit ${PIPESTATUS[0]}"
((PIPESTATUS[0] == 0)) || { log "FAILED: kvmguest demo"; exit 1; }

# The guest's files where QEMU (user libvirt-qemu) can read them, as the tests do.
CFG=$(cd "$REPO" && .venv/bin/python -c 'from tests.system.guests import scratch_dir
print(scratch_dir("pkgtest-"))')
scratch_cleanup() { rm -rf "$CFG"; }
(cd "$REPO" && .venv/bin/python -c 'import sys
from pathlib import Path
from tests.system.guests import domain_xml
name, d = sys.argv[1], Path(sys.argv[2])
(d / f"{name}.xml").write_text(domain_xml(name, "cooperative", serial_log=d / "serial.log"))' \
    "$GUEST" "$CFG")
cat >"$CFG/main.cf" <<CF
cluster pkgtest ( )
system $(hostname -s) ( )
group web (
    SystemList = { $(hostname -s) = 0 }
    )
    KVMGuest vm1 (
        GuestName = $GUEST
        GuestConfigFilePath = "$CFG/$GUEST.xml"
        DelayAfterGuestOffline = 5
        )
CF
out=$(run /usr/bin/kvmguest validate -c "$CFG/main.cf" --json)
log "kvmguest validate --json: $out"
[[ $out == *'"ok": true'* ]] || { log "FAILED: validate"; exit 1; }

log "ocf-tester on ocf:kvmguest:KVMGuest (installed by the package) with guest $GUEST"
set +e
run ocf-tester -n pkgtest \
    -o guest_name="$GUEST" -o guest_config_file_path="$CFG/$GUEST.xml" \
    -o delay_after_guest_offline=5 \
    /usr/lib/ocf/resource.d/kvmguest/KVMGuest >"$WORK/ocf-tester.log" 2>&1
rc=$?
set -e
sed 's/^/    ocf-tester: /' "$WORK/ocf-tester.log" >&2
log "ocf-tester: exit $rc"
((rc == 0)) || { log "FAILED: ocf-tester"; exit 1; }
log "passed"
