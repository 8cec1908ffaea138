#!/usr/bin/env bash
# Builds a guest initramfs:  build-guest-initramfs.sh [--agent PATH] [--scenario FILE] -o OUT.cpio.gz
#
# OUT is two concatenated cpio.gz segments (the kernel unpacks them in turn):
#   1. the base, cached in $BALLAST_CACHE/images: busybox and its applet links, the
#      kernel modules in load order, /init (resources/guest/init), /bin/result, and
#      /etc/ballast/guest-lib.sh (the helpers every scenario's guest.sh gets);
#   2. this image's own files: /scenario.sh and /bin/ballast-agent, when given.
# So a scenario image costs one small cpio and a file copy.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=resources/lib.sh
. "$here/lib.sh"

agent='' scenario='' out=''
while [ $# -gt 0 ]; do
    case $1 in
    --agent) agent=$2; shift 2 ;;
    --scenario) scenario=$2; shift 2 ;;
    -o) out=$2; shift 2 ;;
    *) die "usage: $0 [--agent PATH] [--scenario FILE] -o OUT.cpio.gz" ;;
    esac
done
[ -n "$out" ] || die "-o OUT.cpio.gz is required"
for f in "$agent" "$scenario"; do [ -z "$f" ] || [ -f "$f" ] || die "no such file: $f"; done

# Guest modules, in load order (busybox insmod resolves no dependencies; the
# chains are the modules' depends= fields, see shared/nested-kvm.md).
MODULES=(
    drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_mmio
    drivers/virtio/virtio_balloon
    drivers/block/virtio_blk
    lib/crc16 fs/mbcache fs/jbd2/jbd2 crypto/crc32c_generic fs/ext4/ext4
    net/vmw_vsock/vsock net/vmw_vsock/vmw_vsock_virtio_transport_common
    net/vmw_vsock/vmw_vsock_virtio_transport
    mm/zsmalloc drivers/block/zram/zram
    drivers/char/virtio_console
    net/core/failover drivers/net/net_failover drivers/net/virtio_net
)

guest_base() {
    local m
    busybox_root "$1"
    for m in "${MODULES[@]}"; do
        copy_module "$m" "$1/lib/modules" || continue # built in
        echo "${m##*/}" >>"$1/etc/ballast/modules"
    done
    install -m 755 "$here/guest/init" "$1/init"
    install -m 755 "$here/guest/result" "$1/bin/result"
    install -m 644 "$here/guest/guest-lib.sh" "$1/etc/ballast/guest-lib.sh"
}

ensure_fetched
key=$(cache_key "${BASH_SOURCE[0]}" "$here/lib.sh" "$here/guest/init" "$here/guest/result" \
    "$here/guest/guest-lib.sh" \
    "$BALLAST_MODULES" "$BALLAST_BUSYBOX")
base=$(cached_image guest-base "$key" guest_base)

top=$(mktemp -d)
trap 'rm -rf "$top"' EXIT
[ -z "$scenario" ] || install -m 755 "$scenario" "$top/scenario.sh"
[ -z "$agent" ] || install -D -m 755 "$agent" "$top/bin/ballast-agent"
append_segment "$base" "$top" "$out"
log "wrote $out"
