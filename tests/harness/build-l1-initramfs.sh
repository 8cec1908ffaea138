#!/usr/bin/env bash
# Builds the initramfs of the L1 test host:  build-l1-initramfs.sh [--payload DIR] -o OUT.cpio.gz
#
# Base segment (cached in $BALLAST_CACHE/images): busybox, the KVM and virtio-blk
# (virtio-pci) module chains of the L1 kernel and its tun module, for the scenarios'
# TAP interfaces (BALLAST_L1_MODULES, see resources/fetch.sh), the guest kernel as /guest/bzImage, /init
# (tests/harness/l1-init), /etc/ballast/{run-one.sh,host-lib.sh}.
# Second segment: the contents of DIR as they are, as run-scenario.sh lays them out:
#   bin/ballast, etc/ballast/{timeout,cmdline},
#   scenarios/N/{initrd.cpio.gz,args[,cmdline,disks,host.sh]}
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
res="$here/../../resources"
# shellcheck source=resources/lib.sh
. "$res/lib.sh"

payload='' out=''
while [ $# -gt 0 ]; do
    case $1 in
    --payload) payload=$2; shift 2 ;;
    -o) out=$2; shift 2 ;;
    *) die "usage: $0 [--payload DIR] -o OUT.cpio.gz" ;;
    esac
done
[ -n "$out" ] || die "-o OUT.cpio.gz is required"

l1_base() {
    local m
    busybox_root "$1"
    for m in virt/lib/irqbypass drivers/crypto/ccp/ccp arch/x86/kvm/kvm arch/x86/kvm/kvm-amd \
        drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
        drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/block/virtio_blk \
        drivers/net/tun; do
        # l1-init loads them in this order; a kernel that has one built in skips it.
        if copy_module "$m" "$1/lib/modules" "$BALLAST_L1_MODULES"; then
            echo "${m##*/}" >>"$1/etc/ballast/l1-modules"
        fi
    done
    install -D -m 644 "$BALLAST_KERNEL" "$1/guest/bzImage"
    install -m 755 "$here/l1-init" "$1/init"
    install -m 755 "$here/run-one.sh" "$1/etc/ballast/run-one.sh"
    install -m 644 "$here/host-lib.sh" "$1/etc/ballast/host-lib.sh"
}

ensure_fetched
key=$(cache_key "${BASH_SOURCE[0]}" "$res/lib.sh" "$here/l1-init" "$here/run-one.sh" "$here/host-lib.sh" \
    "$BALLAST_KERNEL" "$BALLAST_L1_KERNEL" "$BALLAST_BUSYBOX")
base=$(cached_image l1-base "$key" l1_base)
append_segment "$base" "$payload" "$out"
log "wrote $out"
