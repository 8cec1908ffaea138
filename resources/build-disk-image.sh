#!/usr/bin/env bash
# Builds a raw ext4 disk image from a folder:  build-disk-image.sh DIR OUT.img [SIZE_MIB]
#
# The image holds DIR's contents at its root (`mkfs.ext4 -d`, e2fsprogs from apt,
# installed only if mkfs.ext4 is missing). It is for `ballast run --disk OUT.img`:
# a guest mounts it, or boots from it with root=/dev/vda.
#
#   SIZE_MIB  the image size; by default DIR's size plus a quarter plus 64 MiB, so
#             the guest has room to write and ext4 room for its journal and tables.
#
# No root needed (only to install e2fsprogs): files keep their owners, modes and
# times; the root folder of the image is owned by root. Idempotent: every run builds
# the image afresh next to OUT and renames it over OUT, so OUT is never half-written
# and DIR is never modified. The image is sparse; inode tables and the journal are
# written out at build time so the guest kernel has no lazy initialisation to do
# (no background writes to the image after the first mount).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=resources/lib.sh
. "$here/lib.sh"

usage() { die "usage: $0 DIR OUT.img [SIZE_MIB]"; }
if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
dir=$1 out=$2 size_mib=${3:-}
[ -d "$dir" ] || die "not a folder: $dir"
[ -z "$size_mib" ] || [[ "$size_mib" =~ ^[1-9][0-9]*$ ]] || die "SIZE_MIB must be a whole number of MiB, not '$size_mib'"

# mkfs.ext4 and debugfs live in /sbin, which a user's PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"
command -v mkfs.ext4 >/dev/null || ensure_apt e2fsprogs
command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 is still missing after installing e2fsprogs"

# What DIR needs: its blocks (du counts each file's 4 KiB-rounded blocks, as ext4
# stores them) and an inode per entry.
data_kib=$(du -s --block-size=1K "$dir" | cut -f1)
entries=$(find "$dir" -mindepth 1 | wc -l)
need_mib=$(( (data_kib + 1023) / 1024 ))
if [ -z "$size_mib" ]; then
    size_mib=$(( need_mib + need_mib / 4 + 64 ))
elif [ "$size_mib" -lt "$need_mib" ]; then
    die "$dir holds about $need_mib MiB; an image of $size_mib MiB cannot hold it"
fi

# mke2fs gives one inode per 16 KiB by default; a folder of many small files needs more.
inode_args=()
inodes=$(( entries + entries / 4 + 1024 ))
if [ "$inodes" -gt $(( size_mib * 64 )) ]; then
    inode_args=(-N "$inodes")
fi

mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
# Created here so mke2fs does not announce it; mke2fs sizes it (sparse) to SIZE_MIB.
: >"$tmp"
log "building $out: $size_mib MiB ext4 from $dir ($need_mib MiB in $entries entries)"
# -T default -b 4096: the usual ext4 layout (4 KiB blocks, 256-byte inodes) even for
# images under 512 MiB, which mke2fs would otherwise make with 1 KiB blocks;
# -m 0: no blocks reserved for root (the guest's writers are root anyway);
# -E root_owner: the image's / belongs to root whoever builds it.
if ! mkfs.ext4 -q -F -t ext4 -T default -b 4096 -L ballast-disk -m 0 "${inode_args[@]}" \
    -E lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0 \
    -d "$dir" "$tmp" "${size_mib}M" >&2; then
    die "mkfs.ext4 failed; if it ran out of space, give a larger SIZE_MIB than $size_mib"
fi
mv -f "$tmp" "$out"
trap - EXIT
log "wrote $out"
