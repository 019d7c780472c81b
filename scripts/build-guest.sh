#!/usr/bin/env bash
# Build the tiny test guest used by the system tests (tests/system/guests.py):
#
#   scripts/build-guest.sh OUTDIR
#
# Outputs (mode 0644, OUTDIR 0755 so that QEMU, running as libvirt-qemu, can read them):
#   OUTDIR/vmlinuz                 Debian cloud kernel (linux-image-cloud-amd64's current dep)
#   OUTDIR/initrd-cooperative.img  busybox initramfs; ACPI power button -> poweroff -f
#   OUTDIR/initrd-stubborn.img     busybox initramfs; ignores the power button and SIGTERM
#   OUTDIR/KVER                    the kernel release the images were built from
#
# Cached: nothing is done when every output exists and is newer than this script
# (KVMGUEST_GUEST_FORCE=1 rebuilds). Needs: apt lists (scripts/install-deps.sh),
# busybox-static, cpio, dpkg, gzip.
#
# Guest console protocol (serial ttyS0; kernel command line "console=ttyS0"):
#   KVMGUEST-VARIANT cooperative|stubborn
#   KVMGUEST-GUEST-UP                       init is up, acpid running, drivers loaded
#   KVMGUEST-CDROM-BEGIN <path>             for every file on every ISO9660 CD-ROM:
#   <file contents>                         (path relative to the CD root)
#   KVMGUEST-CDROM-END
#   KVMGUEST-CDROM-DONE <n>                 all CD-ROMs printed (n = files printed)
#   KVMGUEST-CDROM-NONE                     no CD-ROM medium found (instead of DONE)
#   KVMGUEST-POWER-BUTTON                   power button received (cooperative: powers off)
#   KVMGUEST-POWER-BUTTON-IGNORED           power button received (stubborn: ignored)
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
OUTDIR=${1:?usage: build-guest.sh OUTDIR}
OUTPUTS=(vmlinuz initrd-cooperative.img initrd-stubborn.img KVER)

log() { printf 'build-guest: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

up_to_date() {
    local f
    [[ ${KVMGUEST_GUEST_FORCE:-0} == 1 ]] && return 1
    for f in "${OUTPUTS[@]}"; do
        [[ -s $OUTDIR/$f && $OUTDIR/$f -nt $SELF ]] || return 1
    done
}

if up_to_date; then
    log "up to date: $OUTDIR ($(<"$OUTDIR/KVER"))"
    exit 0
fi

for b in busybox cpio dpkg apt-get apt-cache gzip; do
    command -v "$b" >/dev/null || die "missing $b (run scripts/install-deps.sh)"
done
BUSYBOX=$(command -v busybox)
file_is_static() { ! LC_ALL=C ldd "$1" >/dev/null 2>&1; }
file_is_static "$BUSYBOX" || die "$BUSYBOX is not static (install busybox-static)"

# Current versioned kernel package, e.g. linux-image-6.1.0-56-cloud-amd64.
kernel_pkg() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
PKG=$(kernel_pkg)
if [[ -z $PKG && $(id -u) -eq 0 ]]; then
    log "linux-image-cloud-amd64 unknown to apt: apt-get update"
    apt-get update -q >/dev/null
    PKG=$(kernel_pkg)
fi
[[ -n $PKG ]] || die "cannot resolve linux-image-cloud-amd64 (apt lists missing? run install-deps)"

mkdir -p "$OUTDIR"
chmod 0755 "$OUTDIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvmguest-build-guest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# apt-get download drops privileges to _apt when it can write the target directory.
chown _apt "$WORK" 2>/dev/null || true

log "downloading $PKG"
if ! (cd "$WORK" && apt-get download -q "$PKG" >/dev/null); then
    # Stale lists: the version they name may be gone from the mirror. Refresh once.
    [[ $(id -u) -eq 0 ]] || die "apt-get download $PKG failed"
    log "download failed: apt-get update and retry"
    apt-get update -q >/dev/null
    PKG=$(kernel_pkg)
    (cd "$WORK" && apt-get download -q "$PKG" >/dev/null)
fi
dpkg -x "$WORK"/"$PKG"_*.deb "$WORK/kpkg"
KVER=$(ls "$WORK/kpkg/lib/modules")
[[ -f $WORK/kpkg/boot/vmlinuz-$KVER ]] || die "no vmlinuz-$KVER in $PKG"
MODSRC=$WORK/kpkg/lib/modules/$KVER
# busybox depmod writes a transitive modules.dep ("mod.ko: dep.ko dep2.ko ...").
"$BUSYBOX" depmod -b "$WORK/kpkg" "$KVER"

# Drivers the guest loads. The cloud kernel has no AHCI (CONFIG_SATA_AHCI unset): a CD-ROM
# must be on IDE (i440fx "pc" machine, ata_piix) or on a virtio-scsi controller.
STORAGE_MODS=(ata_piix sr_mod isofs virtio_pci virtio_scsi virtio_blk sd_mod)
INPUT_MODS=(evdev button)

# ---- common root --------------------------------------------------------------------------
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,sbin,dev,proc,sys,mnt,tmp,run,etc/acpi/PWRF,"lib/modules/$KVER"}
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$ROOT/bin/$applet"
done

needed=()
for m in "${STORAGE_MODS[@]}" "${INPUT_MODS[@]}"; do
    line=$(grep -E "(^|/)${m}\.ko(\.[a-z]+)?:" "$MODSRC/modules.dep") ||
        die "module $m not found in $PKG (built in? check boot/config-$KVER)"
    needed+=("${line%%:*}")
    read -r -a deps <<<"${line#*:}"
    needed+=("${deps[@]}")
done
for rel in $(printf '%s\n' "${needed[@]}" | sort -u); do
    mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$rel")"
    case $rel in
        *.ko.xz) xz -dc "$MODSRC/$rel" >"$ROOT/lib/modules/$KVER/${rel%.xz}" ;;
        *.ko.zst) zstd -qdc "$MODSRC/$rel" >"$ROOT/lib/modules/$KVER/${rel%.zst}" ;;
        *.ko.gz) gzip -dc "$MODSRC/$rel" >"$ROOT/lib/modules/$KVER/${rel%.gz}" ;;
        *) cp "$MODSRC/$rel" "$ROOT/lib/modules/$KVER/$rel" ;;
    esac
done
"$BUSYBOX" depmod -b "$ROOT" "$KVER"

cat >"$ROOT/init" <<'EOF'
#!/bin/sh
# PID 1 of the kvmguest test guest. VARIANT is substituted at build time.
VARIANT=@VARIANT@
PATH=/bin:/sbin
export PATH
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
hostname kvmguest-test
if [ "$VARIANT" = stubborn ]; then
    trap '' TERM INT HUP USR1 USR2 PWR
fi
echo "KVMGUEST-VARIANT $VARIANT"

# Power button: button.ko turns the ACPI event into an input event, evdev exposes it,
# busybox acpid maps KEY_POWER to PWRF/00000080 and runs /etc/acpi/PWRF/00000080.
modprobe evdev
modprobe button
i=0
while ! ls /dev/input/event* >/dev/null 2>&1 && [ $i -lt 50 ]; do usleep 20000; i=$((i+1)); done
acpid -c /etc/acpi -l /dev/null -p /run/acpid.pid

for m in ata_piix virtio_pci virtio_scsi virtio_blk sd_mod sr_mod cdrom isofs; do
    modprobe "$m" 2>/dev/null
done
echo KVMGUEST-GUEST-UP

# CD-ROMs: the drive nodes appear asynchronously once the controller is probed. An
# emulated IDE/SCSI CD-ROM is probed within a second or two; wait up to 5 s for the
# first one, then 1 s more for the others.
n=0; found=0; i=0
while [ $i -lt 50 ]; do
    ls /dev/sr* >/dev/null 2>&1 && break
    usleep 100000; i=$((i+1))
done
[ $i -lt 50 ] && usleep 1000000
for dev in /dev/sr*; do
    [ -b "$dev" ] || continue
    mnt=/mnt/$(basename "$dev")
    mkdir -p "$mnt"
    mount -t iso9660 -o ro "$dev" "$mnt" 2>/dev/null || continue
    found=1
    (cd "$mnt" && find . -type f | sort) >/tmp/cdrom-files
    while IFS= read -r f; do
        f=${f#./}
        echo "KVMGUEST-CDROM-BEGIN $f"
        cat "$mnt/$f"
        [ -s "$mnt/$f" ] && [ -n "$(tail -c 1 "$mnt/$f")" ] && echo
        echo KVMGUEST-CDROM-END
        n=$((n+1))
    done </tmp/cdrom-files
done
if [ $found = 1 ]; then echo "KVMGUEST-CDROM-DONE $n"; else echo KVMGUEST-CDROM-NONE; fi

# Idle forever (PID 1 must never exit: the kernel would panic), reaping orphans.
while :; do
    sleep 3600 &
    wait $!
done
EOF
chmod 0755 "$ROOT/init"

build_variant() {
    local variant=$1 out=$2 tree=$WORK/tree-$1
    rm -rf "$tree"
    cp -a "$ROOT" "$tree"
    sed -i "s/@VARIANT@/$variant/" "$tree/init"
    if [[ $variant == cooperative ]]; then
        printf '#!/bin/sh\necho KVMGUEST-POWER-BUTTON >/dev/console\nsync\npoweroff -f\n' \
            >"$tree/etc/acpi/PWRF/00000080"
    else
        printf '#!/bin/sh\necho KVMGUEST-POWER-BUTTON-IGNORED >/dev/console\n' \
            >"$tree/etc/acpi/PWRF/00000080"
    fi
    chmod 0755 "$tree/etc/acpi/PWRF/00000080"
    (cd "$tree" && find . -print0 | LC_ALL=C sort -z |
        cpio --null -o -H newc --owner=0:0 --quiet) | gzip -9n >"$out.tmp"
    chmod 0644 "$out.tmp"
    mv -f "$out.tmp" "$out"
}

install -m 0644 "$WORK/kpkg/boot/vmlinuz-$KVER" "$OUTDIR/vmlinuz.tmp"
mv -f "$OUTDIR/vmlinuz.tmp" "$OUTDIR/vmlinuz"
build_variant cooperative "$OUTDIR/initrd-cooperative.img"
build_variant stubborn "$OUTDIR/initrd-stubborn.img"
echo "$KVER" >"$OUTDIR/KVER.tmp"
chmod 0644 "$OUTDIR/KVER.tmp"
mv -f "$OUTDIR/KVER.tmp" "$OUTDIR/KVER"
log "built $OUTDIR (kernel $KVER): vmlinuz initrd-cooperative.img initrd-stubborn.img"
